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

/// Cheap handles shared by every request.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub clients: Clients,
    pub tokens: Arc<TokenService>,
    /// The key ring, for readiness (the key set itself is in `tokens`).
    pub keys: Arc<crate::services::keys::KeyRing>,
    pub rate_limits: Arc<RateLimits>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

/// Serves until `shutdown` completes, then stops accepting and lets
/// in-flight requests finish for at most `AUTH_JIT_SHUTDOWN_TIMEOUT_SECS`.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let grace = Duration::from_secs(state.settings.shutdown_timeout_secs);
    let app = crate::web::api::router::router(state);
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, draining in-flight requests");
        let _ = stopping_tx.send(());
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(signal);
    let deadline = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result?,
        () = deadline => tracing::warn!(?grace, "drain timed out; dropping remaining connections"),
    }
    Ok(())
}
