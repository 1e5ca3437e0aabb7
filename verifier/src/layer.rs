//! Protecting axum routes: [`RequireToken`] (a tower [`Layer`]) checks the
//! bearer token of every request with a [`Verifier`], and the [`Token`]
//! extractor hands the verified claims to the handler. Refusals follow RFC
//! 6750 §3: 401 with `WWW-Authenticate: Bearer error="invalid_token"`, 403
//! with `error="insufficient_scope"`, 400 for a malformed `Authorization`
//! header, and 503 when the issuer is needed and cannot answer. Bodies use
//! the issuer's JSON error shape (`error`, `error_description`).
//!
//! [`Verifier::require_txn`] makes the same layer check the `Txn-Token`
//! header instead (Transaction Tokens), and [`TxnToken`] extracts it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HOST, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use crate::remote::{Refusal, RequestTarget, Requirement, Verified, Verifier};
use crate::txn::TxnClaims;
use crate::types::{Audience, ParseError, Scope};

impl Verifier {
    /// A layer that lets a request through only with a valid token carrying
    /// every scope in `scope` (space separated; empty for none).
    pub fn require(&self, scope: &str) -> Result<RequireToken, ParseError> {
        Ok(RequireToken {
            verifier: self.clone(),
            check: Arc::new(Check::Access(Requirement {
                scope: Scope::parse(scope)?,
                single_use: false,
            })),
        })
    }

    /// A layer that accepts only single-use tokens, each once: the issuer
    /// consumes the token before the handler runs.
    pub fn require_single_use(&self, scope: &str) -> Result<RequireToken, ParseError> {
        Ok(RequireToken {
            verifier: self.clone(),
            check: Arc::new(Check::Access(Requirement {
                scope: Scope::parse(scope)?,
                single_use: true,
            })),
        })
    }

    /// A layer that lets a request through only with exactly one valid
    /// `Txn-Token` header (a Transaction Token of this issuer for
    /// `trust_domain`, carrying every scope in `scope`). The token is
    /// checked locally: Txn-Tokens are short-lived and never single-use.
    pub fn require_txn(&self, trust_domain: &str, scope: &str) -> Result<RequireToken, ParseError> {
        Ok(RequireToken {
            verifier: self.clone(),
            check: Arc::new(Check::Txn {
                trust_domain: Audience::parse(trust_domain)?,
                scope: Scope::parse(scope)?,
            }),
        })
    }
}

/// The tower layer of [`Verifier::require`], [`Verifier::require_single_use`]
/// and [`Verifier::require_txn`].
#[derive(Clone, Debug)]
pub struct RequireToken {
    verifier: Verifier,
    /// Shared by every request: cloned as a reference count.
    check: Arc<Check>,
}

#[derive(Clone, Debug)]
enum Check {
    Access(Requirement),
    Txn {
        trust_domain: Audience,
        scope: Scope,
    },
}

impl<S> Layer<S> for RequireToken {
    type Service = RequireTokenService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireTokenService {
            layer: self.clone(),
            inner,
        }
    }
}

/// The service [`RequireToken`] wraps around a route.
#[derive(Clone, Debug)]
pub struct RequireTokenService<S> {
    layer: RequireToken,
    inner: S,
}

impl<S> Service<Request<Body>> for RequireTokenService<S>
where
    S: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // The clone that was made ready serves this request; the fresh
        // clone waits for the next poll_ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        // What the check needs, owned: a request body is not `Sync`, so the
        // future may not borrow the request across an await.
        // The request target only matters to access tokens (binding).
        let (token, target) = match layer.check.as_ref() {
            Check::Access(_) => (
                bearer_token(request.headers()).map(str::to_owned),
                layer
                    .request_url(&request)
                    .map(|url| (request.method().as_str().to_owned(), url)),
            ),
            Check::Txn { .. } => (txn_token_header(request.headers()).map(str::to_owned), None),
        };
        Box::pin(async move {
            let token = match token {
                Ok(token) => token,
                Err(refusal) => return Ok(refusal.into_response()),
            };
            let verifier = &layer.verifier;
            match layer.check.as_ref() {
                Check::Access(requirement) => {
                    let target = target.as_ref().map(|(method, url)| RequestTarget {
                        method: method.as_str(),
                        url: url.as_str(),
                    });
                    match verifier.verify(&token, requirement, target).await {
                        Ok(verified) => request.extensions_mut().insert(verified),
                        Err(refusal) => return Ok(refusal.into_response()),
                    };
                }
                Check::Txn {
                    trust_domain,
                    scope,
                } => match verifier.verify_txn(&token, trust_domain, scope).await {
                    Ok(claims) => {
                        request.extensions_mut().insert(TxnToken { claims, token });
                    }
                    Err(refusal) => return Ok(refusal.into_response()),
                },
            }
            inner.call(request).await
        })
    }
}

impl RequireToken {
    /// The URL the caller used, without query: the configured origin (or
    /// `http://` and the request's authority or `Host`) and the path as
    /// the caller sent it (before any `Router::nest` stripped a prefix).
    fn request_url(&self, request: &Request<Body>) -> Option<String> {
        let uri = request
            .extensions()
            .get::<OriginalUri>()
            .map_or(request.uri(), |original| &original.0);
        let origin = match self.verifier.public_origin() {
            Some(origin) => origin.to_owned(),
            None => {
                let authority = match uri.authority() {
                    Some(authority) => authority.as_str(),
                    None => request.headers().get(HOST)?.to_str().ok()?,
                };
                format!("http://{authority}")
            }
        };
        Some(format!("{origin}{}", uri.path()))
    }
}

/// The `Txn-Token` request header (draft-ietf-oauth-transaction-tokens):
/// exactly one, holding a compact JWS and nothing else.
pub fn txn_token_header(headers: &HeaderMap) -> Result<&str, Refusal> {
    let mut values = headers.get_all(TXN_TOKEN_HEADER).iter();
    let Some(value) = values.next() else {
        return Err(Refusal::InvalidToken(
            "this request needs a Txn-Token header".into(),
        ));
    };
    if values.next().is_some() {
        return Err(Refusal::InvalidRequest("send exactly one Txn-Token header"));
    }
    let token = value
        .to_str()
        .ok()
        .filter(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .ok_or(Refusal::InvalidRequest(
            "the Txn-Token header holds a compact JWS and nothing else",
        ))?;
    Ok(token)
}

/// The name of the header that carries a Txn-Token between workloads.
pub const TXN_TOKEN_HEADER: &str = "txn-token";

/// The verified Txn-Token of a request behind [`Verifier::require_txn`]:
/// its claims, and the token itself, to pass on to the next workload in the
/// `Txn-Token` header. Without the layer the request is refused (401).
#[derive(Clone)]
pub struct TxnToken {
    /// The verified claims.
    pub claims: TxnClaims,
    token: String,
}

impl TxnToken {
    /// The token, for the `Txn-Token` header of a downstream call. Never
    /// log it: it is a credential.
    pub fn token(&self) -> &str {
        &self.token
    }
}

impl std::fmt::Debug for TxnToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnToken")
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for TxnToken {
    type Target = TxnClaims;
    fn deref(&self) -> &TxnClaims {
        &self.claims
    }
}

impl<S: Send + Sync> FromRequestParts<S> for TxnToken {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Refusal> {
        parts
            .extensions
            .get::<TxnToken>()
            .cloned()
            .ok_or_else(|| Refusal::InvalidToken("this route checks no Txn-Token".into()))
    }
}

/// The token of `Authorization: Bearer TOKEN` (RFC 6750 §2.1): exactly one
/// such header, the `b64token` syntax, nothing else.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, Refusal> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Refusal::Missing);
    };
    if values.next().is_some() {
        return Err(Refusal::InvalidRequest(
            "send exactly one Authorization header",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| Refusal::InvalidRequest("the Authorization header is not ASCII"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(Refusal::InvalidRequest("use Authorization: Bearer TOKEN"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme is no bearer token (RFC 6750 §3.1: no error code).
        return Err(Refusal::Missing);
    }
    let token = token.trim_start_matches(' ');
    let body = token.trim_end_matches('=');
    let b64token = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if !b64token {
        return Err(Refusal::InvalidRequest(
            "the bearer token has characters a token never has",
        ));
    }
    Ok(token)
}

/// The verified token of a request behind [`RequireToken`]. Without the
/// layer there is nothing to extract, and the request is refused (401):
/// a route that forgot the layer fails closed.
#[derive(Debug, Clone)]
pub struct Token(pub Verified);

impl std::ops::Deref for Token {
    type Target = Verified;
    fn deref(&self) -> &Verified {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Token {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Refusal> {
        parts
            .extensions
            .get::<Verified>()
            .cloned()
            .map(Token)
            .ok_or_else(|| Refusal::InvalidToken("this route checks no token".into()))
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, challenge, error) = match &self {
            Refusal::Missing => (
                StatusCode::UNAUTHORIZED,
                "Bearer".to_owned(),
                "invalid_token",
            ),
            Refusal::InvalidRequest(_) => (
                StatusCode::BAD_REQUEST,
                r#"Bearer error="invalid_request""#.to_owned(),
                "invalid_request",
            ),
            Refusal::InvalidToken(text) => (
                StatusCode::UNAUTHORIZED,
                format!(
                    r#"Bearer error="invalid_token", error_description="{}""#,
                    quoted(text)
                ),
                "invalid_token",
            ),
            Refusal::InsufficientScope(scope) => (
                StatusCode::FORBIDDEN,
                format!(
                    r#"Bearer error="insufficient_scope", scope="{}""#,
                    quoted(&scope.to_string())
                ),
                "insufficient_scope",
            ),
            Refusal::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                String::new(),
                "temporarily_unavailable",
            ),
        };
        let body = serde_json::json!({"error": error, "error_description": self.to_string()});
        let mut response = Response::new(Body::from(body.to_string()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            if !challenge.is_empty() {
                headers.insert(WWW_AUTHENTICATE, value);
            }
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert("retry-after", HeaderValue::from_static("2"));
        }
        response
    }
}

/// Text inside a quoted-string: printable ASCII without `"` and `\`.
fn quoted(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .filter(|c| *c != '"' && *c != '\\')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(AUTHORIZATION, v.parse().expect("header"));
        }
        map
    }

    #[test]
    fn only_one_well_formed_bearer_header_is_read() {
        assert_eq!(
            bearer_token(&headers(&["Bearer abc.def-_~+/="])),
            Ok("abc.def-_~+/=")
        );
        assert_eq!(bearer_token(&headers(&["bearer  abc"])), Ok("abc"));
        assert_eq!(bearer_token(&headers(&[])), Err(Refusal::Missing));
        // Another scheme is no bearer token: a plain challenge.
        assert_eq!(
            bearer_token(&headers(&["Basic abc"])),
            Err(Refusal::Missing)
        );
        for bad in [
            &["Bearer"][..],
            &["Bearer "],
            &["Bearer a b"],
            &["Bearer a", "Bearer b"],
        ] {
            assert!(
                matches!(bearer_token(&headers(bad)), Err(Refusal::InvalidRequest(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn refusals_carry_rfc_6750_challenges() {
        let challenge = |r: Refusal| {
            let response = r.into_response();
            (
                response.status().as_u16(),
                response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
            )
        };
        assert_eq!(challenge(Refusal::Missing), (401, "Bearer".into()));
        let (status, value) = challenge(Refusal::InvalidToken("the token has \"expired\"".into()));
        assert_eq!(status, 401);
        assert!(
            value.starts_with(r#"Bearer error="invalid_token""#),
            "{value}"
        );
        assert!(!value.contains(r#"\""#));
        let scope = Scope::parse("orders:read").expect("scope");
        assert_eq!(
            challenge(Refusal::InsufficientScope(scope)),
            (
                403,
                r#"Bearer error="insufficient_scope", scope="orders:read""#.into()
            )
        );
        assert_eq!(challenge(Refusal::Unavailable("down")).0, 503);
    }
}
