//! The verifier crate's example API (`verifier/examples/protected-api`), run
//! as a user runs it, against a real auth-jit.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{eventually, free_port, Server};

/// The example binary, next to this test's own (target/debug/examples),
/// brought up to date first: `cargo test --test verifier` alone does not
/// build another package's examples, and a stale one would test old code.
fn example_binary() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "auth-jit-verifier",
                "--example",
                "protected-api",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo build of the example");
        assert!(
            out.status.success(),
            "building protected-api failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let exe = std::env::current_exe().expect("test path");
    let debug = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = debug.join("examples").join("protected-api");
    assert!(
        path.exists(),
        "{} is missing: run `cargo test --workspace --all-targets` (make test does), which builds the verifier's examples",
        path.display()
    );
    path
}

/// The example API, started with its documented settings.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    child: Child,
}

impl Api {
    pub async fn start(issuer: &Server, credentials: Option<(&str, &str)>) -> Api {
        Self::start_with(issuer, credentials, &[]).await
    }

    /// Started with more settings (`PROTECTED_API_TRUST_DOMAIN`, ...).
    pub async fn start_with(
        issuer: &Server,
        credentials: Option<(&str, &str)>,
        extra: &[(&str, String)],
    ) -> Api {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut command = Command::new(example_binary());
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PROTECTED_API_ADDR", &addr)
            .env("AUTH_JIT_URL", &issuer.base)
            .env("PROTECTED_API_AUDIENCE", "orders")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in extra {
            command.env(name, value);
        }
        if let Some((id, secret)) = credentials {
            command
                .env("PROTECTED_API_CLIENT_ID", id)
                .env("PROTECTED_API_CLIENT_SECRET", secret);
        }
        let mut child = command.spawn().expect("spawn protected-api");
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let verbose = std::env::var_os("TEST_LOG").is_some();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if verbose {
                    eprintln!("[protected-api] {line}");
                }
            }
        });
        let api = Api {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("client"),
            child,
        };
        let up = eventually(Duration::from_secs(20), || async {
            api.http
                .get(format!("{}/health", api.base))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(up, "protected-api did not start");
        api
    }

    /// A request with `Authorization: Bearer token`: status, the
    /// `WWW-Authenticate` challenge and the JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> (u16, String, Value) {
        let url = format!("{}{path}", self.base);
        let mut request = match method {
            "POST" => self.http.post(url),
            _ => self.http.get(url),
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, challenge, body)
    }
}

impl Api {
    /// A GET with these headers: status and JSON body.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
