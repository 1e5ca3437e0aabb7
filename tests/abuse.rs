//! Holding under abuse, on the real binary over real sockets: slow and idle
//! connections, password guessing, and a drain under keep-alive load that
//! loses no request.
// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{register_pair, Redis, Server};
use serde_json::json;

fn addr(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// Peak resident memory of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM")
}

/// Whether the server closed `stream` (a read returns end of stream or an
/// error) before `deadline`.
fn closed_by(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // Hyper may answer a timed-out head with 408 first, then close.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[tokio::test]
async fn slow_request_heads_are_cut_off_and_ordinary_requests_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path(), &[("AUTH_JIT_HEADER_TIMEOUT_SECS", "1".into())]);
    let target = addr(&s);
    let mut slow: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut c = TcpStream::connect(&target).expect("connect");
            c.write_all(b"POST /api/token HTTP/1.1\r\nHost: x\r\nContent-Ty")
                .expect("half a head");
            c
        })
        .collect();
    // Served meanwhile.
    assert_eq!(s.get("/api/health").await.0, 200);
    let deadline = Instant::now() + Duration::from_secs(4);
    let cut = slow
        .iter_mut()
        .map(|c| closed_by(c, deadline))
        .filter(|closed| *closed)
        .count();
    assert_eq!(cut, 100, "every slow head is closed within the timeout");
    // An idle keep-alive connection is closed the same way.
    let mut idle = TcpStream::connect(&target).expect("connect");
    idle.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).expect("response");
    assert!(first.starts_with(b"HTTP/1.1 200"));
    assert!(closed_by(
        &mut idle,
        Instant::now() + Duration::from_secs(4)
    ));
    // Heads over the size limit are refused, not buffered.
    let mut big = TcpStream::connect(&target).expect("connect");
    let head = format!(
        "GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = big.write_all(head.as_bytes());
    let mut answer = Vec::new();
    big.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let _ = big.read_to_end(&mut answer);
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn an_idle_flood_leaves_memory_bounded_and_the_service_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(
        dir.path(),
        &[
            ("AUTH_JIT_MAX_CONNECTIONS", "100".into()),
            ("AUTH_JIT_HEADER_TIMEOUT_SECS", "1".into()),
        ],
    );
    let target = addr(&s);
    assert_eq!(s.get("/api/health").await.0, 200);
    let before = peak_rss_kib(s.pid());
    let flood: Vec<TcpStream> = (0..600)
        .filter_map(|_| TcpStream::connect(&target).ok())
        .collect();
    assert!(flood.len() >= 500, "the kernel queued the flood");
    // Ordinary requests are served once the idle ones time out (on a new
    // connection: the pooled one idled past the timeout and was closed).
    let started = Instant::now();
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client");
    let status = fresh
        .get(s.url("/api/health"))
        .send()
        .await
        .expect("health")
        .status()
        .as_u16();
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(12));
    let grown = peak_rss_kib(s.pid()).saturating_sub(before);
    assert!(
        grown < 20 * 1024,
        "peak RSS grew by {grown} KiB under 600 idle connections with the limit at 100"
    );
    drop(flood);
}

#[tokio::test]
async fn guessing_secrets_is_throttled_per_id_and_per_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(
        dir.path(),
        &[
            ("AUTH_JIT_AUTH_FAILURE_LIMIT", "0".into()),
            ("AUTH_JIT_AUTH_FAILURE_LIMIT_PER_ADDRESS", "0".into()),
        ],
    );
    let c = register_pair(&s);
    drop(s);
    // The same data directory, now with limits: 5 per id, 30 per address.
    let s = Server::start(
        dir.path(),
        &[
            ("AUTH_JIT_AUTH_FAILURE_LIMIT", "5".into()),
            ("AUTH_JIT_AUTH_FAILURE_LIMIT_PER_ADDRESS", "30".into()),
        ],
    );
    let issue = |id: &'static str, secret: String| {
        let s = &s;
        async move {
            s.post(
                "/api/token",
                Some((id, &secret)),
                &json!({"audience": "ledger"}),
            )
            .await
        }
    };
    for id in ["billing", "ghost"] {
        for _ in 0..5 {
            assert_eq!(issue(id, "ajs_wrong".into()).await.0, 401);
        }
        let (status, headers, body) = issue(id, "ajs_wrong".into()).await;
        assert_eq!(status, 429, "{id}: {body}");
        let retry: u64 = headers["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("secs");
        assert!((1..=60).contains(&retry));
        assert_eq!(body["error"], "slow_down");
    }
    // The right secret does not get through a locked id either...
    assert_eq!(issue("billing", c.billing.clone()).await.0, 429);
    // ... and the OAuth endpoint shares the count.
    let form = s
        .http
        .post(s.url("/oauth/token"))
        .basic_auth("billing", Some(&c.billing))
        .form(&[("grant_type", "client_credentials"), ("audience", "ledger")])
        .send()
        .await
        .expect("oauth");
    assert_eq!(form.status().as_u16(), 429);
    // Another client is not affected: it authenticates, only its made-up
    // token is refused.
    let (status, body) = s.verify("ledger", &c.ledger, "x", "ledger").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token"))
    );
    // Failures from one address across many ids lock the address.
    for i in 0..30 {
        let _ = issue_any(&s, &format!("guess-{i}")).await;
    }
    let (status, _) = s.verify("ledger", &c.ledger, "x", "ledger").await;
    assert_eq!(status, 429, "the guessing address is throttled");
}

async fn issue_any(s: &Server, id: &str) -> u16 {
    s.post(
        "/api/token",
        Some((id, "ajs_wrong")),
        &json!({"audience": "ledger"}),
    )
    .await
    .0
}

#[tokio::test]
async fn failure_counts_are_shared_by_the_fleet() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let shared = dir.path().join("clients.toml").display().to_string();
    let base = vec![
        ("AUTH_JIT_STORE_URL", redis.url()),
        ("AUTH_JIT_KEY_ENCRYPTION_KEY", common::KEK.to_string()),
        ("AUTH_JIT_CLIENTS_FILE", shared),
    ];
    let mut env = base.clone();
    env.push(("AUTH_JIT_AUTH_FAILURE_LIMIT", "4".into()));
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&dir_a).expect("a");
    std::fs::create_dir_all(&dir_b).expect("b");
    let a = Server::start(&dir_a, &env);
    let b = Server::start(&dir_b, &env);
    for _ in 0..2 {
        assert_eq!(issue_any(&a, "billing").await, 401);
        assert_eq!(issue_any(&b, "billing").await, 401);
    }
    assert_eq!(issue_any(&a, "billing").await, 429);
    assert_eq!(issue_any(&b, "billing").await, 429);
}

#[tokio::test]
async fn sigterm_under_keep_alive_load_loses_no_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(
        dir.path(),
        &[
            ("AUTH_JIT_DRAIN_SECS", "2".into()),
            ("AUTH_JIT_RATE_LIMIT", "0".into()),
        ],
    );
    let c = register_pair(&s);
    let url = s.url("/api/token");
    let ready_url = s.url("/api/ready");
    // The load balancer's view: it stops sending once readiness fails.
    let routed = Arc::new(AtomicBool::new(true));
    let (sent, answered, closes) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut clients = Vec::new();
    for _ in 0..32 {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let (url, secret) = (url.clone(), c.billing.clone());
        let (routed, sent, answered, closes) = (
            routed.clone(),
            sent.clone(),
            answered.clone(),
            closes.clone(),
        );
        clients.push(tokio::spawn(async move {
            while routed.load(Ordering::SeqCst) {
                sent.fetch_add(1, Ordering::SeqCst);
                let result = http
                    .post(&url)
                    .basic_auth("billing", Some(&secret))
                    .json(&json!({"audience": "ledger"}))
                    .send()
                    .await;
                if let Ok(response) = result {
                    if response
                        .headers()
                        .get("connection")
                        .is_some_and(|v| v == "close")
                    {
                        closes.fetch_add(1, Ordering::SeqCst);
                    }
                    if response.status().as_u16() == 200 {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    let balancer = {
        let routed = routed.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let ok = http
                    .get(&ready_url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 200);
                if !ok {
                    routed.store(false, Ordering::SeqCst);
                    return;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let pid = s.pid();
    let terminated = tokio::task::spawn_blocking(move || s.terminate());
    balancer.await.expect("balancer");
    for client in clients {
        client.await.expect("client");
    }
    assert_eq!(terminated.await.expect("terminate"), Some(0), "pid {pid}");
    let (sent, answered) = (sent.load(Ordering::SeqCst), answered.load(Ordering::SeqCst));
    assert!(sent > 50, "load was applied: {sent}");
    eprintln!("drain: {sent} requests sent, {answered} answered with 200");
    assert_eq!(sent, answered, "requests sent but not answered with 200");
    assert!(
        closes.load(Ordering::SeqCst) > 0,
        "responses during the drain ask to close the connection"
    );
}
