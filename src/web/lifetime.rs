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

use crate::services::clients::Clients;
use crate::services::keys::{create_private_dir, KeySet};
use crate::services::ratelimit::RateLimits;
use crate::services::store::StoreHandle;
use crate::services::tokens::{ServiceRules, TokenService};
use crate::settings::Settings;
use crate::token::clock::{Clock, SystemClock, SystemRandom};
use crate::token::policy::TtlLimits;
use crate::token::verify::Rules;
use crate::web::application::{self, AppState};

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
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let keys = Arc::new(KeySet::load_or_create(&settings, clock.now())?);
    tracing::info!(kid = keys.active().kid(), alg = %keys.active().alg(), keys = keys.info().len(), "signing keys loaded");
    let clients = Clients::open(&settings.clients_file)?;
    let store = StoreHandle::open(&settings).await?;
    if let Err(e) = store.ping().await {
        // Not fatal: the service starts not-ready and recovers by itself.
        tracing::warn!(store = store.kind(), error = %e, "store not reachable yet");
    }
    let tokens = Arc::new(TokenService::new(
        keys,
        clients.clone(),
        store.clone(),
        clock.clone(),
        Arc::new(SystemRandom::new()),
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
        },
    ));
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
    // Keys: pick up `auth-jit keys rotate` (and a next key's time coming)
    // without a restart.
    let key_settings = settings.clone();
    let key_service = Arc::clone(&tokens);
    let key_clock = clock.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_error = String::new();
        loop {
            tick.tick().await;
            let settings = key_settings.clone();
            let now = key_clock.now();
            let loaded = tokio::task::spawn_blocking(move || KeySet::load(&settings, now)).await;
            match loaded {
                Ok(Ok(keys)) => {
                    last_error.clear();
                    let current = key_service.keys();
                    if keys.differs_from(&current) {
                        let active = keys.active().kid().to_owned();
                        let previous = key_service.replace_keys(keys);
                        if previous.active().kid() != active {
                            tracing::info!(
                                target: crate::services::telemetry::AUDIT,
                                event = "key_activated",
                                outcome = "success",
                                kid = %active,
                                previous = previous.active().kid(),
                                "a new signing key is active"
                            );
                        } else {
                            tracing::info!("published signing keys changed");
                        }
                    }
                }
                // A broken file keeps the current keys (trust is not widened).
                Ok(Err(e)) => {
                    let message = e.to_string();
                    if message != last_error {
                        tracing::error!(error = %message, "keys directory unreadable; keeping the loaded keys");
                        last_error = message;
                    }
                }
                Err(_) => {}
            }
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
    Ok(Started {
        state: AppState {
            settings: Arc::new(settings),
            clients,
            tokens,
            rate_limits,
            metrics: crate::services::metrics::install(),
        },
        tasks,
    })
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

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
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
        () = ctrl_c => {},
        () = terminate => {},
    }
}
