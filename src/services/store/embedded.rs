//! The embedded store: one redb file in the data directory. Persistent (a
//! restart forgets nothing), transactional (a single-use token is consumed
//! inside one write transaction, which redb serializes), and exclusive to
//! one process (redb locks the file), which is what "embedded" means: run a
//! fleet on Redis.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{write_revocation_id, Store, StoreError, TokenRef, TokenState};

/// revocation id (see `revocation_id`) -> keep_until
const REVOKED: TableDefinition<&str, u64> = TableDefinition::new("revoked");
/// jti -> keep_until
const USED: TableDefinition<&str, u64> = TableDefinition::new("used");
/// client id -> (cut-off, keep_until)
const CLIENT_CUTOFF: TableDefinition<&str, (u64, u64)> = TableDefinition::new("client_cutoff");
/// one-time key -> keep_until
const ONCE: TableDefinition<&str, u64> = TableDefinition::new("once");

#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    /// A write commits only if it started this soon after the call: the
    /// caller's time bound is a bit longer, so a write the caller already
    /// gave up on (a busy blocking pool, a slow disk) is rolled back rather
    /// than committed behind its back.
    write_budget: std::time::Duration,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl EmbeddedStore {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let db = Database::create(path).map_err(|e| {
            anyhow::anyhow!(
                "embedded store {}: {e} (is another auth-jit using this data directory? \
                 several instances need AUTH_JIT_STORE_URL=redis://...)",
                path.display()
            )
        })?;
        // Consumed and revoked token ids are nobody else's business.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        // Create the tables up front so read transactions always find them.
        let txn = db.begin_write()?;
        {
            txn.open_table(REVOKED)?;
            txn.open_table(USED)?;
            txn.open_table(CLIENT_CUTOFF)?;
            txn.open_table(ONCE)?;
        }
        txn.commit()?;
        Ok(Self {
            db: Arc::new(db),
            write_budget: std::time::Duration::from_secs(3600),
        })
    }

    /// Writes commit only within `budget` of their call (see the field).
    pub fn with_write_budget(mut self, budget: std::time::Duration) -> Self {
        self.write_budget = budget;
        self
    }

    /// Runs blocking redb work off the async runtime; `work` gets the
    /// instant after which it must not commit.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database, Deadline) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        let deadline = Deadline(std::time::Instant::now() + self.write_budget);
        tokio::task::spawn_blocking(move || work(&db, deadline))
            .await
            .map_err(err)?
    }
}

/// The last instant a write may commit.
#[derive(Clone, Copy)]
struct Deadline(std::time::Instant);

impl Deadline {
    /// Commits `txn`, or drops it (rolled back) once the caller may have
    /// given up: the outcome the caller saw (a timeout) is then the truth.
    fn commit(self, txn: redb::WriteTransaction) -> Result<(), StoreError> {
        if std::time::Instant::now() > self.0 {
            drop(txn);
            return Err(StoreError::Timeout);
        }
        txn.commit().map_err(err)
    }
}

fn is_revoked(
    table: &impl ReadableTable<&'static str, u64>,
    token: &TokenRef<'_>,
) -> Result<bool, StoreError> {
    let mut id =
        String::with_capacity(token.jti.len() + 3 + token.client_id.len().max(token.aud.len()));
    for party in token.parties() {
        write_revocation_id(&mut id, token.jti, party);
        if table.get(id.as_str()).map_err(err)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn cut_off(
    table: &impl ReadableTable<&'static str, (u64, u64)>,
    token: &TokenRef<'_>,
) -> Result<bool, StoreError> {
    Ok(table
        .get(token.client_id)
        .map_err(err)?
        .is_some_and(|cut| token.iat <= cut.value().0))
}

fn read_state(db: &Database, token: &TokenRef<'_>) -> Result<TokenState, StoreError> {
    let txn = db.begin_read().map_err(err)?;
    if is_revoked(&txn.open_table(REVOKED).map_err(err)?, token)?
        || cut_off(&txn.open_table(CLIENT_CUTOFF).map_err(err)?, token)?
    {
        return Ok(TokenState::Revoked);
    }
    if txn
        .open_table(USED)
        .map_err(err)?
        .get(token.jti)
        .map_err(err)?
        .is_some()
    {
        return Ok(TokenState::AlreadyUsed);
    }
    Ok(TokenState::Active)
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn check(&self, token: TokenRef<'_>, consume: bool) -> Result<TokenState, StoreError> {
        if !(consume && token.single_use) {
            // A read transaction on a small, hot file takes microseconds and
            // never waits for a writer (redb readers see the last commit),
            // so it runs here: a blocking-pool hop would cost more than it.
            return read_state(&self.db, &token);
        }
        let (jti, client, aud) = (
            token.jti.to_owned(),
            token.client_id.to_owned(),
            token.aud.to_owned(),
        );
        let (iat, keep_until) = (token.iat, token.keep_until);
        self.blocking(move |db, deadline| {
            let token = TokenRef {
                jti: &jti,
                client_id: &client,
                aud: &aud,
                iat,
                keep_until,
                single_use: true,
            };
            // redb allows one write transaction at a time: check-and-set here
            // is atomic against every other request of this process.
            let txn = db.begin_write().map_err(err)?;
            let state = {
                let revoked = txn.open_table(REVOKED).map_err(err)?;
                let cutoffs = txn.open_table(CLIENT_CUTOFF).map_err(err)?;
                let mut used = txn.open_table(USED).map_err(err)?;
                if cut_off(&cutoffs, &token)? || is_revoked(&revoked, &token)? {
                    TokenState::Revoked
                } else if used.get(token.jti).map_err(err)?.is_some() {
                    TokenState::AlreadyUsed
                } else {
                    used.insert(token.jti, keep_until).map_err(err)?;
                    TokenState::Active
                }
            };
            deadline.commit(txn)?;
            Ok(state)
        })
        .await
    }

    async fn revoke(&self, revocation_id: &str, keep_until: u64) -> Result<(), StoreError> {
        let jti = revocation_id.to_owned();
        self.blocking(move |db, deadline| {
            let txn = db.begin_write().map_err(err)?;
            txn.open_table(REVOKED)
                .map_err(err)?
                .insert(jti.as_str(), keep_until)
                .map_err(err)?;
            deadline.commit(txn)
        })
        .await
    }

    async fn revoke_client(
        &self,
        client_id: &str,
        at: u64,
        keep_until: u64,
    ) -> Result<(), StoreError> {
        let client = client_id.to_owned();
        self.blocking(move |db, deadline| {
            let txn = db.begin_write().map_err(err)?;
            {
                let mut table = txn.open_table(CLIENT_CUTOFF).map_err(err)?;
                let previous = table.get(client.as_str()).map_err(err)?.map(|v| v.value());
                let (at, keep_until) =
                    previous.map_or((at, keep_until), |(a, k)| (a.max(at), k.max(keep_until)));
                table
                    .insert(client.as_str(), (at, keep_until))
                    .map_err(err)?;
            }
            deadline.commit(txn)
        })
        .await
    }

    async fn remember_once(&self, key: &str, keep_until: u64) -> Result<bool, StoreError> {
        let key = key.to_owned();
        self.blocking(move |db, deadline| {
            let txn = db.begin_write().map_err(err)?;
            let fresh = {
                let mut table = txn.open_table(ONCE).map_err(err)?;
                let fresh = table.get(key.as_str()).map_err(err)?.is_none();
                if fresh {
                    table.insert(key.as_str(), keep_until).map_err(err)?;
                }
                fresh
            };
            deadline.commit(txn)?;
            Ok(fresh)
        })
        .await
    }

    async fn rate_count(&self, _client: &str, _window: u64) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    async fn purge_expired(&self, now: u64) -> Result<u64, StoreError> {
        // Purging only drops what has expired: committing late is harmless.
        self.blocking(move |db, _| {
            let txn = db.begin_write().map_err(err)?;
            let mut purged = 0u64;
            for table in [REVOKED, USED, ONCE] {
                let mut t = txn.open_table(table).map_err(err)?;
                let before = t.len().map_err(err)?;
                t.retain(|_, keep_until| keep_until > now).map_err(err)?;
                purged += before - t.len().map_err(err)?;
            }
            {
                let mut t = txn.open_table(CLIENT_CUTOFF).map_err(err)?;
                let before = t.len().map_err(err)?;
                t.retain(|_, (_, keep_until)| keep_until > now)
                    .map_err(err)?;
                purged += before - t.len().map_err(err)?;
            }
            txn.commit().map_err(err)?;
            Ok(purged)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(|db, _| db.begin_read().map(|_| ()).map_err(err))
            .await
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn is_shared(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn embedded_store_meets_the_contract_and_persists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        {
            let store = EmbeddedStore::open(&path).expect("open");
            super::super::contract::run(&store).await;
        }
        let reopened = EmbeddedStore::open(&path).expect("reopen");
        let used = TokenRef {
            jti: "b",
            client_id: "other",
            aud: "ledger",
            iat: 5_000,
            keep_until: 4_000_000_000,
            single_use: true,
        };
        assert_eq!(
            reopened.check(used, true).await.ok(),
            Some(TokenState::AlreadyUsed)
        );
        let revoked = TokenRef {
            jti: "a",
            single_use: false,
            ..used
        };
        assert_eq!(
            reopened.check(revoked, false).await.ok(),
            Some(TokenState::Revoked)
        );
    }

    #[tokio::test]
    async fn expired_entries_are_purged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(&dir.path().join("s.redb")).expect("open");
        store.revoke("old", 100).await.expect("revoke");
        store.revoke("new", 300).await.expect("revoke");
        assert_eq!(store.purge_expired(200).await.ok(), Some(1));
        let t = |jti| TokenRef {
            jti,
            client_id: "c",
            aud: "x",
            iat: 1,
            keep_until: 300,
            single_use: false,
        };
        assert_eq!(
            store.check(t("old"), false).await.ok(),
            Some(TokenState::Active)
        );
        assert_eq!(
            store.check(t("new"), false).await.ok(),
            Some(TokenState::Revoked)
        );
    }

    #[tokio::test]
    async fn a_second_process_cannot_open_the_same_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.redb");
        let _first = EmbeddedStore::open(&path).expect("open");
        assert!(EmbeddedStore::open(&path).is_err());
    }
}
