//! The HTTP side: application state and server, start-up and shutdown, and
//! the API handlers.

pub mod api;
pub mod application;
pub mod lifetime;
pub mod server;
