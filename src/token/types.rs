//! Newtypes that parse: a value of these types is valid by construction.
//!
//! Every constructor rejects what RFC 6749 (scope tokens) and our own rules
//! (identifiers, audiences) do not allow, with a message that can be shown to
//! the caller because it never repeats the offending value.

use serde::{Deserialize, Serialize};

pub use auth_jit_verifier::types::{Audience, ParseError, Scope, ScopeToken};

/// The rules of [`Audience`], [`Scope`] and jti strings as the OpenAPI
/// document states them (JSON Schema patterns); the parsers below enforce
/// the same, and `tests` checks that each parser agrees with its pattern.
pub mod patterns {
    /// Visible ASCII, 1 to 256 characters.
    pub const AUDIENCE: &str = "^[!-~]{1,256}$";
    /// Space-separated scope tokens: visible ASCII except `"` and `\\`.
    pub const SCOPE: &str = "^[!#-\\[\\]-~]{1,128}( [!#-\\[\\]-~]{1,128}){0,63}$";
    /// A token id: base64url.
    pub const JTI: &str = "^[A-Za-z0-9_-]{1,128}$";
    /// An HTTP method token.
    pub const METHOD: &str = "^[A-Za-z]{1,32}$";
    /// An absolute http(s) URL without credentials.
    pub const URL: &str = "^https?://[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*$";
}

/// A registered client's identifier: 1 to 128 characters from
/// `A-Z a-z 0-9 . _ -`, so it is safe in file names, logs and HTTP Basic
/// (where a `:` would end the id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientId(String);

impl ClientId {
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        if value.is_empty() || value.len() > 128 {
            return Err(ParseError("a client id has 1 to 128 characters"));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(ParseError(
                "a client id uses only letters, digits and . _ -",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A token lifetime in seconds: at least one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ttl(u64);

impl Ttl {
    pub fn new(seconds: u64) -> Result<Self, ParseError> {
        if seconds == 0 {
            return Err(ParseError("ttl must be at least 1 second"));
        }
        Ok(Self(seconds))
    }

    pub fn seconds(self) -> u64 {
        self.0
    }
}

auth_jit_verifier::string_newtype_conversions!(ClientId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_restricted_to_a_safe_alphabet() {
        assert!(ClientId::parse("billing-svc.prod_1").is_ok());
        for bad in ["", "has space", "slash/", "colon:", "é", &"x".repeat(129)] {
            assert!(ClientId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ttl_is_positive() {
        assert!(Ttl::new(0).is_err());
        assert_eq!(Ttl::new(5).map(Ttl::seconds), Ok(5));
    }
}
