//! auth-jit: just-in-time, audience-scoped, optionally single-use tokens for
//! backend APIs. `main.rs` is a thin command line over this library.

pub mod token;
