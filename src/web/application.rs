//! Application state and the server loop. `serve` takes its listener and its
//! shutdown signal, so tests bind port 0 and stop it deterministically.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::services::clients::Clients;
use crate::services::ratelimit::RateLimits;
use crate::services::tokens::TokenService;
use crate::settings::Settings;
use crate::web::server::{Draining, Limits, Stop};

/// What every request shares, behind one `Arc`: a request clones the
/// state once per handler, and one reference count (instead of one per
/// field) is what two cores then contend for.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The handles inside [`AppState`].
pub struct Shared {
    pub settings: Arc<Settings>,
    pub clients: Clients,
    /// Client authentication, every method, behind the failure limit.
    pub auth: Arc<crate::services::clients::auth::Authenticator>,
    pub tokens: Arc<TokenService>,
    /// The key ring, for readiness (the key set itself is in `tokens`).
    pub keys: Arc<crate::services::keys::KeyRing>,
    pub rate_limits: Arc<RateLimits>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Set on SIGTERM: readiness fails, responses close their connections.
    pub draining: Draining,
    /// Admits at most `AUTH_JIT_MAX_CONCURRENT_REQUESTS` at once.
    pub in_flight: Arc<tokio::sync::Semaphore>,
}

/// Serves until `shutdown` completes, then drains and stops as
/// [`server`](crate::web::server) describes.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = Stop> + Send + 'static,
) -> anyhow::Result<()> {
    let settings = Arc::clone(&state.settings);
    let draining = state.draining.clone();
    let app = crate::web::api::router::router(state);
    let limits = Limits {
        max_connections: settings.max_connections,
        header_timeout: Duration::from_secs(settings.header_timeout_secs),
        max_header_bytes: settings.max_header_bytes,
        drain: Duration::from_secs(settings.drain_secs),
        shutdown_timeout: Duration::from_secs(settings.shutdown_timeout_secs),
    };
    crate::web::server::serve(listener, app, limits, draining, shutdown).await
}
