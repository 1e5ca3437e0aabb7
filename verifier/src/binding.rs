//! Request binding (as in RFC 9449's `htm` and `htu`): a bound token
//! authorizes one method on one URL. The issuer normalizes what it binds
//! and the verifier what it compares with these same functions, so a
//! request matches exactly when both agree.

use url::Url;

use crate::types::ParseError;

/// An RFC 9110 method token, upper-cased.
pub fn normalize_method(method: &str) -> Result<String, ParseError> {
    if method.is_empty()
        || method.len() > 32
        || !method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        return Err(ParseError(
            "method must be an HTTP method such as GET or POST",
        ));
    }
    Ok(method.to_ascii_uppercase())
}

/// An absolute http(s) URL without credentials, kept without query and
/// fragment as RFC 9449 does for `htu`.
pub fn normalize_url(url: &str) -> Result<String, ParseError> {
    const MSG: &str = "url must be an absolute http or https URL of at most 2048 characters";
    if url.len() > 2048 {
        return Err(ParseError(MSG));
    }
    let mut parsed = Url::parse(url).map_err(|_| ParseError(MSG))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(ParseError(MSG));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ParseError("url must not carry credentials"));
    }
    parsed.set_query(None);
    parsed.set_fragment(None);
    Ok(parsed.into())
}
