//! The Redis store, for any number of instances, on one primary, a Redis
//! Cluster or a primary behind Sentinel ([`super::link`]). Every
//! check-and-set is one Lua script, which Redis runs atomically:
//! exactly-once holds across the fleet. Keys expire with the token they
//! describe (`EXAT`), so Redis needs no cleaning. Works with any
//! Redis-protocol server that has `EXAT` and Lua (Redis >= 6.2, Valkey).
//!
//! Key layout (`P` is `AUTH_JIT_STORE_PREFIX`). Every script touches one
//! hash slot: a token's keys share the hash tag `{jti}`; everything else is
//! one key per script.
//!
//! | key | what |
//! | --- | --- |
//! | `P{jti}:used` | a single-use token was consumed |
//! | `P{jti}:revoked:ID` | a revocation ([`revocation_id`]: the jti, and who revoked) |
//! | `P client-cutoff:CLIENT` | tokens of a client issued up to this instant are revoked |
//! | `P rate:CLIENT:SECOND`, `P authfail:KEY:MINUTE` | rate and failure counters |
//! | `P once:KEY` | a client assertion was seen (replay) |
//! | `P keyring` | the fleet's key ring, one hash |
//!
//! A write that protects a promise (a consumed token, a revocation, a
//! seen assertion, a key ring change) is acknowledged only once
//! `AUTH_JIT_STORE_MIN_REPLICAS` replicas have it (`WAIT`, bounded by half
//! the store timeout); otherwise the caller gets 503, never a success that
//! a failover could undo.

use std::time::Duration;

use async_trait::async_trait;
use redis::{Cmd, FromRedisValue};

use super::link::{Link, Purpose};
use super::{revocation_id, Store, StoreError, TokenRef, TokenState};
use crate::settings::StoreMode;

/// KEYS: P{jti}:revoked:ID for the three revocation ids, P{jti}:used.
/// ARGV: consume (0/1), keep_until.
/// Returns 0 active, 1 revoked, 2 already used.
const CHECK: &str = r"
if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3]) > 0 then return 1 end
if ARGV[1] == '1' then
  if redis.call('SET', KEYS[4], '1', 'NX', 'EXAT', ARGV[2]) then return 0 end
  return 2
end
if redis.call('EXISTS', KEYS[4]) == 1 then return 2 end
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
    link: Link,
    prefix: String,
    mode: StoreMode,
    /// Replicas a protecting write must reach before it is acknowledged.
    replicas: u32,
    /// How long `WAIT` may take, in milliseconds.
    wait_ms: u64,
}

fn err(e: &redis::RedisError) -> StoreError {
    // Redis errors can echo the URL; keep only the kind.
    StoreError::Unavailable(format!("redis: {:?}", e.kind()))
}

/// A script as one `EVAL` (the server caches it by digest): no `NOSCRIPT`
/// round after a failover or on a node that has not seen it yet.
fn eval(script: &str, keys: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len());
    for key in keys {
        cmd.arg(*key);
    }
    cmd
}

impl RedisStore {
    /// Prepares the connection (see [`Link::open`]).
    pub fn connect(
        mode: StoreMode,
        url: &str,
        sentinel_master: &str,
        prefix: &str,
        timeout: Duration,
        replicas: u32,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            link: Link::open(mode, url, sentinel_master, timeout)?,
            prefix: prefix.to_owned(),
            mode,
            replicas,
            wait_ms: (u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX) / 2).max(1),
        })
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    /// A key about one token: the jti is its hash tag (a jti is base64url,
    /// so it holds no brace).
    fn token_key(&self, jti: &str, what: &str) -> String {
        format!("{}{{{jti}}}:{what}", self.prefix)
    }

    fn revoked_key(&self, revocation_id: &str) -> String {
        let jti = revocation_id.split('|').next().unwrap_or_default();
        format!("{}{{{jti}}}:revoked:{revocation_id}", self.prefix)
    }

    /// One hash holds the whole ring, so every change to it is one key
    /// (one hash slot) and one atomic script.
    fn ring_key(&self) -> String {
        format!("{}keyring", self.prefix)
    }

    /// Runs one command.
    async fn run<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let result = match self.link.conn(Purpose::Read).await {
            Ok(mut conn) => cmd.query_async(&mut conn).await,
            Err(e) => Err(e),
        };
        result.map_err(|e| {
            self.link.failed(&e);
            err(&e)
        })
    }

    /// Runs a write that protects a promise, followed on the same
    /// connection (and so the same node) by `WAIT` for the replicas.
    async fn write<T: FromRedisValue>(&self, cmd: Cmd) -> Result<T, StoreError> {
        if self.replicas == 0 {
            return self.run(&cmd).await;
        }
        let mut pipe = redis::pipe();
        pipe.add_command(cmd);
        pipe.cmd("WAIT").arg(self.replicas).arg(self.wait_ms);
        let result = match self.link.conn(Purpose::Write).await {
            Ok(mut conn) => pipe.query_async::<(T, u32)>(&mut conn).await,
            Err(e) => Err(e),
        };
        let (value, acked) = result.map_err(|e| {
            self.link.failed(&e);
            err(&e)
        })?;
        if acked < self.replicas {
            self.link.unreplicated();
            return Err(StoreError::Unavailable(format!(
                "redis: the write reached {acked} of {} replicas in {} ms",
                self.replicas, self.wait_ms
            )));
        }
        Ok(value)
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn check(&self, token: TokenRef<'_>, consume: bool) -> Result<TokenState, StoreError> {
        let consume = consume && token.single_use;
        let [a, b, c] = token
            .parties()
            .map(|party| self.revoked_key(&revocation_id(token.jti, party)));
        let keys = [a, b, c, self.token_key(token.jti, "used")];
        let mut check = eval(CHECK, &keys.each_ref().map(String::as_str));
        check
            .arg(if consume { "1" } else { "0" })
            .arg(token.keep_until);
        let state = async {
            if consume {
                self.write::<i64>(check).await
            } else {
                self.run::<i64>(&check).await
            }
        };
        // The client's cut-off lives in another slot: read at the same
        // time. Either one saying "revoked" refuses the token.
        let cutoff_key = self.key("client-cutoff", token.client_id);
        let mut cutoff = redis::cmd("GET");
        cutoff.arg(&cutoff_key);
        let (code, cutoff) = tokio::join!(state, self.run::<Option<u64>>(&cutoff));
        let (code, cutoff) = (code?, cutoff?);
        if cutoff.is_some_and(|cut| token.iat <= cut) {
            return Ok(TokenState::Revoked);
        }
        Ok(match code {
            0 => TokenState::Active,
            2 => TokenState::AlreadyUsed,
            // 1, or anything unexpected: fail closed.
            _ => TokenState::Revoked,
        })
    }

    async fn revoke(&self, revocation_id: &str, keep_until: u64) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.revoked_key(revocation_id))
            .arg("1")
            .arg("EXAT")
            .arg(keep_until);
        self.write::<()>(cmd).await
    }

    async fn revoke_client(
        &self,
        client_id: &str,
        at: u64,
        keep_until: u64,
    ) -> Result<(), StoreError> {
        let key = self.key("client-cutoff", client_id);
        let mut cmd = eval(CUTOFF, &[&key]);
        cmd.arg(at).arg(keep_until);
        self.write::<i64>(cmd).await.map(|_| ())
    }

    async fn remember_once(&self, key: &str, keep_until: u64) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key("once", key))
            .arg("1")
            .arg("NX")
            .arg("EXAT")
            .arg(keep_until);
        let set: Option<String> = self.write(cmd).await?;
        Ok(set.is_some())
    }

    async fn rate_count(&self, client: &str, window: u64) -> Result<Option<u64>, StoreError> {
        let key = self.key("rate", &format!("{client}:{window}"));
        self.run::<u64>(&eval(RATE, &[&key])).await.map(Some)
    }

    async fn failure_count(
        &self,
        key: &str,
        window: u64,
        add: bool,
    ) -> Result<Option<u64>, StoreError> {
        let key = self.key("authfail", &format!("{key}:{window}"));
        let mut cmd = eval(FAILURES, &[&key]);
        cmd.arg(if add { "1" } else { "0" });
        self.run::<u64>(&cmd).await.map(Some)
    }

    async fn purge_expired(&self, _now: u64) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // On a cluster, every primary answers.
        self.run::<String>(&redis::cmd("PING")).await.map(|_| ())
    }

    async fn ring_version(&self) -> Result<String, StoreError> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(self.ring_key()).arg("v");
        let version: Option<String> = self.run(&cmd).await?;
        Ok(version.unwrap_or_else(|| "0".to_owned()))
    }

    async fn ring_load(&self) -> Result<(String, Vec<(String, String)>), StoreError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.ring_key());
        let fields: Vec<(String, String)> = self.run(&cmd).await?;
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
        let key = self.ring_key();
        let mut cmd = eval(RING_COMMIT, &[&key]);
        cmd.arg(expected).arg(next).arg(put.len());
        for (kid, json) in put {
            cmd.arg(kid).arg(json);
        }
        for kid in delete {
            cmd.arg(kid);
        }
        let applied: i64 = self.write(cmd).await?;
        Ok(applied == 1)
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn mode(&self) -> &'static str {
        self.mode.as_str()
    }

    fn is_shared(&self) -> bool {
        true
    }
}
