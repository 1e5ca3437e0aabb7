//! The parts the service is built from: keys, clients, the state store and
//! telemetry. Each is opened once at start-up by `web::lifetime`.

pub mod clients;
pub mod keys;
pub mod metrics;
pub mod ratelimit;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod trusted;
