//! Reading JWT claims with their exact JSON types: a string where a number
//! belongs (CVE-2026-25537's class of bug) is an error, never a skipped
//! check. Every profile we read (access tokens, client assertions) uses
//! these readers, so the type rules exist once.

use serde_json::{Map, Value};

/// Why a claim could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimError {
    /// The claim is absent.
    Missing(&'static str),
    /// The claim has another JSON type than the rules allow.
    WrongType(&'static str),
}

/// A verified payload, read claim by claim.
pub struct Claims<'a>(pub &'a Map<String, Value>);

impl Claims<'_> {
    /// Whether the claim is present.
    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// An optional string claim.
    pub fn opt_str(&self, name: &'static str) -> Result<Option<&str>, ClaimError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(ClaimError::WrongType(name)),
        }
    }

    /// A required string claim.
    pub fn str(&self, name: &'static str) -> Result<&str, ClaimError> {
        self.opt_str(name)?.ok_or(ClaimError::Missing(name))
    }

    /// A string that must not be empty (ids).
    pub fn non_empty_str(&self, name: &'static str) -> Result<&str, ClaimError> {
        match self.str(name)? {
            "" => Err(ClaimError::WrongType(name)),
            s => Ok(s),
        }
    }

    /// A NumericDate: a non-negative integer, nothing else.
    pub fn opt_number(&self, name: &'static str) -> Result<Option<u64>, ClaimError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or(ClaimError::WrongType(name)),
            Some(_) => Err(ClaimError::WrongType(name)),
        }
    }

    /// A required NumericDate claim.
    pub fn number(&self, name: &'static str) -> Result<u64, ClaimError> {
        self.opt_number(name)?.ok_or(ClaimError::Missing(name))
    }

    /// An optional boolean claim.
    pub fn opt_bool(&self, name: &'static str) -> Result<Option<bool>, ClaimError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ClaimError::WrongType(name)),
        }
    }

    /// `aud` as one string; an array of exactly one string means the same
    /// (RFC 7519 §4.1.3).
    pub fn single_audience(&self) -> Result<&str, ClaimError> {
        match self.0.get("aud") {
            None => Err(ClaimError::Missing("aud")),
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(Value::Array(items)) => match items.as_slice() {
                [Value::String(s)] => Ok(s.as_str()),
                _ => Err(ClaimError::WrongType("aud")),
            },
            Some(_) => Err(ClaimError::WrongType("aud")),
        }
    }

    /// Whether `aud` (a string or an array of strings) names one of
    /// `accepted`.
    pub fn audience_in(&self, accepted: &[String]) -> Result<bool, ClaimError> {
        match self.0.get("aud") {
            None => Err(ClaimError::Missing("aud")),
            Some(Value::String(a)) => Ok(accepted.contains(a)),
            Some(Value::Array(items)) => {
                let mut hit = false;
                for item in items {
                    let Value::String(a) = item else {
                        return Err(ClaimError::WrongType("aud"));
                    };
                    hit |= accepted.contains(a);
                }
                Ok(hit)
            }
            Some(_) => Err(ClaimError::WrongType("aud")),
        }
    }
}

/// Time checks shared by every profile, with `leeway` seconds of skew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeError {
    /// `exp` has passed (beyond the leeway).
    Expired,
    /// `nbf` lies ahead (beyond the leeway).
    NotYetValid,
    /// `iat` lies ahead (beyond the leeway).
    IssuedInFuture,
}

/// `exp` must lie ahead of `now` (minus the leeway); `nbf` and `iat`, when
/// given, must not lie ahead (beyond the leeway).
pub fn check_times(
    exp: u64,
    nbf: Option<u64>,
    iat: Option<u64>,
    leeway: u64,
    now: u64,
) -> Result<(), TimeError> {
    if now >= exp.saturating_add(leeway) {
        return Err(TimeError::Expired);
    }
    if nbf.is_some_and(|nbf| now.saturating_add(leeway) < nbf) {
        return Err(TimeError::NotYetValid);
    }
    if iat.is_some_and(|iat| now.saturating_add(leeway) < iat) {
        return Err(TimeError::IssuedInFuture);
    }
    Ok(())
}
