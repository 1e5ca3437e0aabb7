//! The OpenAPI document tells the truth: Schemathesis (from PyPI, pinned in
//! the Makefile) generates requests from `/api/openapi.json` with a
//! registered client's credentials and runs every check against the real
//! server. Zero failures; the one configured exception is explained in
//! `tests/schemathesis/schemathesis.toml`.
// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::Server;

#[tokio::test]
async fn schemathesis_finds_no_failure_with_every_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path(), &[("AUTH_JIT_RATE_LIMIT", "0".into())]);
    let secret = s.add_client(
        "st-client",
        &[
            "--audience",
            "st-api",
            "--scope",
            "read",
            "write",
            "--receives",
            "st-api",
        ],
    );
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cli = common::python()
        .parent()
        .expect("venv bin")
        .join("schemathesis");
    assert!(
        cli.exists(),
        "schemathesis missing: run `make test` (it installs it)"
    );
    let url = s.url("/api/openapi.json");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(cli)
            .arg("--config-file")
            .arg(root.join("tests/schemathesis/schemathesis.toml"))
            // A fixed seed: the same cases every run, so CI is repeatable;
            // run by hand without it to explore (README, Tests).
            .args(["run", &url, "--checks", "all", "--seed", "1", "-a"])
            .arg(format!("st-client:{secret}"))
            .env("NO_COLOR", "1")
            .output()
            .expect("run schemathesis")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = stdout.lines().rev().take(40).collect();
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("passed") && !stdout.contains("❌"),
        "{summary:?}"
    );
}
