//! Start-up and shutdown in one place.
//!
//! Start-up: data directory, keys, clients (and their file watcher), the
//! store (and its purge task). Shutdown on SIGTERM/SIGINT: stop accepting,
//! drain with a bound (`application::serve`), stop background tasks, close
//! the store; telemetry is flushed when `main` drops its guard.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::services::clients::auth::{Authenticator, FailureGuard};
use crate::services::clients::Clients;
use crate::services::keys::{create_private_dir, KeyRing, KeySet, KeysError, RingPolicy};
use crate::services::ratelimit::RateLimits;
use crate::services::store::StoreHandle;
use crate::services::tokens::{ServiceRules, TokenService};
use crate::services::trusted::TrustedIssuers;
use crate::settings::Settings;
use crate::token::clock::{Clock, SystemClock, ThreadRandom};
use crate::token::policy::TtlLimits;
use crate::token::types::Audience;
use crate::token::verify::Rules;
use crate::web::application::{self, AppState};
use crate::web::server::{Draining, Stop};

/// A started application: its state and the background tasks it owns.
pub struct Started {
    pub state: AppState,
    tasks: Vec<JoinHandle<()>>,
}

impl Started {
    /// Stops background tasks. The store closes when the last handle drops.
    pub fn shutdown(self) {
        for task in self.tasks {
            task.abort();
        }
        tracing::info!("stopped");
    }
}

/// Opens everything the service needs, or says what is wrong.
pub async fn startup(settings: Settings) -> anyhow::Result<Started> {
    if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
        anyhow::bail!("jsonwebtoken has no crypto provider: this build is misconfigured");
    }
    create_private_dir(&settings.data_dir)?;
    // Before any store call: metric handles taken earlier would stay
    // no-ops (each thread keeps the handles it took).
    let recorder = crate::services::metrics::install();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let clients = Clients::open(&settings.clients_file)?;
    let store = StoreHandle::open(&settings).await?;
    if let Err(e) = store.ping().await {
        // Not fatal: the service starts not-ready and recovers by itself.
        tracing::warn!(store = store.kind(), error = %e, "store not reachable yet");
    }
    let ring = Arc::new(KeyRing::open(&settings, Some(&store)));
    let (keys, loaded) = open_ring(&ring, &settings, &clients, clock.as_ref()).await?;
    if let Some(active) = keys.active() {
        tracing::info!(kid = active.kid(), alg = %active.alg(), keys = keys.info().len(), at = %ring.describe(), "signing keys loaded");
    }
    let keys = Arc::new(keys);
    let tokens = Arc::new(
        TokenService::new(
            keys,
            clients.clone(),
            store.clone(),
            clock.clone(),
            Arc::new(ThreadRandom),
            ServiceRules {
                verify: Rules {
                    issuer: settings.issuer.clone(),
                    leeway: settings.leeway,
                },
                ttl: TtlLimits {
                    default_ttl: settings.default_ttl,
                    max_ttl: settings.max_ttl,
                },
                max_delegation_depth: settings.max_delegation_depth,
                trust_domain: match settings.trust_domain.as_str() {
                    "" => None,
                    domain => Some(Audience::parse(domain)?),
                },
            },
        )
        .with_trusted_issuers(match &settings.trusted_issuers_file {
            Some(path) => TrustedIssuers::load(path, settings.leeway)?,
            None => TrustedIssuers::default(),
        }),
    );
    let mut tasks = Vec::new();
    // A running server picks up `auth-jit client ...` changes within a second.
    let watched = clients.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let clients = watched.clone();
            let _ = tokio::task::spawn_blocking(move || clients.reload_if_changed()).await;
        }
    }));
    tasks.push(tokio::spawn(watch_keys(
        Arc::clone(&ring),
        settings.clone(),
        clients.clone(),
        Arc::clone(&tokens),
        clock.clone(),
        loaded,
    )));
    // Audit lines the file writer had to drop: counted and logged.
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        let mut reported = 0;
        loop {
            tick.tick().await;
            let dropped = crate::services::telemetry::audit_dropped();
            if dropped > reported {
                metrics::counter!(crate::services::metrics::AUDIT_DROPPED).absolute(dropped);
                tracing::warn!(
                    dropped = dropped - reported,
                    total = dropped,
                    "the audit file writer fell behind and dropped events"
                );
                reported = dropped;
            }
        }
    }));
    // Histogram samples wait in the recorder until they are folded into
    // their buckets; with no scraper, only this keeps memory bounded.
    let upkeep = recorder.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    }));
    let purged = store.clone();
    let purge_clock = clock.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            match purged.purge_expired(purge_clock.now()).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(entries = n, "expired store entries purged"),
                Err(e) => tracing::warn!(error = %e, "store purge failed"),
            }
        }
    }));
    let rate_limits = Arc::new(RateLimits::new(settings.rate_limit).with_store(store.clone()));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(
        settings.max_concurrent_requests,
    ));
    let auth = Arc::new(Authenticator::new(
        clients.clone(),
        store.clone(),
        FailureGuard::new(
            settings.auth_failure_limit,
            settings.auth_failure_limit_per_address,
            &store,
        ),
    ));
    Ok(Started {
        state: AppState::new(application::Shared {
            settings: Arc::new(settings),
            auth,
            clients,
            tokens,
            keys: ring,
            rate_limits,
            metrics: recorder,
            draining: Draining::default(),
            in_flight,
        }),
        tasks,
    })
}

/// Opens the key ring: imports an existing keys directory into an empty
/// shared ring, creates the first key of every algorithm in use, and loads
/// the set. A shared ring that cannot be read yet (Redis down) gives an
/// empty set: the server starts not ready, signs and trusts nothing, and
/// the key watcher loads the ring once it answers. Any other problem (a
/// wrong key-encryption key, a broken key file) stops start-up.
async fn open_ring(
    ring: &KeyRing,
    settings: &Settings,
    clients: &Clients,
    clock: &dyn Clock,
) -> anyhow::Result<(KeySet, bool)> {
    match load_ring(ring, settings, clients, clock.now()).await {
        Ok(keys) => Ok((keys, true)),
        Err(e @ (KeysError::Store(_) | KeysError::Contended)) => {
            tracing::warn!(error = %e, "key ring not readable yet: starting without keys, not ready");
            Ok((KeySet::empty(), false))
        }
        Err(e) => anyhow::bail!("signing keys in {}: {e}", ring.describe()),
    }
}

/// One attempt of [`open_ring`] (and of the watcher until it succeeds).
async fn load_ring(
    ring: &KeyRing,
    settings: &Settings,
    clients: &Clients,
    now: u64,
) -> Result<KeySet, KeysError> {
    let n = ring.import_dir(settings, now).await?;
    if n > 0 {
        tracing::info!(
            target: crate::services::telemetry::AUDIT,
            event = "keys_imported",
            outcome = "success",
            keys = n,
            "keys directory imported into the shared key ring"
        );
    }
    let policy = RingPolicy::new(settings, clients.audience_algs());
    ring.ensure(&policy, now).await?;
    ring.key_set(&policy, now).await
}

/// Every second: schedules rotation and creates missing keys (one instance
/// of the fleet wins each change), then installs the key set when what it
/// signs with or publishes changed. A ring that cannot be read keeps the
/// last good set; readiness reports it.
async fn watch_keys(
    ring: Arc<KeyRing>,
    settings: Settings,
    clients: Clients,
    tokens: Arc<TokenService>,
    clock: Arc<dyn Clock>,
    mut loaded: bool,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_error = String::new();
    loop {
        tick.tick().await;
        let now = clock.now();
        let policy = RingPolicy::new(&settings, clients.audience_algs());
        let mut errors = Vec::new();
        let result = if loaded {
            // A failed change (a read-only directory, a store that refuses
            // writes) must not freeze the set: revocations still apply.
            if let Err(e) = ring.maintain(&policy, now).await {
                errors.push(format!("key ring update: {e}"));
            }
            ring.key_set(&policy, now).await
        } else {
            load_ring(&ring, &settings, &clients, now).await
        };
        loaded |= result.is_ok();
        if let Some(e) = ring.health().error {
            errors.push(format!(
                "key ring unreadable, keys as last read stay in use: {e}"
            ));
        }
        match result {
            Ok(keys) => install(&tokens, keys, &policy),
            // Trust is never widened by a broken ring: the last good set stays.
            Err(e) => errors.push(format!("key set: {e}")),
        }
        let message = errors.join("; ");
        if message != last_error {
            if !message.is_empty() {
                tracing::error!(error = %message, "key ring trouble");
            }
            last_error = message;
        }
    }
}

/// Installs `keys` if they differ from the current set; audits each
/// algorithm whose signing key changed.
fn install(tokens: &TokenService, keys: KeySet, policy: &RingPolicy) {
    if !keys.differs_from(&tokens.keys()) {
        return;
    }
    let previous = tokens.replace_keys(keys);
    let installed = tokens.keys();
    for alg in &policy.in_use {
        let new = installed.active_for(*alg).map(|k| k.kid().to_owned());
        let old = previous.active_for(*alg).map(|k| k.kid().to_owned());
        if let (Some(new), true) = (&new, new != old) {
            tracing::info!(
                target: crate::services::telemetry::AUDIT,
                event = "key_activated",
                outcome = "success",
                kid = %new,
                alg = %alg,
                previous = old.as_deref().unwrap_or(""),
                "a new signing key is active"
            );
        }
    }
}

/// Runs the server on `AUTH_JIT_HOST:AUTH_JIT_PORT` until SIGTERM or SIGINT.
pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    let addr = settings.listen_addr();
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    settings.bound_to(local.port());
    let started = startup(settings).await?;
    tracing::info!(
        issuer = %started.state.settings.issuer,
        store = started.state.tokens.store().kind(),
        "auth-jit listening on http://{local}"
    );
    let result = application::serve(started.state.clone(), listener, shutdown_signal()).await;
    started.shutdown();
    result
}

/// Completes on SIGTERM (drain first) or SIGINT (Ctrl-C: stop now).
pub async fn shutdown_signal() -> Stop {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => Stop::Interrupt,
        () = terminate => Stop::Terminate,
    }
}
