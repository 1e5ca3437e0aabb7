//! The token domain: what a token is, who may have one, how it is signed and
//! how it is checked. Nothing here knows about HTTP, storage or the clock on
//! the wall: callers pass a [`clock::Clock`] and a [`clock::Random`], so every
//! rule is unit-tested without waiting and without a server.

pub mod assertion;
pub mod clock;
pub mod issue;
pub mod jws;
pub mod policy;
pub mod types;

// The checking rules live in the verifier crate, which receiving APIs use
// too: one implementation for the issuer and its audiences.
pub use auth_jit_verifier::{claims, jwt, rules as verify};
