//! auth-jit: just-in-time, audience-scoped, optionally single-use tokens for
//! backend APIs. `main.rs` is a thin command line over this library.

pub mod cli;
pub mod services;
pub mod settings;
pub mod token;
pub mod web;
