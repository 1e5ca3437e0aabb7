//! The Redis that operators run: a Redis Cluster (3 primaries, 3
//! replicas) and a primary with a replica behind three sentinels, all real
//! `redis-server` processes on loopback, with three auth-jit instances on
//! separate data directories. Single-use tokens are consumed exactly once,
//! revocations and rate limits are the fleet's, and after a primary is
//! killed and its replica promoted every instance answers again by itself,
//! without ever accepting a consumed or revoked token.
// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{add_client, eventually, free_port, payload, start_many, Server};
use serde_json::{json, Value};

/// `redis-cli -p PORT ARGS...`, its output.
fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli is installed with redis-server");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What every data node of these tests runs with: no snapshot delay before
/// a replica's first sync, an append-only file, no RDB snapshots.
const DATA_NODE: [&str; 6] = [
    "--repl-diskless-sync-delay",
    "0",
    "--save",
    "",
    "--appendonly",
    "yes",
];

/// One `redis-server` process; killed when dropped.
struct Node {
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl Node {
    fn start(dir: &Path, port: u16, args: &[String]) -> Node {
        let dir = dir.join(port.to_string());
        std::fs::create_dir_all(&dir).expect("node dir");
        let mut node = Node {
            port,
            dir,
            args: args.to_vec(),
            child: None,
        };
        node.resume();
        node
    }

    fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed: run `make test`");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while cli(self.port, &["PING"]).trim() != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The nodes as `AUTH_JIT_STORE_URL` lists them.
fn urls(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("redis://127.0.0.1:{}", n.port))
        .collect::<Vec<_>>()
        .join(",")
}

/// A Redis Cluster of 3 primaries and 3 replicas.
struct Cluster {
    _dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes: Vec<Node> = (0..6)
            .map(|_| {
                let port = free_port();
                let cluster = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                ];
                let args: Vec<String> = DATA_NODE
                    .iter()
                    .chain(&cluster)
                    .map(|s| (*s).to_owned())
                    .collect();
                Node::start(dir.path(), port, &args)
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Cluster { _dir: dir, nodes };
        cluster.wait_ok(Duration::from_secs(20));
        cluster
    }

    fn urls(&self) -> String {
        urls(&self.nodes)
    }

    fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.child.is_some())
    }

    /// Every live node sees the cluster as ok, with three primaries up,
    /// and every live replica is in sync with its primary.
    fn wait_ok(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let ok = self.live().all(|n| {
                let replication = cli(n.port, &["INFO", "replication"]);
                cli(n.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
                    && self.primaries(n.port).len() == 3
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"))
            });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "cluster not ok in {limit:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Live primaries as one node sees them: (port, slot ranges).
    fn primaries(&self, asking: u16) -> Vec<(u16, Vec<(u16, u16)>)> {
        cli(asking, &["CLUSTER", "NODES"])
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let flags = fields.get(2)?;
                if !flags.contains("master") || flags.contains("fail") {
                    return None;
                }
                let port = fields
                    .get(1)?
                    .split('@')
                    .next()?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()?;
                let ranges = fields[8..]
                    .iter()
                    .filter_map(|r| {
                        let (a, b) = r.split_once('-').unwrap_or((r, r));
                        Some((a.parse().ok()?, b.parse().ok()?))
                    })
                    .collect();
                Some((port, ranges))
            })
            .collect()
    }

    /// The port of the primary that holds the slot of hash tag `tag`.
    fn primary_of(&self, tag: &str) -> u16 {
        let asking = self.live().next().expect("a live node").port;
        let slot: u16 = cli(asking, &["CLUSTER", "KEYSLOT", tag])
            .trim()
            .parse()
            .expect("slot");
        self.primaries(asking)
            .into_iter()
            .find(|(_, ranges)| ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .map(|(port, _)| port)
            .expect("a primary holds the slot")
    }

    fn node(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("node")
    }
}

/// One primary, one replica and three sentinels watching them.
struct Sentinels {
    _dir: tempfile::TempDir,
    primary: Node,
    replica: Node,
    sentinels: Vec<Node>,
}

const MASTER: &str = "authjit";

impl Sentinels {
    fn start() -> Sentinels {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = DATA_NODE.map(str::to_owned);
        let primary = Node::start(dir.path(), free_port(), &data);
        let mut args = data.to_vec();
        args.extend([
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            primary.port.to_string(),
        ]);
        let replica = Node::start(dir.path(), free_port(), &args);
        let sentinels = (0..3)
            .map(|i| {
                let conf = dir.path().join(format!("sentinel-{i}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "sentinel monitor {MASTER} 127.0.0.1 {} 2\n\
                         sentinel down-after-milliseconds {MASTER} 1000\n\
                         sentinel failover-timeout {MASTER} 5000\n\
                         sentinel parallel-syncs {MASTER} 1\n",
                        primary.port
                    ),
                )
                .expect("sentinel.conf");
                Node::start(
                    dir.path(),
                    free_port(),
                    &[conf.display().to_string(), "--sentinel".to_owned()],
                )
            })
            .collect();
        let set = Sentinels {
            _dir: dir,
            primary,
            replica,
            sentinels,
        };
        // Every sentinel knows the replica and the others.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cli(set.replica.port, &["INFO", "replication"]).contains("master_link_status:up")
            || !set.sentinels.iter().all(|s| {
                cli(s.port, &["SENTINEL", "CKQUORUM", MASTER]).starts_with("OK")
                    && cli(s.port, &["SENTINEL", "REPLICAS", MASTER])
                        .contains(&set.replica.port.to_string())
            })
        {
            assert!(Instant::now() < deadline, "sentinels not ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        set
    }

    fn urls(&self) -> String {
        urls(&self.sentinels)
    }

    /// The primary's port as the first sentinel names it.
    fn named_primary(&self) -> Option<u16> {
        let out = cli(
            self.sentinels[0].port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER],
        );
        out.lines().nth(1)?.trim().parse().ok()
    }
}

/// Three auth-jit instances on one store, with the clients they share.
struct Fleet {
    _dir: tempfile::TempDir,
    servers: Vec<Server>,
    billing: String,
    ledger: String,
    burst: String,
}

fn fleet(mode: &str, urls: String) -> Fleet {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = vec![
        ("AUTH_JIT_STORE_MODE", mode.to_owned()),
        ("AUTH_JIT_STORE_URL", urls),
        ("AUTH_JIT_KEY_ENCRYPTION_KEY", common::KEK.to_string()),
        ("AUTH_JIT_ISSUER", "http://auth.fleet".to_string()),
        // Short enough that calls to a dead primary give up quickly.
        ("AUTH_JIT_STORE_TIMEOUT_MS", "500".to_string()),
        (
            "AUTH_JIT_CLIENTS_FILE",
            dir.path().join("clients.toml").display().to_string(),
        ),
    ];
    if mode == "sentinel" {
        env.push(("AUTH_JIT_STORE_SENTINEL_MASTER", MASTER.to_owned()));
    }
    let billing = add_client(dir.path(), &env, "billing", &["--audience", "ledger"]);
    let ledger = add_client(dir.path(), &env, "ledger", &["--audience", "audit"]);
    let burst = add_client(
        dir.path(),
        &env,
        "burst",
        &["--audience", "ledger", "--rate-limit", "5"],
    );
    let servers = start_many(&dir.path().join("fleet"), 3, &env);
    Fleet {
        _dir: dir,
        servers,
        billing,
        ledger,
        burst,
    }
}

impl Fleet {
    async fn issue(&self, once: bool) -> String {
        self.servers[0]
            .issue(
                "billing",
                &self.billing,
                json!({"audience": "ledger", "once": once}),
            )
            .await
    }

    /// A single-use token consumed on one instance and a token revoked on
    /// another: what a failover must not undo.
    async fn promises(&self) -> (String, String) {
        let consumed = self.issue(true).await;
        assert_eq!(self.verify(1, &consumed).await, 200);
        let revoked = self.issue(false).await;
        let jti = payload(&revoked)["jti"].as_str().expect("jti").to_owned();
        let status = self.servers[2]
            .revoke("ledger", &self.ledger, json!({"jti": jti}))
            .await;
        assert_eq!(status, 200);
        (consumed, revoked)
    }

    /// Verifies on instance `i`: the status.
    async fn verify(&self, i: usize, token: &str) -> u16 {
        self.servers[i % 3]
            .verify("ledger", &self.ledger, token, "ledger")
            .await
            .0
    }
}

/// 50 concurrent verifications of one single-use token spread over the
/// instances: (successes, already used, anything else).
async fn fifty_at_once(fleet: &Arc<Fleet>, token: &str) -> (usize, usize, Vec<u16>) {
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let fleet = Arc::clone(fleet);
            let token = token.to_owned();
            tokio::spawn(async move { fleet.verify(i, &token).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("task"));
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let used = statuses.iter().filter(|s| **s == 401).count();
    let other = statuses
        .into_iter()
        .filter(|s| *s != 200 && *s != 401)
        .collect();
    (ok, used, other)
}

async fn jwks(server: &Server) -> Value {
    let (status, _, text) = server.get("/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    serde_json::from_str(&text).expect("jwks")
}

async fn ready(server: &Server) -> (u16, Value) {
    let (status, _, text) = server.get("/api/ready").await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Polls `token` on every instance until each answers `expected`, at most
/// `limit`; every answer on the way must be that or 503. Returns how long
/// it took.
async fn until_every_instance(
    fleet: &Fleet,
    token: &str,
    expected: u16,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..3 {
        loop {
            let status = fleet.verify(i, token).await;
            *seen.entry(status).or_insert(0) += 1;
            assert!(
                status == expected || status == 503,
                "instance {i} answered {status} during the failover: {seen:?}"
            );
            if status == expected {
                break;
            }
            assert!(
                started.elapsed() < limit,
                "instance {i} did not recover in {limit:?}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!("answers while recovering: {seen:?}");
    started.elapsed()
}

/// What a failover must never undo: the consumed token stays used, the
/// revoked one revoked, on every instance, and the fleet still consumes a
/// fresh single-use token exactly once.
async fn promises_hold(fleet: &Arc<Fleet>, consumed: &str, revoked: &str) {
    // A replica that has just rejoined may still be catching up, so a
    // consume can answer 503 (fail closed) for a moment; it must never
    // answer 200.
    until_every_instance(fleet, consumed, 401, Duration::from_secs(10)).await;
    until_every_instance(fleet, revoked, 401, Duration::from_secs(10)).await;
    let mut runs = Vec::new();
    for _ in 0..3 {
        let fresh = fleet.issue(true).await;
        let (ok, used, other) = fifty_at_once(fleet, &fresh).await;
        assert!(ok <= 1, "a single-use token accepted {ok} times");
        assert!(other.iter().all(|s| *s == 503), "{other:?}");
        if (ok, used) == (1, 49) {
            return;
        }
        runs.push((ok, used, other.len()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("no clean exactly-once run after the failover: {runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_redis_cluster_acts_as_one() {
    let cluster = Cluster::start();
    let f = Arc::new(fleet("cluster", cluster.urls()));

    // One key ring: every instance publishes the same JWKS.
    let first = jwks(&f.servers[0]).await;
    for server in &f.servers[1..] {
        assert_eq!(jwks(server).await, first);
    }
    let (status, body) = ready(&f.servers[1]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["store_mode"], "cluster");

    // Exactly once, three times over, tokens landing on various slots.
    for _ in 0..3 {
        let token = f.issue(true).await;
        let (ok, used, other) = fifty_at_once(&f, &token).await;
        assert_eq!((ok, used, other), (1, 49, vec![]));
    }

    // A revocation through one instance is refused by the others.
    let token = f.issue(false).await;
    assert_eq!(f.verify(1, &token).await, 200);
    let status = f.servers[0]
        .revoke("ledger", &f.ledger, json!({"jti": payload(&token)["jti"]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(f.verify(1, &token).await, 401);
    assert_eq!(f.verify(2, &token).await, 401);

    // The per-client rate limit is the fleet's: 5 per second in all.
    let servers: Vec<&Server> = f.servers.iter().collect();
    common::assert_rate_limit_is_shared(&servers, "burst", &f.burst, "ledger").await;

    // Metrics name the mode and its health.
    let (_, _, metrics) = f.servers[2].get("/metrics").await;
    assert!(
        metrics.contains("auth_jit_store_up{backend=\"redis\",mode=\"cluster\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_failover_keeps_every_promise_and_needs_no_restart() {
    let mut cluster = Cluster::start();
    let f = Arc::new(fleet("cluster", cluster.urls()));
    let (consumed, revoked) = f.promises().await;
    // Kill the primary that holds the consumed token's slot; the probe, an
    // ordinary token, lives on the same primary.
    let jti = |token: &str| payload(token)["jti"].as_str().expect("jti").to_owned();
    let victim = cluster.primary_of(&jti(&consumed));
    let mut probe = f.issue(false).await;
    while cluster.primary_of(&jti(&probe)) != victim {
        probe = f.issue(false).await;
    }
    let killed = Instant::now();
    cluster.node(victim).kill();

    // Until a replica is promoted, the consumed and revoked tokens are
    // never accepted; the fleet answers 503 for what depends on the lost
    // slots, never 500.
    let watch = {
        let f = Arc::clone(&f);
        let (consumed, revoked) = (consumed.clone(), revoked.clone());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            let until = Instant::now() + Duration::from_secs(4);
            while Instant::now() < until {
                for i in 0..3 {
                    answers.push(f.verify(i, &consumed).await);
                    answers.push(f.verify(i, &revoked).await);
                }
            }
            answers
        })
    };
    // An instance has recovered when it verifies the probe, whose slot
    // was on the killed primary.
    let recovered = until_every_instance(&f, &probe, 200, Duration::from_secs(30)).await;
    cluster.wait_ok(Duration::from_secs(30));
    let promoted = killed.elapsed();
    let answers = watch.await.expect("watch");
    assert!(
        answers.iter().all(|s| *s == 401 || *s == 503),
        "a consumed or revoked token got {answers:?}"
    );

    // The killed node comes back as a replica of the new primary: a
    // consume needs one replica to acknowledge it.
    cluster.node(victim).resume();
    let mut replicas = 0;
    for _ in 0..200 {
        replicas = cli(victim, &["ROLE"])
            .lines()
            .next()
            .map_or(0, |r| usize::from(r == "slave"));
        if replicas == 1 && cli(victim, &["INFO", "replication"]).contains("master_link_status:up")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(replicas, 1, "the old primary rejoined as a replica");
    promises_hold(&f, &consumed, &revoked).await;
    let refused = answers.iter().filter(|s| **s == 503).count();
    eprintln!(
        "cluster failover: every instance answered for the lost slot {:.1} s after the kill; \
         cluster ok after {:.1} s; {refused} of {} answers meanwhile were 503, the rest 401",
        recovered.as_secs_f64(),
        promoted.as_secs_f64(),
        answers.len()
    );
    for server in &f.servers {
        let ok = eventually(Duration::from_secs(10), || async {
            ready(server).await.0 == 200
        })
        .await;
        assert!(ok, "ready again without a restart");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_keeps_every_promise_and_needs_no_restart() {
    let mut set = Sentinels::start();
    let f = Arc::new(fleet("sentinel", set.urls()));
    let (status, body) = ready(&f.servers[0]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["store_mode"], "sentinel");

    let (consumed, revoked) = f.promises().await;
    let probe = f.issue(false).await;
    let token = f.issue(true).await;
    let (ok, used, other) = fifty_at_once(&f, &token).await;
    assert_eq!((ok, used, other), (1, 49, vec![]));

    let killed = Instant::now();
    set.primary.kill();
    let replica = set.replica.port;
    let deadline = Instant::now() + Duration::from_secs(30);
    while set.named_primary() != Some(replica) {
        // Meanwhile: refused or 503, never accepted.
        for i in 0..3 {
            let status = f.verify(i, &consumed).await;
            assert!(status == 401 || status == 503, "consumed token: {status}");
            let status = f.verify(i, &revoked).await;
            assert!(status == 401 || status == 503, "revoked token: {status}");
        }
        assert!(Instant::now() < deadline, "no promotion");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let promoted = killed.elapsed();
    until_every_instance(&f, &probe, 200, Duration::from_secs(30)).await;
    let recovered = killed.elapsed();

    // The old primary comes back; the sentinels make it a replica.
    set.primary.resume();
    let old = set.primary.port;
    let rejoined = eventually(Duration::from_secs(30), || async {
        cli(old, &["INFO", "replication"]).contains("master_link_status:up")
    })
    .await;
    assert!(rejoined, "the old primary rejoined as a replica");
    promises_hold(&f, &consumed, &revoked).await;
    eprintln!(
        "sentinel failover: replica promoted {:.1} s after the kill; every instance answered {:.1} s after the kill",
        promoted.as_secs_f64(),
        recovered.as_secs_f64()
    );
}
