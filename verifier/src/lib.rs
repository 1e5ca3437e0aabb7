//! Verify auth-jit access tokens in the
//! API that receives them, with the issuer's own rules.
//!
//! The issuer's verify endpoint runs [`rules::verify`] too: header
//! strictness (only `alg`, `typ: at+jwt` and `kid`; `crit`, `jku`, `x5u`,
//! `jwk`, … refused), the algorithm pinned by the key, `iss` exactly,
//! `aud`, time claims with leeway, exact JSON types, scopes and request
//! binding. What receiving APIs check is what the issuer checks.
//!
//! With the default features, [`Verifier`] fetches and caches the issuer's
//! keys (RFC 8414 discovery, `max-age` and `ETag`, one refetch per interval
//! for an unknown `kid`, stale-if-error), sends single-use and request-bound
//! tokens to the issuer (only it can consume them), and [`RequireToken`]
//! protects axum routes:
//!
//! ```no_run
//! use axum::routing::{get, post};
//! use axum::Router;
//! use auth_jit_verifier::{Token, Verifier};
//!
//! async fn orders(token: Token) -> String {
//!     format!("orders of {}", token.claims().sub)
//! }
//!
//! async fn pay(token: Token) -> String {
//!     format!("paid once for {}", token.sub)
//! }
//!
//! fn app() -> Result<Router, Box<dyn std::error::Error>> {
//!     let verifier = Verifier::builder("https://auth.internal", "orders")
//!         // This API's own client at the issuer, for single-use tokens.
//!         .client_credentials("orders", std::env::var("ORDERS_SECRET")?)
//!         .build()?;
//!     Ok(Router::new()
//!         .route("/orders", get(orders).route_layer(verifier.require("orders:read")?))
//!         .route("/pay", post(pay).route_layer(verifier.require_single_use("")?)))
//! }
//! ```
//!
//! A request without a token gets `401` with `WWW-Authenticate: Bearer`,
//! a bad token `401` with `error="invalid_token"`, a token without the
//! route's scope `403` with `error="insufficient_scope"`.
//!
//! Without default features the crate is the rules alone ([`rules`],
//! [`jws`], [`jwks::KeySet`]): no HTTP, no runtime.

pub mod binding;
pub mod claims;
pub mod jwks;
pub mod jws;
pub mod jwt;
pub mod rules;
pub mod txn;
pub mod types;

#[cfg(feature = "axum")]
mod layer;
#[cfg(feature = "remote")]
mod remote;
#[cfg(test)]
mod testkit;

pub use claims::{AccessClaims, Actor};
#[cfg(feature = "axum")]
pub use layer::{
    bearer_token, txn_token_header, RequireToken, RequireTokenService, Token, TxnToken,
    TXN_TOKEN_HEADER,
};
#[cfg(feature = "remote")]
pub use remote::{
    BuildError, Builder, RefreshError, Refusal, RequestTarget, Requirement, Stats, Verified,
    Verifier,
};
pub use rules::{verify, Expectation, KeyLookup, Rules, VerifyError};
pub use txn::{verify_txn, verify_txn_jws, TxnClaims, TxnExpectation};
pub use types::{Audience, ParseError, Scope, ScopeToken};
