//! protected-api: an axum API that accepts auth-jit tokens, in the few lines
//! `auth-jit-verifier` takes.
//!
//! ```text
//! AUTH_JIT_URL=http://127.0.0.1:8000 PROTECTED_API_AUDIENCE=orders \
//! PROTECTED_API_CLIENT_ID=orders PROTECTED_API_CLIENT_SECRET=... \
//!   cargo run --release -p auth-jit-verifier --example protected-api
//! ```
//!
//! - `GET /health`: open.
//! - `GET /orders`: a token for the audience with scope `orders:read`; 200
//!   with the token's `sub`.
//! - `POST /pay`: a single-use token, consumed at the issuer; 200 once.
//! - `GET /txn` (when `PROTECTED_API_TRUST_DOMAIN` is set): exactly one
//!   `Txn-Token` header for that trust domain; 200 with its `txn`, `sub`
//!   and `scope`. With `PROTECTED_API_DOWNSTREAM` (another service's base
//!   URL) it passes the same Txn-Token on to that service's `GET /txn` and
//!   includes the answer: a chain of services, each checking the token.
//!
//! `PROTECTED_API_ADDR` [127.0.0.1:8001] is where it listens, and the origin
//! request-bound tokens are checked against.

use std::error::Error;
use std::process::ExitCode;

use auth_jit_verifier::{Token, TxnToken, Verifier, TXN_TOKEN_HEADER};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("protected-api: {e}");
            ExitCode::from(2)
        }
    }
}

fn setting(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is required"))
}

async fn run() -> Result<(), Box<dyn Error>> {
    let addr = std::env::var("PROTECTED_API_ADDR").unwrap_or_else(|_| "127.0.0.1:8001".into());
    let mut verifier =
        Verifier::builder(setting("AUTH_JIT_URL")?, setting("PROTECTED_API_AUDIENCE")?)
            .public_origin(format!("http://{addr}"));
    if let (Ok(id), Ok(secret)) = (
        std::env::var("PROTECTED_API_CLIENT_ID"),
        std::env::var("PROTECTED_API_CLIENT_SECRET"),
    ) {
        verifier = verifier.client_credentials(id, secret);
    }
    let verifier = verifier.build()?;
    // Warm the key cache; if the issuer is not up yet, the first request
    // fetches.
    if let Err(e) = verifier.refresh().await {
        eprintln!("protected-api: the issuer's keys are not loaded yet: {e}");
    }

    let mut app = Router::new()
        .route("/health", get(health))
        .route(
            "/orders",
            get(orders).route_layer(verifier.require("orders:read")?),
        )
        .route(
            "/pay",
            post(pay).route_layer(verifier.require_single_use("")?),
        );
    if let Ok(domain) = std::env::var("PROTECTED_API_TRUST_DOMAIN") {
        let next = Downstream {
            url: std::env::var("PROTECTED_API_DOWNSTREAM").ok(),
            http: reqwest::Client::new(),
            name: addr.clone(),
        };
        app = app.route(
            "/txn",
            get(txn)
                .route_layer(verifier.require_txn(&domain, "")?)
                .with_state(next),
        );
    }

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("protected-api: listening on {addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn orders(token: Token) -> Json<Value> {
    Json(json!({"sub": token.sub, "orders": [{"id": 1, "total": "12.50"}]}))
}

async fn pay(token: Token) -> Json<Value> {
    Json(json!({"paid": true, "sub": token.sub, "jti": token.jti}))
}

/// The next service of the chain, if any.
#[derive(Clone)]
struct Downstream {
    url: Option<String>,
    http: reqwest::Client,
    name: String,
}

async fn txn(State(next): State<Downstream>, token: TxnToken) -> Result<Json<Value>, StatusCode> {
    let downstream = match &next.url {
        None => Value::Null,
        // The same Txn-Token, unmodified, in the Txn-Token header.
        Some(url) => {
            let answer = next
                .http
                .get(format!("{}/txn", url.trim_end_matches('/')))
                .header(TXN_TOKEN_HEADER, token.token())
                .send()
                .await
                .map_err(|_| StatusCode::BAD_GATEWAY)?;
            if !answer.status().is_success() {
                return Err(StatusCode::BAD_GATEWAY);
            }
            let body = answer.bytes().await.map_err(|_| StatusCode::BAD_GATEWAY)?;
            serde_json::from_slice(&body).map_err(|_| StatusCode::BAD_GATEWAY)?
        }
    };
    Ok(Json(json!({
        "service": next.name,
        "txn": token.txn,
        "sub": token.sub,
        "scope": token.scope,
        "req_wl": token.req_wl,
        "downstream": downstream,
    })))
}
