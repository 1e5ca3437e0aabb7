//! The ceilings of `make bench`: bare axum handlers on the project's own
//! axum and tokio, with no layer at all. What auth-jit adds is measured
//! against these in the same run.
//!
//! - `GET /`: the HTTP ceiling.
//! - `GET /health`: the limit of `/api/health`: the same answer (JSON body,
//!   request id, the four security headers), built by hand, so the bytes
//!   on the wire cost the client as much as ours do.
//! - `POST /echo`: a JSON body in, the same JSON out.
//! - `POST /sign`: the limit of issuance, "an HTTP POST plus one
//!   signature": a JSON body in, claims serialized, one Ed25519 signature
//!   with a parsed key, a compact JWS out. What a home-made JWT signer does,
//!   with no client authentication, policy, audit or metrics.
//! - `POST /verify`: the limit of verification: a JSON body with a token
//!   in, one Ed25519 verification, the payload parsed and returned. It
//!   checks signatures of the public key in `REFERENCE_VERIFY_X` (the
//!   base64url `x` of an Ed25519 JWK: `make bench` passes auth-jit's), and
//!   answers 404 without it.
//!
//!     cargo run --release --example reference   # prints "listening on http://ADDR"

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{self as sig, Ed25519KeyPair, ParsedPublicKey};
use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

struct Keys {
    signing: Ed25519KeyPair,
    /// The encoded protected header and its dot, as long as ours.
    header: String,
    verifying: Option<ParsedPublicKey>,
}

#[derive(Deserialize)]
struct IssueRequest {
    audience: String,
    scope: Option<String>,
}

/// The claims of one of our access tokens, minus nothing but the work of
/// choosing them.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    iat: u64,
    nbf: u64,
    jti: String,
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

#[derive(Serialize)]
struct Issued {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
}

#[derive(Deserialize)]
struct VerifyRequest {
    token: String,
}

/// `{"status":"ok"}` with the headers auth-jit sends on every JSON answer,
/// built as cheaply as it can be: a limit must not cost more than ours.
async fn health() -> impl IntoResponse {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut random = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut random);
    let mut id = [0u8; 32];
    for (i, byte) in random.iter().enumerate() {
        id[2 * i] = HEX[usize::from(byte >> 4)];
        id[2 * i + 1] = HEX[usize::from(byte & 0x0f)];
    }
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
        (
            HeaderName::from_static("x-request-id"),
            HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("0")),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ),
    ];
    (headers, r#"{"status":"ok"}"#)
}

async fn sign(
    State(keys): State<Arc<Keys>>,
    Json(req): Json<IssueRequest>,
) -> Result<Json<Issued>, StatusCode> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
        .as_secs();
    let mut jti = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut jti);
    let claims = Claims {
        iss: "http://auth-jit.bench",
        sub: "bench-caller",
        aud: &req.audience,
        exp: now + 60,
        iat: now,
        nbf: now,
        jti: URL_SAFE_NO_PAD.encode(jti),
        client_id: "bench-caller",
        scope: req.scope.as_deref(),
    };
    let payload = serde_json::to_vec(&claims).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let mut token = String::with_capacity(512);
    token.push_str(&keys.header);
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let signature = keys.signing.sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
    Ok(Json(Issued {
        access_token: token,
        token_type: "Bearer",
        expires_in: 60,
    }))
}

async fn verify(
    State(keys): State<Arc<Keys>>,
    Json(req): Json<VerifyRequest>,
) -> Result<Json<serde_json::Value>, StatusCode> {
    let key = keys.verifying.as_ref().ok_or(StatusCode::NOT_FOUND)?;
    let (input, signature) = req.token.rsplit_once('.').ok_or(StatusCode::BAD_REQUEST)?;
    let (_, payload) = input.split_once('.').ok_or(StatusCode::BAD_REQUEST)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| StatusCode::BAD_REQUEST)?;
    key.verify_sig(input.as_bytes(), &signature)
        .map_err(|_| StatusCode::UNAUTHORIZED)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| StatusCode::BAD_REQUEST)?;
    let claims = serde_json::from_slice(&payload).map_err(|_| StatusCode::BAD_REQUEST)?;
    Ok(Json(claims))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let signing = Ed25519KeyPair::generate()
        .map_err(|_| anyhow::anyhow!("could not generate an Ed25519 key"))?;
    let verifying = match std::env::var("REFERENCE_VERIFY_X") {
        Ok(x) => {
            let x = URL_SAFE_NO_PAD.decode(x.trim())?;
            Some(
                ParsedPublicKey::new(&sig::ED25519, &x)
                    .map_err(|_| anyhow::anyhow!("REFERENCE_VERIFY_X is not an Ed25519 key"))?,
            )
        }
        Err(_) => None,
    };
    // A kid as long as an RFC 7638 thumbprint (43 characters).
    let header = format!(
        "{}.",
        URL_SAFE_NO_PAD.encode(format!(
            r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{}"}}"#,
            "k".repeat(43)
        ))
    );
    let keys = Arc::new(Keys {
        signing,
        header,
        verifying,
    });
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/health", get(health))
        .route(
            "/echo",
            post(|Json(body): Json<serde_json::Value>| async move { Json(body) }),
        )
        .route("/sign", post(sign))
        .route("/verify", post(verify))
        .with_state(keys);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
