//! Audit events and the metrics that count them, in one place, so every
//! endpoint reports the same way.
//!
//! Each event goes to the `audit` tracing target (and the audit file, if
//! configured) with `event`, `outcome`, `client_id`, `aud`, `jti` and
//! `reason` as they apply; the request id comes from the enclosing request
//! span. Never a token, never a secret.

use super::error::ApiError;
use crate::services::clients::Client;
use crate::services::metrics::{
    audience_label, count, CLIENT_AUTH_FAILURES, REVOCATIONS, TOKENS_DENIED, TOKENS_ISSUED,
    VERIFICATIONS,
};
use crate::services::telemetry::AUDIT;
use crate::token::claims::AccessClaims;
use auth_jit_verifier::txn::TxnClaims;

fn span_outcome(outcome: &'static str, aud: Option<&str>) {
    let span = tracing::Span::current();
    span.record("outcome", outcome);
    if let Some(aud) = aud {
        span.record("aud", aud);
    }
}

/// A client failed to authenticate. `claimed` is logged only if it names a
/// registered client: an unknown "id" might be a secret pasted there.
pub fn client_auth_failed(method: &'static str, claimed: Option<&str>, known: bool, reason: &str) {
    let client_id = match claimed {
        Some(id) if known => id,
        _ => "(unknown)",
    };
    tracing::info!(target: AUDIT, event = "client_auth_failed", outcome = "failure", method, client_id, reason);
    count(CLIENT_AUTH_FAILURES, &[("method", method)], 1);
    span_outcome("client_auth_failed", None);
}

pub fn token_issued(client: &Client, claims: &AccessClaims, grant: &'static str) {
    tracing::info!(
        target: AUDIT,
        event = "token_issued",
        outcome = "success",
        grant,
        client_id = %client.id,
        aud = %claims.aud,
        jti = %claims.jti,
        exp = claims.exp,
        once = claims.is_single_use(),
        delegation_depth = claims.delegation_depth(),
    );
    count(
        TOKENS_ISSUED,
        &[
            ("client", client.id.as_str()),
            ("audience", &claims.aud),
            ("grant", grant),
        ],
        1,
    );
    span_outcome("issued", Some(&claims.aud));
}

/// A Txn-Token was issued: the event carries `txn`, never the token.
pub fn txn_token_issued(client: &Client, claims: &TxnClaims, subject: &'static str) {
    let replacements = claims.workloads().len() - 1;
    tracing::info!(
        target: AUDIT,
        event = "txn_token_issued",
        outcome = "success",
        grant = "txn_token",
        client_id = %client.id,
        aud = %claims.aud,
        txn = %claims.txn,
        exp = claims.exp,
        subject_token_type = subject,
        replacements,
    );
    count(
        TOKENS_ISSUED,
        &[
            ("client", client.id.as_str()),
            ("audience", &claims.aud),
            ("grant", "txn_token"),
        ],
        1,
    );
    span_outcome("issued", Some(&claims.aud));
}

pub fn token_denied(client: &Client, aud: Option<&str>, grant: &'static str, error: &ApiError) {
    let reason = error.code();
    tracing::info!(
        target: AUDIT,
        event = "token_denied",
        outcome = "failure",
        grant,
        client_id = %client.id,
        aud = aud.unwrap_or_default(),
        reason,
        detail = %error,
    );
    let allowed = aud.is_some_and(|a| client.policy.audiences.iter().any(|x| x.as_str() == a));
    let label = aud.map_or_else(|| "none".to_owned(), |a| audience_label(a, allowed));
    count(
        TOKENS_DENIED,
        &[
            ("client", client.id.as_str()),
            ("audience", &label),
            ("reason", reason),
        ],
        1,
    );
    span_outcome("denied", aud.filter(|_| allowed));
}

/// What a verification found: an access token, or a Txn-Token.
pub enum Checked<'a> {
    Access(&'a AccessClaims),
    Txn(&'a TxnClaims),
}

/// A verification (`via` = `verify`) or introspection (`introspect`).
pub fn verification(client: &Client, via: &'static str, result: Result<Checked<'_>, &ApiError>) {
    match result {
        Ok(checked) => {
            // The event names the token by its id: `jti`, or a Txn-Token's `txn`.
            let aud = match checked {
                Checked::Access(claims) => {
                    tracing::info!(
                        target: AUDIT,
                        event = "token_verified",
                        outcome = "success",
                        via,
                        client_id = %client.id,
                        aud = %claims.aud,
                        jti = %claims.jti,
                        once = claims.is_single_use(),
                    );
                    &claims.aud
                }
                Checked::Txn(claims) => {
                    tracing::info!(
                        target: AUDIT,
                        event = "txn_token_verified",
                        outcome = "success",
                        via,
                        client_id = %client.id,
                        aud = %claims.aud,
                        txn = %claims.txn,
                    );
                    &claims.aud
                }
            };
            count(VERIFICATIONS, &[("via", via), ("outcome", "active")], 1);
            span_outcome("active", Some(aud));
        }
        Err(error) => {
            let outcome = match error {
                ApiError::Unavailable(_) => "unavailable",
                ApiError::Forbidden(_) => "forbidden",
                _ => "inactive",
            };
            tracing::info!(
                target: AUDIT,
                event = "verification_failed",
                outcome = "failure",
                via,
                client_id = %client.id,
                reason = outcome,
                detail = %error,
            );
            count(VERIFICATIONS, &[("via", via), ("outcome", outcome)], 1);
            span_outcome(outcome, None);
        }
    }
}

pub fn revocation(client: &Client, by: &'static str, applied: bool, jti: Option<&str>) {
    tracing::info!(
        target: AUDIT,
        event = "token_revoked",
        outcome = if applied { "success" } else { "ignored" },
        by,
        client_id = %client.id,
        jti = jti.unwrap_or_default(),
    );
    count(
        REVOCATIONS,
        &[
            ("by", by),
            ("applied", if applied { "true" } else { "false" }),
        ],
        1,
    );
    span_outcome(if applied { "revoked" } else { "ignored" }, None);
}
