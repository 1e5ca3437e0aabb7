//! Telemetry set-up, in one place:
//!
//! - logs: `EnvFilter` from `AUTH_JIT_LOG_LEVEL` (or `RUST_LOG`), text or
//!   JSON lines on stderr (stdout is reserved for command output);
//! - audit: events on the `audit` target, also appended as JSON lines to
//!   `AUTH_JIT_AUDIT_LOG_FILE` when set;
//! - traces: with `AUTH_JIT_OTLP_ENDPOINT`, spans go over OTLP (gRPC by
//!   default, HTTP/protobuf with `AUTH_JIT_OTLP_PROTOCOL=http`), and an
//!   incoming W3C `traceparent` is honoured.
//!
//! Nothing here records a token, a secret or an Authorization header: spans
//! carry route, method, status, client id, audience and outcome only.

use std::fs::OpenOptions;
use std::io::IsTerminal;

use opentelemetry::propagation::{Extractor, TextMapCompositePropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::settings::{LogFormat, OtlpProtocol, Settings};

/// The tracing target of audit events.
pub const AUDIT: &str = "audit";

/// The target of the per-request `answered` event: logged with `debug`
/// logging, never exported (a span already carries its status and time).
pub const ACCESS: &str = "auth_jit::access";

/// Keeps telemetry alive; dropping it flushes and stops the span exporter.
pub struct Guard {
    provider: Option<SdkTracerProvider>,
    /// Flushes the audit file writer when dropped.
    _audit: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Audit lines dropped because the file writer fell behind.
static AUDIT_DROPS: std::sync::OnceLock<tracing_appender::non_blocking::ErrorCounter> =
    std::sync::OnceLock::new();

/// How many audit events the file writer dropped since start.
pub fn audit_dropped() -> u64 {
    AUDIT_DROPS.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Audit lines the file writer holds at most before it drops new ones:
/// a slow disk never blocks a request.
const AUDIT_QUEUE: usize = 16_384;

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("otlp", &self.provider.is_some())
            .finish()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Flush what the batch processor still holds, then stop it.
            if let Err(e) = provider.force_flush() {
                eprintln!("auth-jit: flushing spans failed: {e}");
            }
            if let Err(e) = provider.shutdown() {
                eprintln!("auth-jit: stopping the span exporter failed: {e}");
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("AUTH_JIT_OTLP_ENDPOINT: {0}")]
    Otlp(String),
    #[error("AUTH_JIT_AUDIT_LOG_FILE: cannot open {path}: {source}")]
    AuditFile {
        path: String,
        source: std::io::Error,
    },
}

/// Installs the global subscriber. A second call (tests) keeps the first.
pub fn init(settings: &Settings) -> Result<Guard, TelemetryError> {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(&settings.log_level));
    let ansi = std::io::stderr().is_terminal();
    let logs = match settings.log_format() {
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let mut audit_guard = None;
    let audit = match &settings.audit_log_file {
        Some(path) => {
            let mut options = OpenOptions::new();
            options.create(true).append(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let file = options
                .open(path)
                .map_err(|source| TelemetryError::AuditFile {
                    path: path.display().to_string(),
                    source,
                })?;
            // An audit file made by someone else keeps its mode only if we
            // may not change it; ours is private.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
            }
            // Written by a worker thread through a bounded queue, off the
            // request path; a full queue drops the line and counts it.
            let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .lossy(true)
                .buffered_lines_limit(AUDIT_QUEUE)
                .thread_name("auth-jit-audit")
                .finish(file);
            let _ = AUDIT_DROPS.set(writer.error_counter());
            audit_guard = Some(guard);
            Some(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(writer)
                    // Audit events, plus the request spans they happen in
                    // (for the request id).
                    .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                        meta.target() == AUDIT || (meta.is_span() && meta.name() == "request")
                    })),
            )
        }
        None => None,
    };
    let (otel, provider) = if settings.otlp_endpoint.is_empty() {
        (None, None)
    } else {
        let provider = tracer_provider(settings)?;
        opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
        ]));
        let tracer = provider.tracer("auth-jit");
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(
                Targets::new()
                    .with_target("auth_jit", Level::DEBUG)
                    .with_target(ACCESS, Level::INFO)
                    .with_target(AUDIT, Level::INFO)
                    .with_default(Level::WARN),
            );
        (Some(layer), Some(provider))
    };
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(audit)
        .with(otel)
        .try_init();
    Ok(Guard {
        provider,
        _audit: audit_guard,
    })
}

fn tracer_provider(settings: &Settings) -> Result<SdkTracerProvider, TelemetryError> {
    let endpoint = settings.otlp_endpoint.trim_end_matches('/');
    let exporter = match settings.otlp_protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build(),
        OtlpProtocol::Http => {
            // A bare collector address gets the standard traces path.
            let url = if endpoint.ends_with("/v1/traces") {
                endpoint.to_owned()
            } else {
                format!("{endpoint}/v1/traces")
            };
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(url)
                .with_headers(Default::default())
                .build()
        }
    }
    .map_err(|e| TelemetryError::Otlp(e.to_string()))?;
    let resource = Resource::builder()
        .with_service_name("auth-jit")
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attribute(KeyValue::new(
            "deployment.environment.name",
            settings.environment.as_str().to_owned(),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Reads W3C trace context from request headers.
pub struct HeaderExtractor<'a>(pub &'a axum::http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The remote parent of a request, if it sent `traceparent`.
pub fn remote_context(headers: &axum::http::HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}
