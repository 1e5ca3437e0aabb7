//! The Redis store, for any number of instances. Every check-and-set is one
//! Lua script, which Redis runs atomically: exactly-once holds across the
//! fleet. Keys expire with the token they describe (`EXAT`), so Redis needs
//! no cleaning. Works with any Redis-protocol server that has `EXAT` and Lua
//! (Redis >= 6.2, Valkey); a single primary, not Redis Cluster (the check
//! script touches keys of two hash slots).

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::{revocation_id, Party, Store, StoreError, TokenRef, TokenState};

/// KEYS: three revocation ids, client-cutoff:<client>, used:<jti>
/// ARGV: iat, consume (0/1), keep_until
/// Returns 0 active, 1 revoked, 2 already used.
const CHECK: &str = r"
if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3]) > 0 then return 1 end
local cut = redis.call('GET', KEYS[4])
if cut and tonumber(ARGV[1]) <= tonumber(cut) then return 1 end
if ARGV[2] == '1' then
  if redis.call('SET', KEYS[5], '1', 'NX', 'EXAT', ARGV[3]) then return 0 end
  return 2
end
if redis.call('EXISTS', KEYS[5]) == 1 then return 2 end
return 0
";

/// KEYS: client-cutoff:<client>; ARGV: at, keep_until. Never moves a
/// cut-off backwards.
const CUTOFF: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and tonumber(cur) > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[2])
return 1
";

/// KEYS: rate:<client>:<window>. One counter per client and second, gone
/// two seconds later. Returns the count including this request.
const RATE: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], 2) end
return n
";

/// KEYS: the key ring hash (field `v`: version; `k:<kid>`: one key each).
/// ARGV: expected version, next version, number of puts, then kid/json
/// pairs, then kids to delete. One atomic compare-and-set; 1 if applied.
const RING_COMMIT: &str = r"
local v = redis.call('HGET', KEYS[1], 'v') or '0'
if v ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[3])
local i = 4
for _ = 1, n do
  redis.call('HSET', KEYS[1], 'k:' .. ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HDEL', KEYS[1], 'k:' .. ARGV[i])
  i = i + 1
end
redis.call('HSET', KEYS[1], 'v', ARGV[2])
return 1
";

/// KEYS: authfail:<key>:<window>. ARGV: 1 to count a failure, 0 to read.
/// Gone two windows later. Returns the count.
const FAILURES: &str = r"
if ARGV[1] == '1' then
  local n = redis.call('INCR', KEYS[1])
  if n == 1 then redis.call('EXPIRE', KEYS[1], 120) end
  return n
end
return tonumber(redis.call('GET', KEYS[1]) or '0')
";

pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    check: Script,
    cutoff: Script,
    rate: Script,
    ring_commit: Script,
    failures: Script,
}

fn err(e: redis::RedisError) -> StoreError {
    // Redis errors can echo the URL; keep only the kind.
    StoreError::Unavailable(format!("redis: {:?}", e.kind()))
}

impl RedisStore {
    /// Prepares a connection; it is made lazily and re-made after any loss,
    /// so the service starts (not ready) while Redis is down and recovers by
    /// itself when it comes back.
    pub fn connect(url: &str, prefix: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|_| anyhow::anyhow!("AUTH_JIT_STORE_URL: not a valid Redis URL"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(250))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|_| {
            anyhow::anyhow!("AUTH_JIT_STORE_URL: cannot prepare a Redis connection")
        })?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            check: Script::new(CHECK),
            cutoff: Script::new(CUTOFF),
            rate: Script::new(RATE),
            ring_commit: Script::new(RING_COMMIT),
            failures: Script::new(FAILURES),
        })
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    /// One hash holds the whole ring, so every change to it is one key
    /// (one hash slot) and one atomic script.
    fn ring_key(&self) -> String {
        format!("{}keyring", self.prefix)
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn check(&self, token: TokenRef<'_>, consume: bool) -> Result<TokenState, StoreError> {
        let mut conn = self.conn.clone();
        let consume = consume && token.single_use;
        let code: i64 = self
            .check
            .key(self.key("revoked", &revocation_id(token.jti, Party::Proven)))
            .key(self.key(
                "revoked",
                &revocation_id(token.jti, Party::Client(token.client_id)),
            ))
            .key(self.key(
                "revoked",
                &revocation_id(token.jti, Party::Audience(token.aud)),
            ))
            .key(self.key("client-cutoff", token.client_id))
            .key(self.key("used", token.jti))
            .arg(token.iat)
            .arg(if consume { "1" } else { "0" })
            .arg(token.keep_until)
            .invoke_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(match code {
            0 => TokenState::Active,
            2 => TokenState::AlreadyUsed,
            // 1, or anything unexpected: fail closed.
            _ => TokenState::Revoked,
        })
    }

    async fn revoke(&self, revocation_id: &str, keep_until: u64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(self.key("revoked", revocation_id))
            .arg("1")
            .arg("EXAT")
            .arg(keep_until)
            .query_async::<()>(&mut conn)
            .await
            .map_err(err)
    }

    async fn revoke_client(
        &self,
        client_id: &str,
        at: u64,
        keep_until: u64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.cutoff
            .key(self.key("client-cutoff", client_id))
            .arg(at)
            .arg(keep_until)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn remember_once(&self, key: &str, keep_until: u64) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key("once", key))
            .arg("1")
            .arg("NX")
            .arg("EXAT")
            .arg(keep_until)
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(set.is_some())
    }

    async fn rate_count(&self, client: &str, window: u64) -> Result<Option<u64>, StoreError> {
        let mut conn = self.conn.clone();
        let count: u64 = self
            .rate
            .key(self.key("rate", &format!("{client}:{window}")))
            .invoke_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(Some(count))
    }

    async fn failure_count(
        &self,
        key: &str,
        window: u64,
        add: bool,
    ) -> Result<Option<u64>, StoreError> {
        let mut conn = self.conn.clone();
        let count: u64 = self
            .failures
            .key(self.key("authfail", &format!("{key}:{window}")))
            .arg(if add { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(Some(count))
    }

    async fn purge_expired(&self, _now: u64) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn ring_version(&self) -> Result<String, StoreError> {
        let mut conn = self.conn.clone();
        let version: Option<String> = redis::cmd("HGET")
            .arg(self.ring_key())
            .arg("v")
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(version.unwrap_or_else(|| "0".to_owned()))
    }

    async fn ring_load(&self) -> Result<(String, Vec<(String, String)>), StoreError> {
        let mut conn = self.conn.clone();
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.ring_key())
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        let mut version = "0".to_owned();
        let mut records = Vec::new();
        for (field, value) in fields {
            if field == "v" {
                version = value;
            } else if let Some(kid) = field.strip_prefix("k:") {
                records.push((kid.to_owned(), value));
            }
        }
        Ok((version, records))
    }

    async fn ring_commit(
        &self,
        expected: &str,
        next: &str,
        put: &[(String, String)],
        delete: &[String],
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.ring_commit.key(self.ring_key());
        invocation.arg(expected).arg(next).arg(put.len());
        for (kid, json) in put {
            invocation.arg(kid).arg(json);
        }
        for kid in delete {
            invocation.arg(kid);
        }
        let applied: i64 = invocation.invoke_async(&mut conn).await.map_err(err)?;
        Ok(applied == 1)
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn is_shared(&self) -> bool {
        true
    }
}
