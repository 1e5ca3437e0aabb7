//! The HTTP ceiling of `make bench`: bare axum handlers on the project's
//! own axum and tokio, with no layer at all. What auth-jit adds is measured
//! against these in the same run.
//!
//!     cargo run --release --example reference   # prints "listening on http://ADDR"

use axum::routing::{get, post};
use axum::{Json, Router};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let app = Router::new().route("/", get(|| async { "ok" })).route(
        "/echo",
        post(|Json(body): Json<serde_json::Value>| async move { Json(body) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
