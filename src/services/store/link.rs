//! The connection to Redis in each `AUTH_JIT_STORE_MODE`, all from
//! redis-rs: one primary (`ConnectionManager`, which reconnects by itself),
//! Redis Cluster (`ClusterConnection`, which follows `MOVED`/`ASK` and
//! refreshes the slot map after a failover) and Sentinel (`SentinelClient`
//! finds the primary; a `ConnectionManager` talks to it, and is replaced
//! when the primary stops answering, turns read-only, cannot reach its
//! replicas, or the sentinels name another one, which is checked every
//! few seconds).
//!
//! Writes that wait for replicas (`WAIT` blocks the connection it is sent
//! on, and Redis answers one connection's commands in order) have their
//! own connection, so reads never queue behind them.

use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use crate::settings::StoreMode;

/// How long a failed Sentinel lookup is not repeated: while no primary is
/// known, callers fail at once instead of each asking the sentinels.
const LOOKUP_PAUSE: Duration = Duration::from_millis(200);

/// Remembers a failed attempt, so that for [`LOOKUP_PAUSE`] callers fail
/// at once instead of each trying again.
#[derive(Default)]
struct Pause(Mutex<Option<Instant>>);

impl Pause {
    fn active(&self) -> bool {
        self.0
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() < LOOKUP_PAUSE)
    }

    fn start(&self) {
        if let Ok(mut at) = self.0.lock() {
            *at = Some(Instant::now());
        }
    }
}

/// How often the sentinels are asked whether the primary is still the one
/// in use: a demoted or isolated node that still answers is left within
/// this time even if nothing fails.
const RECHECK: Duration = Duration::from_secs(2);

/// Which connection a call uses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Reads, counters, and writes that do not wait.
    Read,
    /// Writes followed by `WAIT`.
    Write,
}

impl Purpose {
    fn index(self) -> usize {
        match self {
            Self::Read => 0,
            Self::Write => 1,
        }
    }
}

pub struct Link {
    mode: Mode,
}

enum Mode {
    Single([ConnectionManager; 2]),
    Cluster(Box<Cluster>),
    Sentinel(Box<Sentinel>),
}

struct Cluster {
    client: ClusterClient,
    conns: [tokio::sync::OnceCell<ClusterConnection>; 2],
    failed_connect: Pause,
}

struct Sentinel {
    client: tokio::sync::Mutex<SentinelClient>,
    primary: RwLock<Option<Primary>>,
    config: ConnectionManagerConfig,
    failed_lookup: Pause,
}

/// The primary in use: where it is, when the sentinels last named it, and
/// one connection per [`Purpose`].
#[derive(Clone)]
struct Primary {
    addr: String,
    checked: Instant,
    conns: [ConnectionManager; 2],
}

/// One connection for one call: a cheap clone of the mode's connection.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

fn bad_url() -> anyhow::Error {
    anyhow::anyhow!("AUTH_JIT_STORE_URL: not a valid Redis URL (or list of URLs)")
}

impl Link {
    /// Prepares the connection; nothing is contacted yet, so the service
    /// starts (not ready) while Redis is down and connects when it answers.
    pub fn open(
        mode: StoreMode,
        urls: &str,
        sentinel_master: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let urls: Vec<&str> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        // Inside the store's own bound, so a call that times out does so
        // here, where the link learns of it.
        let response = (timeout * 4 / 5).max(Duration::from_millis(1));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(250))))
            .set_response_timeout(Some(response))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let mode = match mode {
            StoreMode::Single => {
                let [url] = urls[..] else {
                    anyhow::bail!(
                        "AUTH_JIT_STORE_URL: single mode takes one URL (a list is for cluster or sentinel mode)"
                    );
                };
                let client = redis::Client::open(url).map_err(|_| bad_url())?;
                let lazy = || {
                    ConnectionManager::new_lazy_with_config(client.clone(), config.clone()).map_err(
                        |_| {
                            anyhow::anyhow!("AUTH_JIT_STORE_URL: cannot prepare a Redis connection")
                        },
                    )
                };
                Mode::Single([lazy()?, lazy()?])
            }
            StoreMode::Cluster => {
                let client = ClusterClient::builder(urls)
                    .connection_timeout(timeout.max(Duration::from_millis(250)))
                    .response_timeout(response)
                    .retries(2)
                    .build()
                    .map_err(|_| bad_url())?;
                Mode::Cluster(Box::new(Cluster {
                    client,
                    conns: [tokio::sync::OnceCell::new(), tokio::sync::OnceCell::new()],
                    failed_connect: Pause::default(),
                }))
            }
            StoreMode::Sentinel => {
                let first = urls
                    .first()
                    .ok_or_else(bad_url)?
                    .into_connection_info()
                    .map_err(|_| bad_url())?;
                // The primary is reached with the URLs' credentials and
                // database, and with TLS when they use it.
                let mut node = SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(first.redis_settings().clone());
                if urls.iter().all(|u| u.starts_with("rediss://")) {
                    node = node.set_tls_mode(redis::TlsMode::Secure);
                } else if urls.iter().any(|u| u.starts_with("rediss://")) {
                    anyhow::bail!(
                        "AUTH_JIT_STORE_URL: the sentinels are either all rediss:// (TLS) or none"
                    );
                }
                let client = SentinelClient::build(
                    urls,
                    sentinel_master,
                    Some(node),
                    SentinelServerType::Master,
                )
                .map_err(|_| bad_url())?;
                Mode::Sentinel(Box::new(Sentinel {
                    client: tokio::sync::Mutex::new(client),
                    primary: RwLock::new(None),
                    config,
                    failed_lookup: Pause::default(),
                }))
            }
        };
        Ok(Self { mode })
    }

    /// A connection for one call.
    pub async fn conn(&self, purpose: Purpose) -> RedisResult<Conn> {
        let i = purpose.index();
        match &self.mode {
            Mode::Single(conns) => Ok(Conn::Single(conns[i].clone())),
            Mode::Cluster(cluster) => cluster.conn(i).await.map(Conn::Cluster),
            Mode::Sentinel(sentinel) => sentinel
                .primary()
                .await
                .map(|p| Conn::Single(p.conns[i].clone())),
        }
    }

    /// Told when a write did not reach its replicas: in Sentinel mode the
    /// primary may be isolated or demoted, so the next call asks again.
    pub fn unreplicated(&self) {
        if let Mode::Sentinel(sentinel) = &self.mode {
            sentinel.forget();
        }
    }

    /// Told after every failed call: in Sentinel mode, a primary that does
    /// not answer or refuses writes is dropped, and the next call asks the
    /// sentinels which node is the primary now.
    pub fn failed(&self, error: &RedisError) {
        if let Mode::Sentinel(sentinel) = &self.mode {
            let moved = error.is_io_error()
                || error.is_connection_dropped()
                || error.is_connection_refusal()
                || error.is_timeout()
                || matches!(
                    error.kind(),
                    redis::ErrorKind::Server(
                        redis::ServerErrorKind::ReadOnly | redis::ServerErrorKind::MasterDown
                    )
                );
            if moved {
                sentinel.forget();
            }
        }
    }
}

impl Cluster {
    async fn conn(&self, i: usize) -> RedisResult<ClusterConnection> {
        if let Some(conn) = self.conns[i].get() {
            return Ok(conn.clone());
        }
        // While the cluster cannot be reached, not every caller tries.
        if self.failed_connect.active() {
            return Err(RedisError::from((
                redis::ErrorKind::Io,
                "the cluster could not be reached moments ago",
            )));
        }
        match self.conns[i]
            .get_or_try_init(|| self.client.get_async_connection())
            .await
        {
            Ok(conn) => Ok(conn.clone()),
            Err(e) => {
                self.failed_connect.start();
                Err(e)
            }
        }
    }
}

impl Sentinel {
    async fn primary(&self) -> RedisResult<Primary> {
        let current = self.current();
        if let Some(primary) = &current {
            if primary.checked.elapsed() < RECHECK {
                return Ok(primary.clone());
            }
        }
        // One caller looks up; while it does, the others use what they have.
        let mut client = match (self.client.try_lock(), &current) {
            (Ok(client), _) => client,
            (Err(_), Some(primary)) => return Ok(primary.clone()),
            (Err(_), None) => self.client.lock().await,
        };
        if let Some(primary) = self.current() {
            if primary.checked.elapsed() < RECHECK {
                return Ok(primary);
            }
        }
        if self.failed_lookup.active() {
            return current.ok_or_else(no_primary);
        }
        match self.lookup(&mut client, current.as_ref()).await {
            Ok(primary) => {
                if let Ok(mut slot) = self.primary.write() {
                    *slot = Some(primary.clone());
                }
                Ok(primary)
            }
            Err(e) => {
                self.failed_lookup.start();
                // The sentinels do not answer: keep the primary in use (it
                // is dropped when it fails).
                current.ok_or(e)
            }
        }
    }

    /// Asks the sentinels for the primary; keeps the connections when it is
    /// the one in use.
    async fn lookup(
        &self,
        client: &mut SentinelClient,
        current: Option<&Primary>,
    ) -> RedisResult<Primary> {
        let found = client.async_get_client().await?;
        let addr = found.get_connection_info().addr().to_string();
        if let Some(primary) = current.filter(|p| p.addr == addr) {
            return Ok(Primary {
                checked: Instant::now(),
                ..primary.clone()
            });
        }
        let read = ConnectionManager::new_with_config(found.clone(), self.config.clone()).await?;
        let write = ConnectionManager::new_with_config(found, self.config.clone()).await?;
        Ok(Primary {
            addr,
            checked: Instant::now(),
            conns: [read, write],
        })
    }

    fn current(&self) -> Option<Primary> {
        self.primary.read().ok().and_then(|p| p.clone())
    }

    fn forget(&self) {
        if let Ok(mut primary) = self.primary.write() {
            *primary = None;
        }
    }
}

fn no_primary() -> RedisError {
    RedisError::from((
        redis::ErrorKind::Io,
        "no primary known: the sentinels were asked moments ago",
    ))
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
