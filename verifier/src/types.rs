//! Audiences and scopes: newtypes that parse, so a value of these types is
//! valid by construction. The issuer parses requests with them and the
//! verifier compares with them, so both read `aud` and `scope` alike.
//!
//! Every constructor rejects what RFC 6749 (scope tokens) and our rules
//! (audiences) do not allow, with a message that can be shown to the caller
//! because it never repeats the offending value.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a value was refused. The message is safe to show to a caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub &'static str);

/// An audience: the identifier of the API a token is for (a name or a URL).
/// 1 to 256 visible ASCII characters, no spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Audience(String);

impl Audience {
    /// Parses an audience.
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        if value.is_empty() || value.len() > 256 {
            return Err(ParseError("an audience has 1 to 256 characters"));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ParseError(
                "an audience uses only visible ASCII characters, without spaces",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The audience as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One scope token, RFC 6749 §3.3: `1*( %x21 / %x23-5B / %x5D-7E )`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ScopeToken(String);

impl ScopeToken {
    /// Parses one scope token.
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        if value.is_empty() || value.len() > 128 {
            return Err(ParseError("a scope has 1 to 128 characters"));
        }
        if !value
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
        {
            return Err(ParseError(
                "a scope uses visible ASCII characters other than \" and \\ (RFC 6749 section 3.3)",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The scope token as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A set of scope tokens; written as one space-separated string on the wire.
/// Empty is allowed and means "no scope".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(BTreeSet<ScopeToken>);

impl Scope {
    /// At most this many scope tokens in one request: a token is narrow.
    pub const MAX_TOKENS: usize = 64;

    /// Parses a space-separated scope string (order and repeats do not matter).
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        let mut set = BTreeSet::new();
        for part in value.split(' ').filter(|p| !p.is_empty()) {
            set.insert(ScopeToken::parse(part)?);
        }
        if set.len() > Self::MAX_TOKENS {
            return Err(ParseError("at most 64 scopes in one request"));
        }
        Ok(Self(set))
    }

    /// A scope of these tokens.
    pub fn from_tokens(tokens: impl IntoIterator<Item = ScopeToken>) -> Self {
        Self(tokens.into_iter().collect())
    }

    /// Whether no scope is in the set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether every scope of `self` is in `other`.
    pub fn is_subset(&self, other: &Scope) -> bool {
        self.0.is_subset(&other.0)
    }

    /// Whether the set holds `token`.
    pub fn contains(&self, token: &ScopeToken) -> bool {
        self.0.contains(token)
    }

    /// The scope tokens, in order.
    pub fn iter(&self) -> impl Iterator<Item = &ScopeToken> {
        self.0.iter()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for token in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(token.as_str())?;
            first = false;
        }
        Ok(())
    }
}

/// `String` conversions for a newtype with a `parse` constructor.
#[macro_export]
#[doc(hidden)]
macro_rules! string_newtype_conversions {
    ($($ty:ident),*) => {$(
        impl TryFrom<String> for $ty {
            type Error = $crate::types::ParseError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }
        impl From<$ty> for String {
            fn from(value: $ty) -> String {
                value.0
            }
        }
        impl ::std::str::FromStr for $ty {
            type Err = $crate::types::ParseError;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Self::parse(value)
            }
        }
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
string_newtype_conversions!(Audience, ScopeToken);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_may_be_urls_but_not_blank_or_spaced() {
        assert!(Audience::parse("https://ledger.internal/api").is_ok());
        assert!(Audience::parse("ledger").is_ok());
        assert!(Audience::parse("").is_err());
        assert!(Audience::parse("two words").is_err());
        assert!(Audience::parse("tab\there").is_err());
    }

    #[test]
    fn scope_follows_rfc6749_and_normalises_order_and_duplicates() {
        let scope = Scope::parse("write  read read").expect("valid scope");
        assert_eq!(scope.to_string(), "read write");
        assert!(Scope::parse("").expect("empty is valid").is_empty());
        assert!(Scope::parse("quote\"d").is_err());
        assert!(Scope::parse("back\\slash").is_err());
        let many = (0..65)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(Scope::parse(&many).is_err());
    }

    #[test]
    fn scope_subset() {
        let small = Scope::parse("a").expect("valid");
        let big = Scope::parse("a b").expect("valid");
        assert!(small.is_subset(&big));
        assert!(!big.is_subset(&small));
        assert!(Scope::default().is_subset(&small));
    }
}
