//! The connection to Redis in each `AUTH_JIT_STORE_MODE`, all from
//! redis-rs: one primary (`ConnectionManager`, which reconnects by itself),
//! Redis Cluster (`ClusterConnection`, which follows `MOVED`/`ASK` and
//! refreshes the slot map after a failover) and Sentinel (`SentinelClient`
//! finds the primary; a `ConnectionManager` talks to it, and is replaced
//! when the primary stops answering or turns read-only).

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

pub struct Link {
    mode: Mode,
}

enum Mode {
    Single(ConnectionManager),
    Cluster(Box<Cluster>),
    Sentinel(Box<Sentinel>),
}

struct Cluster {
    client: ClusterClient,
    conn: tokio::sync::OnceCell<ClusterConnection>,
}

struct Sentinel {
    client: tokio::sync::Mutex<SentinelClient>,
    primary: RwLock<Option<ConnectionManager>>,
    config: ConnectionManagerConfig,
    failed_lookup: Mutex<Option<Instant>>,
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
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(250))))
            .set_response_timeout(Some(timeout))
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
                let conn =
                    ConnectionManager::new_lazy_with_config(client, config).map_err(|_| {
                        anyhow::anyhow!("AUTH_JIT_STORE_URL: cannot prepare a Redis connection")
                    })?;
                Mode::Single(conn)
            }
            StoreMode::Cluster => {
                let client = ClusterClient::builder(urls)
                    .connection_timeout(timeout.max(Duration::from_millis(250)))
                    .response_timeout(timeout)
                    .retries(2)
                    .build()
                    .map_err(|_| bad_url())?;
                Mode::Cluster(Box::new(Cluster {
                    client,
                    conn: tokio::sync::OnceCell::new(),
                }))
            }
            StoreMode::Sentinel => {
                let first = urls
                    .first()
                    .ok_or_else(bad_url)?
                    .into_connection_info()
                    .map_err(|_| bad_url())?;
                // The primary is reached with the URLs' credentials and
                // database.
                let node = SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(first.redis_settings().clone());
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
                    failed_lookup: Mutex::new(None),
                }))
            }
        };
        Ok(Self { mode })
    }

    /// A connection for one call.
    pub async fn conn(&self) -> RedisResult<Conn> {
        match &self.mode {
            Mode::Single(conn) => Ok(Conn::Single(conn.clone())),
            Mode::Cluster(cluster) => cluster
                .conn
                .get_or_try_init(|| cluster.client.get_async_connection())
                .await
                .map(|c| Conn::Cluster(c.clone())),
            Mode::Sentinel(sentinel) => sentinel.primary().await.map(Conn::Single),
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
                if let Ok(mut primary) = sentinel.primary.write() {
                    *primary = None;
                }
            }
        }
    }
}

impl Sentinel {
    async fn primary(&self) -> RedisResult<ConnectionManager> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let mut client = self.client.lock().await;
        // Another caller may have found it while this one waited.
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let paused = self
            .failed_lookup
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() < LOOKUP_PAUSE);
        if paused {
            return Err(no_primary());
        }
        let found = async {
            let primary = client.async_get_client().await?;
            ConnectionManager::new_with_config(primary, self.config.clone()).await
        }
        .await;
        match found {
            Ok(conn) => {
                if let Ok(mut current) = self.primary.write() {
                    *current = Some(conn.clone());
                }
                Ok(conn)
            }
            Err(e) => {
                if let Ok(mut at) = self.failed_lookup.lock() {
                    *at = Some(Instant::now());
                }
                Err(e)
            }
        }
    }

    fn current(&self) -> Option<ConnectionManager> {
        self.primary.read().ok().and_then(|p| p.clone())
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
