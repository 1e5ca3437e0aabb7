//! The HTTP API: one module per resource, the shared error and extractors,
//! and the router that documents every route it serves.

pub mod audit;
pub mod error;
pub mod extract;
pub mod health;
pub mod oauth;
pub mod router;
pub mod token;
pub mod wellknown;
