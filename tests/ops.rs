//! Operations: spans received by a real OTLP receiver (gRPC and HTTP),
//! `/metrics` read by the official Prometheus parser, the audit log file,
//! JSON logs without secrets, request ids, and the Docker files checked
//! statically (there is no Docker engine on our machines).
// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{add_client, interop, Server};
use serde_json::{json, Value};

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_SPAN: &str = "b7ad6b7169203331";

/// The OTLP receiver from `tests/interop/otlp_receiver.py`.
struct Receiver {
    child: Child,
    grpc_port: u64,
    http_port: u64,
    out: PathBuf,
}

impl Receiver {
    fn start(dir: &Path) -> Receiver {
        let out = dir.join("spans.jsonl");
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/otlp_receiver.py"
        );
        let mut child = Command::new(common::python())
            .args([script, "--out"])
            .arg(&out)
            .args(["--max-seconds", "180"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ports line");
        let ports: Value = serde_json::from_str(&line).expect("ports json");
        Receiver {
            child,
            grpc_port: ports["grpc_port"].as_u64().expect("grpc"),
            http_port: ports["http_port"].as_u64().expect("http"),
            out,
        }
    }

    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("span json"))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn traced_requests(s: &Server, billing: &str, ledger: &str) -> String {
    let resp = s
        .http
        .post(s.url("/api/token"))
        .basic_auth("billing", Some(billing))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN}-01"))
        .json(&json!({"audience": "ledger", "scope": "read", "once": true}))
        .send()
        .await
        .expect("issue");
    assert_eq!(resp.status().as_u16(), 200);
    let token = resp.json::<Value>().await.expect("json")["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(s.verify("ledger", ledger, &token, "ledger").await.0, 200);
    assert_eq!(s.verify("ledger", ledger, &token, "ledger").await.0, 401);
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_real_otlp_receiver_over_grpc_and_http() {
    for protocol in ["grpc", "http"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let receiver = Receiver::start(dir.path());
        let port = if protocol == "grpc" {
            receiver.grpc_port
        } else {
            receiver.http_port
        };
        let env = [
            ("AUTH_JIT_OTLP_ENDPOINT", format!("http://127.0.0.1:{port}")),
            ("AUTH_JIT_OTLP_PROTOCOL", protocol.to_string()),
        ];
        let billing = add_client(
            dir.path(),
            &env,
            "billing",
            &["--audience", "ledger", "--scope", "read"],
        );
        let ledger = add_client(dir.path(), &env, "ledger", &["--audience", "x"]);
        let s = Server::start(dir.path(), &env);
        let token = traced_requests(&s, &billing, &ledger).await;
        // Shutdown flushes the batch exporter.
        assert_eq!(s.terminate(), Some(0));
        let spans = receiver.spans();
        assert!(!spans.is_empty(), "{protocol}: no spans received");
        assert!(spans.iter().all(|s| s["transport"] == protocol));

        let issue = spans
            .iter()
            .find(|s| s["name"] == "POST /api/token")
            .unwrap_or_else(|| panic!("{protocol}: no request span: {spans:#?}"));
        assert_eq!(issue["trace_id"], TRACE_ID, "the caller's trace");
        assert_eq!(
            issue["parent_span_id"], PARENT_SPAN,
            "child of the caller's span"
        );
        assert_eq!(issue["kind"], 2, "server span");
        assert_eq!(issue["resource"]["service.name"], "auth-jit");
        assert_eq!(
            issue["resource"]["service.version"],
            env!("CARGO_PKG_VERSION")
        );
        let attrs = &issue["attributes"];
        assert_eq!(attrs["http.route"], "/api/token");
        assert_eq!(attrs["http.request.method"], "POST");
        assert_eq!(attrs["http.response.status_code"], 200);
        assert_eq!(attrs["client_id"], "billing");
        assert_eq!(attrs["aud"], "ledger");
        assert_eq!(attrs["outcome"], "issued");

        let children: Vec<&str> = spans
            .iter()
            .filter(|s| s["trace_id"] == TRACE_ID && s["name"] != "POST /api/token")
            .filter_map(|s| s["name"].as_str())
            .collect();
        for expected in ["token.issue", "token.sign", "store.ping"] {
            assert!(
                children.contains(&expected),
                "{protocol}: no {expected} span in {children:?}"
            );
        }
        let verify_spans: Vec<&Value> = spans
            .iter()
            .filter(|s| s["name"] == "POST /api/token/verify")
            .collect();
        assert_eq!(verify_spans.len(), 2);
        let outcomes: Vec<&Value> = verify_spans
            .iter()
            .map(|s| &s["attributes"]["outcome"])
            .collect();
        assert!(
            outcomes.contains(&&json!("active")) && outcomes.contains(&&json!("inactive")),
            "{outcomes:?}"
        );
        assert!(spans.iter().any(|s| s["name"] == "store.check"));

        // Nothing secret in any span.
        let all = std::fs::read_to_string(&receiver.out).expect("spans");
        for secret in [token.as_str(), billing.as_str(), ledger.as_str()] {
            assert!(
                !all.contains(secret),
                "{protocol}: a secret or token reached the spans"
            );
        }
        assert!(
            !all.to_lowercase().contains("authorization"),
            "headers reached the spans"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_with_the_prometheus_parser() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = {
        let s = Server::start(dir.path(), &[]);
        let c = common::register_pair(&s);
        // Activity of every kind.
        let token = s
            .issue("billing", &c.billing, json!({"audience": "ledger"}))
            .await;
        assert_eq!(s.verify("ledger", &c.ledger, &token, "ledger").await.0, 200);
        assert_eq!(
            s.verify("ledger", &c.ledger, "garbage", "ledger").await.0,
            401
        );
        let (status, _, _) = s
            .post(
                "/api/token",
                Some(("billing", &c.billing)),
                &json!({"audience": "attacker-chosen-name"}),
            )
            .await;
        assert_eq!(status, 400);
        let (status, _, _) = s
            .post(
                "/api/token",
                Some(("billing", "wrong")),
                &json!({"audience": "ledger"}),
            )
            .await;
        assert_eq!(status, 401);

        let (ok, out) = interop("parse_metrics.py", &[&s.url("/metrics")]);
        assert!(ok, "the Prometheus parser refused /metrics: {out}");
        assert!(out["content_type"]
            .as_str()
            .expect("ct")
            .starts_with("text/plain"));
        let f = &out["families"];
        let sample = |family: &str, labels: Value| -> Option<f64> {
            f[family]["samples"].as_array()?.iter().find_map(|s| {
                let l = &s[1];
                let matches = labels.as_object()?.iter().all(|(k, v)| &l[k] == v);
                matches.then(|| s[2].as_f64()).flatten()
            })
        };
        assert_eq!(f["auth_jit_tokens_issued"]["type"], "counter", "{f}");
        assert_eq!(
            sample(
                "auth_jit_tokens_issued",
                json!({"client": "billing", "audience": "ledger", "grant": "jit"})
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                "auth_jit_tokens_denied",
                json!({"client": "billing", "audience": "other", "reason": "invalid_target"})
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                "auth_jit_verifications",
                json!({"via": "verify", "outcome": "active"})
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                "auth_jit_verifications",
                json!({"via": "verify", "outcome": "inactive"})
            ),
            Some(1.0)
        );
        // At least the wrong secret above (the test harness's own probes
        // while the server loads new clients count too).
        assert!(
            sample(
                "auth_jit_client_auth_failures",
                json!({"method": "client_secret_basic"})
            ) >= Some(1.0)
        );
        assert_eq!(
            f["auth_jit_http_request_duration_seconds"]["type"],
            "histogram"
        );
        assert!(sample(
            "auth_jit_http_request_duration_seconds",
            json!({"route": "/api/token/verify", "status": "200"})
        )
        .is_some());
        assert!(sample(
            "auth_jit_store_call_duration_seconds",
            json!({"op": "check", "backend": "embedded"})
        )
        .is_some());
        assert_eq!(f["auth_jit_signing_key_age_seconds"]["type"], "gauge");
        // Bounded labels: no raw attacker strings, no token ids.
        let text = out.to_string();
        assert!(!text.contains("attacker-chosen-name"));
        assert!(!text.contains(
            &common::payload(&token)["jti"]
                .as_str()
                .expect("jti")
                .to_string()
        ));
        c
    };
    drop(c);
}

#[tokio::test]
async fn audit_file_json_logs_and_request_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit.jsonl");
    let env = [
        ("AUTH_JIT_AUDIT_LOG_FILE", audit.display().to_string()),
        ("AUTH_JIT_LOG_FORMAT", "json".to_string()),
    ];
    let s = Server::start(dir.path(), &env);
    let c = common::register_pair(&s);
    let resp = s
        .http
        .post(s.url("/api/token"))
        .basic_auth("billing", Some(&c.billing))
        .header("x-request-id", "req-from-caller-42")
        .json(&json!({"audience": "ledger"}))
        .send()
        .await
        .expect("issue");
    assert_eq!(
        resp.headers()["x-request-id"],
        "req-from-caller-42",
        "accepted and returned"
    );
    let token = resp.json::<Value>().await.expect("json")["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let (_, generated, _) = s.get("/api/health").await;
    let id = generated["x-request-id"].as_bytes();
    assert!(
        id.len() == 32
            && id
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)),
        "generated when absent: 128 random bits in lowercase hex, got {id:?}"
    );
    s.post(
        "/api/token",
        Some(("billing", &c.billing)),
        &json!({"audience": "payroll"}),
    )
    .await;
    s.post(
        "/api/token",
        Some(("billing", "wrong-secret")),
        &json!({"audience": "ledger"}),
    )
    .await;
    s.verify("ledger", &c.ledger, "garbage", "ledger").await;
    s.verify("ledger", &c.ledger, &token, "ledger").await;
    s.post(
        "/api/token/revoke",
        Some(("billing", &c.billing)),
        &json!({"token": token}),
    )
    .await;
    let logs = s.logs();
    assert_eq!(s.terminate(), Some(0));

    let lines: Vec<Value> = std::fs::read_to_string(&audit)
        .expect("audit file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect();
    let events: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["fields"]["event"].as_str())
        .collect();
    for expected in [
        "key_created",
        "token_issued",
        "token_denied",
        "client_auth_failed",
        "verification_failed",
        "token_verified",
        "token_revoked",
    ] {
        assert!(events.contains(&expected), "no {expected} in {events:?}");
    }
    let issued = lines
        .iter()
        .find(|l| l["fields"]["event"] == "token_issued")
        .expect("issued");
    assert_eq!(issued["fields"]["client_id"], "billing");
    assert_eq!(issued["fields"]["aud"], "ledger");
    assert_eq!(issued["fields"]["jti"], common::payload(&token)["jti"]);
    assert_eq!(issued["span"]["request_id"], "req-from-caller-42");
    let denied = lines
        .iter()
        .find(|l| l["fields"]["event"] == "token_denied")
        .expect("denied");
    assert_eq!(denied["fields"]["reason"], "invalid_target");

    let audit_text = std::fs::read_to_string(&audit).expect("audit");
    for line in &logs {
        serde_json::from_str::<Value>(line)
            .unwrap_or_else(|_| panic!("log line is not JSON: {line}"));
    }
    for secret in [&token, &c.billing, &c.ledger, &"wrong-secret".to_string()] {
        assert!(
            !audit_text.contains(secret.as_str()),
            "secret or token in the audit file"
        );
        assert!(
            logs.iter().all(|l| !l.contains(secret.as_str())),
            "secret or token in the logs"
        );
    }
}

#[test]
fn docker_files_pass_the_static_checks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = common::command(dir.path(), &[])
        .arg("settings")
        .output()
        .expect("settings");
    assert!(settings.status.success());
    let settings_file = dir.path().join("settings.txt");
    std::fs::write(&settings_file, &settings.stdout).expect("write");
    let repo = env!("CARGO_MANIFEST_DIR");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/static/check_docker.py");
    for extra in [None, Some("--self-test")] {
        let mut cmd = Command::new(common::python());
        cmd.args([script, "--repo", repo, "--settings-file"])
            .arg(&settings_file);
        if let Some(flag) = extra {
            cmd.arg(flag);
        }
        let out = cmd.output().expect("run checker");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "check_docker {extra:?} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(" 0 failed"), "{stdout}");
    }
}

#[test]
fn settings_and_healthcheck_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = common::command(
        dir.path(),
        &[
            (
                "AUTH_JIT_STORE_URL",
                "redis://:hunter2@127.0.0.1:1/0".into(),
            ),
            ("AUTH_JIT_KEY_ENCRYPTION_KEY", common::KEK.into()),
        ],
    )
    .arg("settings")
    .output()
    .expect("settings");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("AUTH_JIT_PORT=0") && text.contains("AUTH_JIT_STORE_URL=[redacted]"),
        "{text}"
    );
    assert!(!text.contains("hunter2"));
    let s = Server::start(dir.path(), &[]);
    let port = s.base.rsplit(':').next().expect("port").to_string();
    let ok = common::command(dir.path(), &[("AUTH_JIT_PORT", port)])
        .arg("healthcheck")
        .output()
        .expect("hc");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    drop(s);
    let free = common::free_port();
    let down = common::command(dir.path(), &[("AUTH_JIT_PORT", free.to_string())])
        .arg("healthcheck")
        .output()
        .expect("hc");
    assert!(!down.status.success());
}
