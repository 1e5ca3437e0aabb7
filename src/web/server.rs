//! The HTTP/1.1 server loop: connection limits, slow-client timeouts and a
//! lossless drain, which `axum::serve` does not offer.
//!
//! - At most `AUTH_JIT_MAX_CONNECTIONS` connections are open: past it, new
//!   ones wait in the kernel's backlog, unaccepted, so memory stays bounded
//!   however many sockets a caller opens.
//! - A connection must send its request head within
//!   `AUTH_JIT_HEADER_TIMEOUT_SECS`: hyper's header-read timer runs from the
//!   moment the server waits for a head, so it closes both slow senders and
//!   keep-alive connections idle for that long. Heads are bounded in size
//!   (`AUTH_JIT_MAX_HEADER_BYTES`) and in count.
//! - On SIGTERM the server drains: `/api/ready` fails at once, every
//!   response carries `Connection: close`, and new connections are still
//!   served for `AUTH_JIT_DRAIN_SECS`, so load balancers move away without a
//!   request lost. Then it stops accepting and lets in-flight requests
//!   finish for at most `AUTH_JIT_SHUTDOWN_TIMEOUT_SECS`. Ctrl-C (SIGINT)
//!   skips the drain: at a terminal, nobody routes traffic to you.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Why the server stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: an orchestrator asks; drain first.
    Terminate,
    /// SIGINT (Ctrl-C): stop now, after in-flight requests.
    Interrupt,
}

/// Whether the server is draining: readiness fails and responses close
/// their connections. Shared with the router.
#[derive(Debug, Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Connection limits and timers.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
    pub drain: Duration,
    pub shutdown_timeout: Duration,
}

/// At most this many header lines in a request head.
const MAX_HEADERS: usize = 64;

/// Serves `app` on `listener` until `stop` completes, then drains (on
/// [`Stop::Terminate`]) and shuts down as the module header says.
pub async fn serve(
    listener: TcpListener,
    app: crate::web::api::router::App,
    limits: Limits,
    draining: Draining,
    stop: impl Future<Output = Stop> + Send + 'static,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // The read buffer bounds a request head (and body chunks in flight).
        .max_buf_size(limits.max_header_bytes)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);

    // The stop signal, then (for SIGTERM) the drain period.
    let (accepting_done_tx, mut accepting_done) = tokio::sync::watch::channel(false);
    let drain_flag = draining.clone();
    let drain = limits.drain;
    tokio::spawn(async move {
        let why = stop.await;
        drain_flag.set();
        if why == Stop::Terminate && !drain.is_zero() {
            tracing::info!(
                drain_secs = drain.as_secs(),
                "draining: not ready, closing connections after each response"
            );
            tokio::time::sleep(drain).await;
        }
        let _ = accepting_done_tx.send(true);
    });

    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = accepting_done.wait_for(|done| *done) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = accepting_done.wait_for(|done| *done) => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move { Ok::<_, std::convert::Infallible>(app.handle(request).await) }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            // Errors here are the peer's (reset, timeout, bad head): the
            // connection is over either way.
            if let Err(e) = watched.await {
                tracing::debug!(error = %e, %peer, "connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_timeout) => {
            tracing::warn!(grace = ?limits.shutdown_timeout, "drain timed out; dropping remaining connections");
        }
    }
    Ok(())
}

/// The caller's address, as the server loop recorded it.
pub fn peer(extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
}
