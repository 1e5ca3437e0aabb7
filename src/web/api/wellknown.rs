//! `GET /.well-known/jwks.json`: our public signing keys (RFC 7517).

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::web::application::AppState;

/// The public keys that verify our tokens.
///
/// Each key has `kid` (its RFC 7638 thumbprint), `alg` and `use: sig`. Keep
/// a cached copy for at most the `Cache-Control` max-age
/// (`AUTH_JIT_JWKS_MAX_AGE_SECS`): every key is published longer than that
/// before it signs. Revalidate with `If-None-Match`: an unchanged set
/// answers 304.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "keys",
    params(("If-None-Match" = Option<String>, Header, description = "The ETag of a cached copy")),
    responses(
        (status = 200, description = "JWK Set", body = Object, content_type = "application/json",
            headers(("ETag" = String, description = "Entity tag of this key set"),
                    ("Cache-Control" = String, description = "public, max-age=AUTH_JIT_JWKS_MAX_AGE_SECS")),
            example = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "...", "kid": "...", "alg": "EdDSA", "use": "sig"}]})),
        (status = 304, description = "The cached copy named by If-None-Match is current"),
    )
)]
pub async fn jwks(State(state): State<AppState>, request: HeaderMap) -> Response {
    let keys = state.tokens.keys();
    let jwks = keys.jwks();
    let cache = format!("public, max-age={}", state.settings.jwks_max_age_secs);
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&cache) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    if let Ok(value) = HeaderValue::from_str(&jwks.etag) {
        headers.insert(header::ETAG, value);
    }
    let matches = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == jwks.etag || tag == "*");
    if matches {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (headers, jwks.body.clone()).into_response()
}
