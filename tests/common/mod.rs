//! Test helpers: the real `auth-jit` binary on 127.0.0.1 port 0 in its own
//! data directory, the real CLI to register clients, and a real
//! `redis-server` on a free loopback port. Quiet unless `TEST_LOG=1`.
#![allow(dead_code)] // each test crate uses a different part

use std::io::{BufRead, BufReader};
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub mod example;
pub mod forgeries;

pub const BIN: &str = env!("CARGO_BIN_EXE_auth-jit");

/// The key-encryption key of test fleets (32 bytes, base64): a Redis store
/// needs one, since the key ring lives in Redis.
pub const KEK: &str = "dGVzdC1rZXktZW5jcnlwdGlvbi1rZXktMzItYnl0ZXM=";

/// The fastest rotation the settings allow: a period of 5 s, keys
/// published 2 s ahead, the JWKS cached 1 s, tokens living 2 to 3 s.
pub const FAST_ROTATION: [(&str, &str); 6] = [
    ("AUTH_JIT_KEY_ROTATION_SECS", "5"),
    ("AUTH_JIT_KEY_PUBLISH_SECS", "2"),
    ("AUTH_JIT_JWKS_MAX_AGE_SECS", "1"),
    ("AUTH_JIT_MAX_TTL", "3"),
    ("AUTH_JIT_DEFAULT_TTL", "2"),
    ("AUTH_JIT_LEEWAY", "1"),
];

/// Everything a spawned command needs, and nothing inherited that could
/// change its behaviour (no AUTH_JIT_* from the developer's shell, no .env).
pub fn command(dir: &Path, env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir).env_clear();
    for var in ["PATH", "HOME", "TMPDIR"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd.env("AUTH_JIT_PORT", "0")
        .env("AUTH_JIT_DATA_DIR", dir.join("data"))
        .env("AUTH_JIT_LOG_LEVEL", "info")
        // The 100 ms default is for production; a loaded 2-core CI machine
        // running many servers at once can exceed it (TLS handshakes, fsync).
        // Tests that need a store failure stop the store instead.
        .env("AUTH_JIT_STORE_TIMEOUT_MS", "2000")
        // SIGTERM ends tests' servers: no drain unless a test asks for one.
        .env("AUTH_JIT_DRAIN_SECS", "0")
        // Helpers probe until a new client is picked up (failing until it
        // is): no failure limit unless a test asks for one.
        .env("AUTH_JIT_AUTH_FAILURE_LIMIT", "0")
        .env("AUTH_JIT_AUTH_FAILURE_LIMIT_PER_ADDRESS", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A running auth-jit process.
pub struct Server {
    pub dir: PathBuf,
    pub env: Vec<(&'static str, String)>,
    pub base: String,
    pub http: reqwest::Client,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the binary in `dir` and waits for its "listening" line.
    pub fn start(dir: &Path, env: &[(&'static str, String)]) -> Server {
        let mut child = command(dir, env)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn auth-jit");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            let verbose = std::env::var_os("TEST_LOG").is_some();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if verbose {
                    eprintln!("[auth-jit] {line}");
                }
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    // Text and JSON logs alike: the address ends at the first
                    // character that cannot be part of host:port.
                    let addr: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || ".:[]".contains(*c))
                        .collect();
                    let _ = tx.send(addr);
                }
                sink.lock().expect("logs").push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("auth-jit did not start: {:?}", logs.lock().expect("logs"));
            }
        };
        Server {
            dir: dir.to_path_buf(),
            env: env.to_vec(),
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("http client"),
            child,
            logs,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and returns the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Registers a client with the real CLI, in this server's settings, and
    /// waits until the running server has picked it up (it re-reads the
    /// clients file on change; an authenticated empty verify answers 400
    /// instead of 401 once it has).
    pub fn add_client(&self, id: &str, args: &[&str]) -> String {
        let secret = add_client(&self.dir, &self.env, id, args);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = probe_auth(&self.url("/api/token/verify"), id, &secret);
            if status != 401 {
                return secret;
            }
            assert!(
                Instant::now() < deadline,
                "server never picked up client {id}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// POST JSON with Basic auth; returns status, headers and body.
    pub async fn post(
        &self,
        path: &str,
        auth: Option<(&str, &str)>,
        body: &Value,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.post(self.url(path)).json(body);
        if let Some((id, secret)) = auth {
            req = req.basic_auth(id, Some(secret));
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, headers, body)
    }

    pub async fn get(&self, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
        let resp = self.http.get(self.url(path)).send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.expect("body"))
    }

    /// POST /api/token/revoke as `id`; returns the status.
    pub async fn revoke(&self, id: &str, secret: &str, body: Value) -> u16 {
        self.post("/api/token/revoke", Some((id, secret)), &body)
            .await
            .0
    }

    /// Issues a token; panics unless 200.
    pub async fn issue(&self, id: &str, secret: &str, body: Value) -> String {
        let (status, _, json) = self.post("/api/token", Some((id, secret)), &body).await;
        assert_eq!(status, 200, "issue failed: {json}");
        json["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    pub async fn verify(&self, id: &str, secret: &str, token: &str, aud: &str) -> (u16, Value) {
        let (status, _, json) = self
            .post(
                "/api/token/verify",
                Some((id, secret)),
                &json!({"token": token, "audience": aud}),
            )
            .await;
        (status, json)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `id:secret` authenticates (anything but 401). Runs on its own
/// thread and runtime with its own HTTP client, so it works from sync and
/// async tests alike (a pooled connection must not cross runtimes).
fn probe_auth(url: &str, id: &str, secret: &str) -> u16 {
    let (url, id, secret) = (url.to_owned(), id.to_owned(), secret.to_owned());
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async move {
                reqwest::Client::new()
                    .post(url)
                    .basic_auth(id, Some(secret))
                    .json(&json!({}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            })
    })
    .join()
    .expect("probe thread")
}

/// Registers a `private_key_jwt` client for `ledger` by its public key
/// file; returns the CLI's output (nothing on stdout when it succeeds).
pub fn add_key_client(
    dir: &Path,
    env: &[(&'static str, String)],
    id: &str,
    args: &[&str],
    key_file: &Path,
) -> std::process::Output {
    command(dir, env)
        .args(["client", "add", id, "--audience", "ledger"])
        .args(args)
        .arg("--public-key")
        .arg(key_file)
        .output()
        .expect("run client add")
}

/// Registers a client with the real CLI and returns the secret it printed.
pub fn add_client(dir: &Path, env: &[(&'static str, String)], id: &str, args: &[&str]) -> String {
    let out = command(dir, env)
        .args(["client", "add", id])
        .args(args)
        .output()
        .expect("run client add");
    assert!(
        out.status.success(),
        "client add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "stdout must be the secret alone: {stdout:?}"
    );
    lines[0].to_owned()
}

/// A billing client (issues to `ledger`) and a ledger client (receives).
pub struct Pair {
    pub billing: String,
    pub ledger: String,
}

pub fn register_pair(server: &Server) -> Pair {
    Pair {
        billing: server.add_client(
            "billing",
            &[
                "--audience",
                "ledger",
                "--scope",
                "read",
                "write",
                "--max-ttl",
                "300",
            ],
        ),
        ledger: server.add_client("ledger", &["--audience", "audit"]),
    }
}

/// Polls `check` until it is true or `limit` passes (for the clients-file
/// watcher, which is asynchronous by design).
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A real redis-server on a free loopback port, with an append-only file so
/// a restart keeps its data. Stopped on drop.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Directory with srv.pem, srv.key and ca.pem: serve TLS only.
    tls: Option<PathBuf>,
}

impl Redis {
    pub fn start() -> Redis {
        Self::launch(None)
    }

    /// A TLS-only server with the certificate and key in `pki`.
    pub fn start_tls(pki: &Path) -> Redis {
        Self::launch(Some(pki.to_path_buf()))
    }

    fn launch(tls: Option<PathBuf>) -> Redis {
        let mut redis = Redis {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            tls,
        };
        redis.resume();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Where the server keeps its append-only file: every write it ever
    /// took, verbatim.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// (Re)starts the server on the same port and data directory.
    pub fn resume(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
        .arg("--dir")
        .arg(self.dir.path());
        match &self.tls {
            None => {
                cmd.args(["--port", &self.port.to_string()]);
            }
            Some(pki) => {
                cmd.args([
                    "--port",
                    "0",
                    "--tls-port",
                    &self.port.to_string(),
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(pki.join("srv.pem"))
                .arg("--tls-key-file")
                .arg(pki.join("srv.key"))
                .arg("--tls-ca-cert-file")
                .arg(pki.join("ca.pem"));
            }
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed: run `make test`, which installs it");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let up = |port| match self.tls {
            None => ping(port),
            Some(_) => std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        };
        while !up(self.port) {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// The Python with PyJWT that `make test` prepares.
pub fn python() -> PathBuf {
    let path = std::env::var_os("AUTH_JIT_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/python"));
    assert!(
        path.exists(),
        "no Python test environment at {}: run `make test` (it creates it)",
        path.display()
    );
    path
}

/// Decodes the payload of a JWT without checking it (to inspect claims).
pub fn payload(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json")
}

pub fn header(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').next().expect("header");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json")
}

/// Runs a Python interop script from `tests/interop` with the test venv;
/// returns whether it exited 0 and the JSON it printed.
pub fn interop(script: &str, args: &[&str]) -> (bool, Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(script);
    let python = python();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    // The scripts block on HTTP: keep them off the async runtime's threads.
    let out = std::thread::spawn(move || {
        Command::new(python)
            .arg(path)
            .args(args)
            .output()
            .expect("run python")
    })
    .join()
    .expect("python thread");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(stdout.trim()).unwrap_or_else(
        |_| json!({"unparsed_stdout": stdout, "stderr": String::from_utf8_lossy(&out.stderr)}),
    );
    (out.status.success(), json)
}

/// Runs the node `jose` verifier (`tests/interop/node`, installed by `make
/// test`); returns whether it verified and the JSON it printed.
pub fn jose(args: &[&str]) -> (bool, Value) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/node");
    assert!(
        dir.join("node_modules/jose").is_dir(),
        "node jose missing: run `make test` (it installs it)"
    );
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = std::thread::spawn(move || {
        Command::new("node")
            .arg(dir.join("verify_jose.mjs"))
            .args(args)
            .output()
            .expect("run node")
    })
    .join()
    .expect("node thread");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(stdout.trim()).unwrap_or_else(
        |_| json!({"unparsed_stdout": stdout, "stderr": String::from_utf8_lossy(&out.stderr)}),
    );
    (out.status.success(), json)
}

/// Starts `n` servers at the same moment, each in its own directory under
/// `root` (`root/0`, `root/1`, ...), with the same settings.
pub fn start_many(root: &Path, n: usize, env: &[(&'static str, String)]) -> Vec<Server> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let dir = root.join(i.to_string());
                std::fs::create_dir_all(&dir).expect("instance dir");
                scope.spawn(move || Server::start(&dir, env))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("server thread"))
            .collect()
    })
}

/// Issues 30 tokens as `id` (a client registered with `--rate-limit 5`),
/// round-robin over `servers`, and checks that the fleet together allows
/// 5 per second: per-instance limits would allow that on every instance.
pub async fn assert_rate_limit_is_shared(servers: &[&Server], id: &str, secret: &str, aud: &str) {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_secs()
    };
    let mut seconds = std::collections::BTreeSet::new();
    let (mut ok, mut limited) = (0, 0);
    for i in 0..30 {
        seconds.insert(now());
        let (status, headers, _) = servers[i % servers.len()]
            .post("/api/token", Some((id, secret)), &json!({"audience": aud}))
            .await;
        seconds.insert(now());
        match status {
            200 => ok += 1,
            429 => {
                limited += 1;
                assert!(headers.contains_key("retry-after"));
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        ok <= 5 * seconds.len(),
        "{ok} issued over {} s",
        seconds.len()
    );
    assert!(ok >= 5 && limited > 0, "ok {ok}, limited {limited}");
}
