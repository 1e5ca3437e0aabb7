//! Logging set-up: `EnvFilter` from `AUTH_JIT_LOG_LEVEL` (or `RUST_LOG`),
//! human-readable or JSON lines on stderr. Stdout is reserved for command
//! output such as the secret `client add` prints.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::settings::{LogFormat, Settings};

/// Keeps telemetry alive; dropping it flushes what is buffered.
#[derive(Debug)]
pub struct Guard {
    _private: (),
}

impl Drop for Guard {
    fn drop(&mut self) {
        tracing::debug!("telemetry flushed");
    }
}

/// Installs the global subscriber. Safe to call once per process; a second
/// call (tests) keeps the first subscriber.
pub fn init(settings: &Settings) -> Guard {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(&settings.log_level));
    let registry = tracing_subscriber::registry().with(filter);
    let ansi = std::io::stderr().is_terminal();
    let _ = match settings.log_format {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Text => registry
            .with(fmt::layer().with_ansi(ansi).with_writer(std::io::stderr))
            .try_init(),
    };
    Guard { _private: () }
}
