//! The router: every API route is registered through utoipa's
//! `OpenApiRouter`, so nothing is served undocumented; then Swagger UI, the
//! landing page, JSON errors for whatever a layer answers, and the layers.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower::Service;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use super::error::ApiError;
use super::{health, oauth, token, wellknown};
use crate::web::application::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(OpenApi)]
#[openapi(
    info(
        title = "auth-jit",
        description = "Just-in-time, audience-scoped, optionally single-use tokens for backend APIs.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BasicAuth),
    tags(
        (name = "tokens", description = "Issue, verify and revoke JIT tokens"),
        (name = "oauth", description = "OAuth 2.0: client credentials, token exchange, introspection, revocation, metadata"),
        (name = "keys", description = "Public signing keys"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

struct BasicAuth;

impl Modify for BasicAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basicAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "client_id and client_secret from `auth-jit client add`",
                    ))
                    .build(),
            ),
        );
    }
}

/// Writes the parsers' rules (`token::types::patterns`) into the request
/// schemas, so the document states what the handlers enforce, from the
/// same constants.
struct Patterns;

impl Modify for Patterns {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use crate::token::types::patterns as p;
        use utoipa::openapi::{RefOr, Schema};
        let rules: &[(&str, &str, &str)] = &[
            ("IssueBody", "audience", p::AUDIENCE),
            ("IssueBody", "scope", p::SCOPE),
            ("BindBody", "method", p::METHOD),
            ("BindBody", "url", p::URL),
            ("VerifyBody", "audience", p::AUDIENCE),
            ("VerifyBody", "scope", p::SCOPE),
            ("VerifyBody", "method", p::METHOD),
            ("VerifyBody", "url", p::URL),
            ("RevokeByJti", "jti", p::JTI),
            ("TokenForm", "audience", p::AUDIENCE),
            ("TokenForm", "resource", p::AUDIENCE),
            ("TokenForm", "scope", p::SCOPE),
        ];
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for (schema, field, pattern) in rules {
            let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(*schema) else {
                continue;
            };
            if let Some(RefOr::T(Schema::Object(property))) = object.properties.get_mut(*field) {
                property.pattern = Some((*pattern).to_owned());
            }
        }
    }
}

/// The answers every route can give because of the layers in front of
/// it, documented once here instead of on each route: load shedding
/// (503), and for requests with a body its size and type (413, 415) and
/// the failure limit of client authentication (429).
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let probes = matches!(path.as_str(), "/api/health" | "/api/ready");
            for (post, operation) in [(false, item.get.as_mut()), (true, item.post.as_mut())] {
                let Some(operation) = operation else { continue };
                let responses = &mut operation.responses.responses;
                let mut add = |status: &str, description: &str| {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error(description).into());
                };
                if !probes {
                    add(
                        "503",
                        "temporarily_unavailable: at capacity or a store down; see Retry-After",
                    );
                }
                if post {
                    add(
                        "413",
                        "payload_too_large: the body exceeds AUTH_JIT_MAX_BODY_BYTES",
                    );
                    add("415", "invalid_request: wrong Content-Type");
                    add(
                        "429",
                        "slow_down: too many failed authentications or requests; see Retry-After",
                    );
                }
            }
        }
    }
}

/// The documented API routes and their OpenAPI document.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(token::issue))
        .routes(routes!(token::verify))
        .routes(routes!(token::revoke))
        .routes(routes!(wellknown::jwks))
        .routes(routes!(oauth::token))
        .routes(routes!(oauth::introspect))
        .routes(routes!(oauth::revoke))
        .routes(routes!(oauth::metadata))
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
        .split_for_parts();
    // After the routes: they bring the paths and schemas these amend.
    let mut openapi = openapi;
    Patterns.modify(&mut openapi);
    CommonResponses.modify(&mut openapi);
    (router, openapi)
}

/// The routes as the edge calls them: the router, with the body limit the
/// extractors read.
type Routes = <axum::extract::DefaultBodyLimit as tower::Layer<Router>>::Service;

/// The application as hyper serves it: the edge (see [`Edge`]) around the
/// routes. Cloning it costs two reference counts, and its future is named
/// by the compiler, not boxed: nothing is boxed per request before the
/// router.
#[derive(Clone)]
pub struct App {
    edge: std::sync::Arc<Edge>,
    routes: Routes,
}

impl App {
    /// Answers one request. A panic anywhere below is answered 500 in the
    /// one JSON shape: inside the routes by the edge (with the request id
    /// and the security headers, and counted), in the edge itself here.
    pub async fn handle<B>(self, request: Request<B>) -> Response
    where
        B: http_body::Body<Data = axum::body::Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        use futures_util::FutureExt;
        let answer = self.edge.handle(self.routes, request.map(Body::new));
        match std::panic::AssertUnwindSafe(answer).catch_unwind().await {
            Ok(response) => response,
            Err(_) => ApiError::Internal.into_response(),
        }
    }
}

/// The whole application: the routes, and around them the edge, the
/// one service every request passes. It wraps the router, not its routes:
/// `Router::layer` would wrap every route in a boxed service of its own,
/// one allocation and one boxed future per layer and request.
pub fn router(state: AppState) -> App {
    let (api, openapi) = api();
    // Spans are per-request work that only pays when someone reads them:
    // exported traces or the audit file (its events carry the request's
    // fields). Otherwise the span is at DEBUG and costs nothing unless
    // debug logging is on.
    let traced =
        !state.settings.otlp_endpoint.is_empty() || state.settings.audit_log_file.is_some();
    // Every route but Swagger UI's pages is a static path, so the route a
    // request takes is known from its path before routing: the span is
    // named at its start (the exporter fixes the name then) and the metric
    // labelled, with no per-route layer.
    let routes: RouteSet = openapi
        .paths
        .paths
        .keys()
        .cloned()
        .chain(["/".to_owned(), OPENAPI_JSON.to_owned()])
        .collect();
    debug_assert!(
        routes.iter().all(|route| !route.contains('{')),
        "a route with a path parameter would be labelled unmatched"
    );
    let edge = std::sync::Arc::new(Edge {
        in_flight: state.in_flight.clone(),
        draining: state.draining.clone(),
        timeout: Duration::from_secs(state.settings.request_timeout_secs),
        max_body: state.settings.max_body_bytes,
        traced,
        routes,
    });
    let body_limit = state.settings.max_body_bytes;
    let routes = api
        .route("/", get(landing))
        .merge(SwaggerUi::new("/api/docs").url(OPENAPI_JSON, openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    App {
        edge,
        routes: tower::Layer::layer(&axum::extract::DefaultBodyLimit::max(body_limit), routes),
    }
}

/// Where the OpenAPI document is served.
const OPENAPI_JSON: &str = "/api/openapi.json";

/// `X-Request-Id` for requests that bring none: 128 random bits in hex,
/// from the thread's CSPRNG (no system call per request, unlike a v4 UUID
/// from the OS).
fn new_request_id() -> Option<HeaderValue> {
    use crate::token::clock::{Random, ThreadRandom};
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut random = [0u8; 16];
    ThreadRandom.fill(&mut random).ok()?;
    let mut text = [0u8; 32];
    for (i, byte) in random.iter().enumerate() {
        text[2 * i] = HEX[usize::from(byte >> 4)];
        text[2 * i + 1] = HEX[usize::from(byte & 0x0f)];
    }
    HeaderValue::from_bytes(&text).ok()
}

/// One span per request, named by method and route (a documented path,
/// `/api/docs` for Swagger UI, or `unmatched`: never a raw URI, never
/// headers), child of the caller's trace if it sent `traceparent`. At
/// INFO when `traced`, else at DEBUG; a span nobody listens to is never
/// named.
fn request_span<B>(
    request: &Request<B>,
    traced: bool,
    route: &str,
    request_id: Option<&HeaderValue>,
) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    macro_rules! span {
        ($level:expr) => {
            tracing::span!(
                $level,
                "request",
                otel.name = tracing::field::Empty,
                otel.kind = "server",
                otel.status_code = tracing::field::Empty,
                http.request.method = tracing::field::Empty,
                http.route = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
                request_id = tracing::field::Empty,
                client_id = tracing::field::Empty,
                aud = tracing::field::Empty,
                outcome = tracing::field::Empty,
            )
        };
    }
    let span = if traced {
        span!(tracing::Level::INFO)
    } else {
        span!(tracing::Level::DEBUG)
    };
    if span.is_disabled() {
        return span;
    }
    let method = request.method().as_str();
    span.record("otel.name", format!("{method} {route}"));
    span.record("http.request.method", method);
    if route != UNMATCHED {
        span.record("http.route", route);
    }
    if let Some(id) = request_id.and_then(|v| v.to_str().ok()) {
        span.record("request_id", id);
    }
    let _ = span.set_parent(crate::services::telemetry::remote_context(
        request.headers(),
    ));
    span
}

/// The route label of a request that matched no route.
const UNMATCHED: &str = "unmatched";

/// What the edge needs: the admission semaphore, the drain flag, the
/// request limits, and the static routes with whether spans are exported.
struct Edge {
    in_flight: std::sync::Arc<tokio::sync::Semaphore>,
    draining: crate::web::server::Draining,
    timeout: Duration,
    max_body: usize,
    traced: bool,
    routes: RouteSet,
}

/// The static routes, looked up once per request: foldhash, not SipHash
/// (the keys are our own paths).
type RouteSet = std::collections::HashSet<String, foldhash::fast::RandomState>;

/// Everything a request passes on its way in and out, in one service, in
/// this order:
///
/// 1. `X-Request-Id`: the caller's, or 128 random bits; it names the
///    request's span and comes back on the response;
/// 2. the request span (see [`request_span`]), with the answer's status;
/// 3. load shedding: at most `AUTH_JIT_MAX_CONCURRENT_REQUESTS` requests
///    are handled at once; one more is answered 503 with `Retry-After` at
///    once instead of queueing (a queue only turns overload into latency
///    for everyone). Liveness and readiness are never shed: a load
///    balancer must see the truth;
/// 4. a declared body over `AUTH_JIT_MAX_BODY_BYTES` is refused (413)
///    unread; the extractors bound undeclared ones by the same limit;
/// 5. `AUTH_JIT_REQUEST_TIMEOUT_SECS` for the whole answer (408); a panic
///    in a handler is answered 500 `server_error`, like any other 5xx;
/// 6. one JSON error shape for the bare answers from inside (the
///    extractors' body limit, method not allowed);
/// 7. `Connection: close` on every response while the server drains;
/// 8. security headers, with a strict CSP on the pages;
/// 9. request duration by method, route and status.
impl Edge {
    /// The route a path takes: a static route, Swagger UI's pages, or
    /// [`UNMATCHED`].
    fn route<'a>(&'a self, path: &str) -> &'a str {
        match self.routes.get(path) {
            Some(route) => route.as_str(),
            None if is_page(path) => "/api/docs",
            None => UNMATCHED,
        }
    }

    async fn handle<S>(&self, inner: S, request: Request) -> Response
    where
        S: Service<Request, Response = Response, Error = Infallible>,
    {
        use tower::ServiceExt;
        use tracing::Instrument;
        let started = std::time::Instant::now();
        let method = method_label(request.method());
        let path = request.uri().path();
        let route = self.route(path);
        let page = is_page(path);
        let exempt = matches!(path, "/api/health" | "/api/ready");
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let request_id = request
            .headers()
            .get(&REQUEST_ID)
            .cloned()
            .or_else(new_request_id);
        let span = request_span(&request, self.traced, route, request_id.as_ref());
        let answer = async {
            match admit(&self.in_flight, exempt) {
                // Counted, not logged: a line per shed request would cost
                // the most when the server has the least to spare.
                Err(_) => {
                    crate::services::metrics::count(crate::services::metrics::SHED, &[], 1);
                    ApiError::Unavailable("the server is at capacity; try again".into())
                        .into_response()
                }
                Ok(_) if declared.is_some_and(|n| n > self.max_body as u64) => {
                    ApiError::from_status(StatusCode::PAYLOAD_TOO_LARGE).into_response()
                }
                Ok(permit) => {
                    use futures_util::FutureExt;
                    let call = std::panic::AssertUnwindSafe(inner.oneshot(request)).catch_unwind();
                    let response = match tokio::time::timeout(self.timeout, call).await {
                        Ok(Ok(Ok(response))) => json_errors(response),
                        Ok(Ok(Err(never))) => match never {},
                        // The panic message went to stderr through the hook;
                        // the caller learns only that it was our fault.
                        Ok(Err(_panic)) => ApiError::Internal.into_response(),
                        Err(_) => {
                            ApiError::from_status(StatusCode::REQUEST_TIMEOUT).into_response()
                        }
                    };
                    drop(permit);
                    if response.status().is_server_error() {
                        tracing::warn!(
                            status = response.status().as_u16(),
                            route,
                            "answered with a server error"
                        );
                    }
                    response
                }
            }
        };
        let mut response = if span.is_disabled() {
            answer.await
        } else {
            let response = answer.instrument(span.clone()).await;
            let status = response.status();
            span.record("http.response.status_code", i64::from(status.as_u16()));
            if status.is_server_error() {
                span.record("otel.status_code", "ERROR");
            }
            span.in_scope(|| {
                tracing::debug!(
                    target: crate::services::telemetry::ACCESS,
                    status = status.as_u16(),
                    latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                    "answered"
                );
            });
            response
        };
        let headers = response.headers_mut();
        // What follows adds up to six headers: one growth, not several.
        headers.reserve(6);
        if self.draining.is_set() {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(id) = request_id {
            headers.entry(REQUEST_ID).or_insert(id);
        }
        security_headers(headers, page);
        crate::services::metrics::http_duration(
            route,
            method,
            response.status(),
            started.elapsed(),
        );
        response
    }
}

/// Standard methods by name; anything else is one bounded label.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// A permit to run (none needed for the probes), or `Err` when at
/// capacity.
fn admit(
    in_flight: &std::sync::Arc<tokio::sync::Semaphore>,
    exempt: bool,
) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, tokio::sync::TryAcquireError> {
    if exempt {
        return Ok(None);
    }
    in_flight.clone().try_acquire_owned().map(Some)
}

/// The pages a browser renders: the landing page and Swagger UI.
fn is_page(path: &str) -> bool {
    path == "/" || path == "/api/docs" || path.starts_with("/api/docs/")
}

/// What Swagger UI needs and nothing more: its own scripts and styles (it
/// sets inline styles), data: images, calls to this origin; no framing.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self'; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'";

/// JSON answers are never rendered or framed.
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// Security headers on every answer; a strict CSP on the pages.
fn security_headers(headers: &mut axum::http::HeaderMap, page: bool) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(if page { PAGE_CSP } else { API_CSP }),
    );
}

async fn landing() -> Html<&'static str> {
    Html(include_str!("../../../static/index.html"))
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Layers (body limit, timeout) answer with a bare status; give every error
/// the one JSON shape.
fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let mut replaced = ApiError::from_status(status).into_response();
        *replaced.status_mut() = status;
        if let Some(allow) = response.headers().get(header::ALLOW) {
            replaced.headers_mut().insert(header::ALLOW, allow.clone());
        }
        return replaced;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An app of two routes around the real edge.
    fn app() -> App {
        let routes = Router::new()
            .route("/api/health", get(|| async { "ok" }))
            .route(
                "/boom",
                get(|| async {
                    if std::hint::black_box(true) {
                        panic!("a handler bug");
                    }
                    "unreachable"
                }),
            );
        App {
            edge: std::sync::Arc::new(Edge {
                in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(8)),
                draining: crate::web::server::Draining::default(),
                timeout: Duration::from_secs(5),
                max_body: 1024,
                traced: false,
                routes: ["/api/health".to_owned(), "/boom".to_owned()]
                    .into_iter()
                    .collect(),
            }),
            routes: tower::Layer::layer(&axum::extract::DefaultBodyLimit::max(1024), routes),
        }
    }

    async fn get_path(app: App, path: &str) -> Response {
        let request = Request::get(path)
            .header(REQUEST_ID, "caller-id-1")
            .body(Body::empty())
            .expect("a valid request");
        app.handle(request).await
    }

    #[tokio::test]
    async fn a_panicking_handler_gets_the_json_500_with_the_edge_headers() {
        let app = app();
        let response = get_path(app.clone(), "/boom").await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers();
        assert_eq!(headers[REQUEST_ID], "caller-id-1");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], API_CSP);
        assert!(headers[header::CONTENT_TYPE]
            .as_bytes()
            .starts_with(b"application/json"));
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .expect("a body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(body["error"], "server_error");
        assert!(!body.to_string().contains("a handler bug"));
        // The panic ended one request, not the service.
        let response = get_path(app, "/api/health").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[REQUEST_ID], "caller-id-1");
    }
}
