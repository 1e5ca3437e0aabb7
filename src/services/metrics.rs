//! Prometheus metrics: the recorder and the names we record.
//!
//! Label values are bounded: client ids and audiences come from the clients
//! file (an audience a client is not registered for is labelled `other`),
//! reasons and outcomes from fixed lists, routes from route patterns.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const TOKENS_ISSUED: &str = "auth_jit_tokens_issued_total";
pub const TOKENS_DENIED: &str = "auth_jit_tokens_denied_total";
pub const VERIFICATIONS: &str = "auth_jit_verifications_total";
pub const CLIENT_AUTH_FAILURES: &str = "auth_jit_client_auth_failures_total";
pub const REVOCATIONS: &str = "auth_jit_revocations_total";
pub const HTTP_DURATION: &str = "auth_jit_http_request_duration_seconds";
pub const STORE_DURATION: &str = "auth_jit_store_call_duration_seconds";
pub const STORE_ERRORS: &str = "auth_jit_store_errors_total";
pub const KEY_AGE: &str = "auth_jit_signing_key_age_seconds";
/// 1 while the last store call succeeded, 0 after a failed one; labelled
/// by backend and mode.
pub const STORE_UP: &str = "auth_jit_store_up";
/// Requests answered 503 at once because the server was at capacity.
pub const SHED: &str = "auth_jit_requests_shed_total";
/// Client authentications answered 429 by the failure limit.
pub const AUTH_THROTTLED: &str = "auth_jit_client_auth_throttled_total";
/// Audit events dropped because the audit file writer fell behind.
pub const AUDIT_DROPPED: &str = "auth_jit_audit_events_dropped_total";

/// The process-wide recorder. The `metrics` facade is global by design, so
/// the handle is too; installing twice (tests) returns the first.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ],
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; ours still renders.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        TOKENS_ISSUED,
        "Tokens issued, by client, audience and grant"
    );
    metrics::describe_counter!(
        TOKENS_DENIED,
        "Token requests refused, by client, audience and reason"
    );
    metrics::describe_counter!(
        VERIFICATIONS,
        "Token verifications and introspections, by outcome"
    );
    metrics::describe_counter!(
        CLIENT_AUTH_FAILURES,
        "Failed client authentications, by method"
    );
    metrics::describe_counter!(
        REVOCATIONS,
        "Revocation requests, by how the token was named"
    );
    metrics::describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "HTTP request duration, by method, route and status"
    );
    metrics::describe_histogram!(
        STORE_DURATION,
        metrics::Unit::Seconds,
        "State store call duration, by operation and backend"
    );
    metrics::describe_counter!(
        STORE_ERRORS,
        "State store calls that failed or timed out, by operation and backend"
    );
    metrics::describe_gauge!(
        STORE_UP,
        "1 while the last store call succeeded, 0 after a failed one (by backend and mode)"
    );
    metrics::describe_gauge!(
        KEY_AGE,
        metrics::Unit::Seconds,
        "Age of the active signing key"
    );
}

/// An audience as a label: itself if `allowed`, else `other`.
pub fn audience_label(audience: &str, allowed: bool) -> String {
    if allowed {
        audience.to_owned()
    } else {
        "other".to_owned()
    }
}

/// Adds `by` to the counter `name` with these labels.
///
/// Handles are looked up in the registry once per worker thread and label
/// set, then kept: a sample costs one hash of a short key built in a
/// reused buffer, with no allocation and no lock (the registry's lookup
/// allocates the labels and takes a lock shared by both cores). Label
/// values are bounded (see the module docs), so the cache is as small as
/// the label set.
pub fn count(name: &'static str, labels: &[(&'static str, &str)], by: u64) {
    HANDLES.with_borrow_mut(|handles| {
        let Handles { key, counters, .. } = handles;
        handle(key, counters, name, labels, |labels| {
            metrics::counter!(name, labels)
        })
        .increment(by);
    });
}

/// Records `value` in the histogram `name` with these labels; cached like
/// [`count`].
pub fn record(name: &'static str, labels: &[(&'static str, &str)], value: f64) {
    HANDLES.with_borrow_mut(|handles| {
        let Handles {
            key, histograms, ..
        } = handles;
        handle(key, histograms, name, labels, |labels| {
            metrics::histogram!(name, labels)
        })
        .record(value);
    });
}

/// Sets the gauge `name` with these labels; cached like [`count`].
pub fn set(name: &'static str, labels: &[(&'static str, &str)], value: f64) {
    HANDLES.with_borrow_mut(|handles| {
        let Handles { key, gauges, .. } = handles;
        handle(key, gauges, name, labels, |labels| {
            metrics::gauge!(name, labels)
        })
        .set(value);
    });
}

/// Request duration by method, route pattern and status.
pub fn http_duration(
    route: &str,
    method: &'static str,
    status: axum::http::StatusCode,
    elapsed: std::time::Duration,
) {
    record(
        HTTP_DURATION,
        &[
            ("method", method),
            ("route", route),
            ("status", status.as_str()),
        ],
        elapsed.as_secs_f64(),
    );
}

#[derive(Default)]
struct Handles {
    /// The lookup key of the current sample, reused.
    key: String,
    counters: HandleMap<metrics::Counter>,
    histograms: HandleMap<metrics::Histogram>,
    gauges: HandleMap<metrics::Gauge>,
}

/// Handles by sample key. foldhash, not SipHash: the keys are our metric
/// names and registered label values, and this runs on every request.
type HandleMap<H> = std::collections::HashMap<String, H, foldhash::fast::RandomState>;

thread_local! {
    static HANDLES: std::cell::RefCell<Handles> = std::cell::RefCell::default();
}

fn handle<'a, H>(
    key: &mut String,
    cache: &'a mut HandleMap<H>,
    name: &'static str,
    labels: &[(&'static str, &str)],
    register: impl FnOnce(Vec<metrics::Label>) -> H,
) -> &'a H {
    key.clear();
    key.push_str(name);
    for (label, value) in labels {
        // Length-prefixed: no two label sets give the same key.
        key.push('|');
        key.push_str(label);
        key.push('=');
        push_decimal(key, value.len());
        key.push(':');
        key.push_str(value);
    }
    if !cache.contains_key(key.as_str()) {
        let labels = labels
            .iter()
            .map(|(label, value)| metrics::Label::new(*label, (*value).to_owned()))
            .collect();
        cache.insert(key.clone(), register(labels));
    }
    &cache[key.as_str()]
}

/// `n` in decimal, without the formatting machinery.
fn push_decimal(key: &mut String, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        // n % 10 < 10: the cast cannot truncate.
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &digit in &digits[start..] {
        key.push(char::from(digit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(labels: &[(&'static str, &str)]) -> String {
        let mut key = String::new();
        let mut cache = HandleMap::default();
        handle(&mut key, &mut cache, "m", labels, |_| ());
        key
    }

    #[test]
    fn sample_keys_are_length_prefixed_and_never_collide() {
        assert_eq!(key_of(&[("a", "xy")]), "m|a=2:xy");
        assert_eq!(key_of(&[("a", "")]), "m|a=0:");
        assert_eq!(
            key_of(&[("a", &"z".repeat(1234))]),
            format!("m|a=1234:{}", "z".repeat(1234))
        );
        // A value that looks like the next label does not merge with it.
        assert_ne!(
            key_of(&[("a", "x|b=1:y")]),
            key_of(&[("a", "x"), ("b", "y")])
        );
    }

    #[test]
    fn one_handle_per_label_set() {
        let mut key = String::new();
        let mut cache = HandleMap::default();
        let mut registered = 0;
        for value in ["x", "y", "x"] {
            handle(&mut key, &mut cache, "m", &[("a", value)], |_| {
                registered += 1;
            });
        }
        assert_eq!(registered, 2);
        assert_eq!(cache.len(), 2);
    }
}
