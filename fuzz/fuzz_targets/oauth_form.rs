//! Any bytes as an OAuth form body: the parser refuses or reads it into the
//! documented form types, never panics.
#![no_main]

use auth_jit::web::api::oauth::form::parse;
use auth_jit::web::api::oauth::{TokenForm, TokenOnlyForm};
use axum::http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    let _ = parse::<TokenForm>(&headers, data);
    let _ = parse::<TokenOnlyForm>(&headers, data);
});
