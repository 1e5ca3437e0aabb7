//! `GET /api/health` (the process is up) and `GET /api/ready` (it can do its
//! job: keys loaded, clients file readable, store answering).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::web::application::AppState;

/// Liveness only: no version, so a probe learns nothing to aim at.
#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness: answers while the process serves requests.
#[utoipa::path(get, path = "/api/health", tag = "health",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, ToSchema)]
pub struct Checks {
    #[schema(example = "ok")]
    pub keys: &'static str,
    #[schema(example = "ok")]
    pub clients: &'static str,
    #[schema(example = "ok")]
    pub store: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, or absent when not ready (then `error` is set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    /// `embedded` or `redis`.
    pub store_kind: &'static str,
    /// For Redis `single`, `cluster` or `sentinel`; else the kind.
    pub store_mode: &'static str,
    pub checks: Checks,
}

/// Readiness: 200 when the key ring was read at the last poll, the clients
/// file is readable and the store answers; 503 (`temporarily_unavailable`)
/// otherwise (`keys: stale`: the last good key set is in use).
#[utoipa::path(get, path = "/api/ready", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready; `checks` says why", body = Readiness),
    ))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let store = (state.tokens.store().kind(), state.tokens.store().mode());
    if state.draining.is_set() {
        // Shutting down: load balancers must stop sending now.
        let checks = Checks {
            keys: "ok",
            clients: "ok",
            store: "ok",
        };
        return not_ready(store, checks, "draining: this instance is shutting down");
    }
    let store_ok = state.tokens.store().ping().await.is_ok();
    let clients_ok = state.clients.is_healthy();
    // The last good key set still signs, but a ring that cannot be read
    // may hide a revocation: not ready until it reads again.
    let keys_ok = state.keys.health().error.is_none() && state.tokens.keys().active().is_some();
    let checks = Checks {
        keys: if keys_ok { "ok" } else { "stale" },
        clients: if clients_ok { "ok" } else { "unreadable" },
        store: if store_ok { "ok" } else { "unreachable" },
    };
    if !(store_ok && clients_ok && keys_ok) {
        return not_ready(store, checks, "not ready: see checks");
    }
    Json(Readiness {
        status: Some("ready"),
        error: None,
        error_description: None,
        store_kind: store.0,
        store_mode: store.1,
        checks,
    })
    .into_response()
}

/// 503 `temporarily_unavailable` with `Retry-After` and the checks.
fn not_ready(
    (store_kind, store_mode): (&'static str, &'static str),
    checks: Checks,
    why: &str,
) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::RETRY_AFTER, "1")],
        Json(Readiness {
            status: None,
            error: Some("temporarily_unavailable"),
            error_description: Some(why.to_owned()),
            store_kind,
            store_mode,
            checks,
        }),
    )
        .into_response()
}

/// Prometheus metrics, text exposition format.
///
/// Tokens issued and denied (by client, audience, reason), verifications by
/// outcome, client authentication failures, request durations by route,
/// store latency and errors, and the active signing key's age.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", body = String,
        content_type = "text/plain; version=0.0.4")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Some(active) = state
        .tokens
        .keys()
        .info()
        .iter()
        .find(|k| k.state == crate::services::keys::KeyState::Active)
    {
        let age = state.tokens.now().saturating_sub(active.not_before);
        metrics::gauge!(crate::services::metrics::KEY_AGE, "kid" => active.kid.clone())
            .set(age as f64);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
