//! Swagger UI tried as a person would: headless Chromium (Debian's, driven
//! by playwright-core) opens `/api/docs`, finds every documented operation,
//! authorizes with HTTP Basic and issues a token with "Try it out". The
//! screenshot is kept in `tests/artifacts/swagger-ui.png`. `make test`
//! installs Chromium and the driver.
// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_lists_every_operation_and_issues_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = common::add_client(
        dir.path(),
        &[],
        "docs-user",
        &["--audience", "ledger", "--scope", "read"],
    );
    let s = common::Server::start(dir.path(), &[]);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/browser/swagger_ui.mjs");
    assert!(
        root.join("tests/browser/node_modules/playwright-core")
            .is_dir(),
        "playwright-core is not installed: run `make test`, which installs it"
    );
    let screenshot = root.join("tests/artifacts/swagger-ui.png");
    let _ = std::fs::remove_file(&screenshot);
    let base = s.base.clone();
    let shot = screenshot.display().to_string();
    let out = std::thread::spawn(move || {
        Command::new("node")
            .arg(script)
            // `--name=value`: a value may start with `-`.
            .arg(format!("--base={base}"))
            .arg("--client-id=docs-user")
            .arg(format!("--secret={secret}"))
            .arg("--audience=ledger")
            .arg(format!("--screenshot={shot}"))
            .output()
            .expect("node must be installed")
    })
    .join()
    .expect("browser thread");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "no JSON report: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(out.status.success(), "browser test failed: {report}");
    assert_eq!(report["missing"], serde_json::json!([]), "{report}");
    assert_eq!(report["status"], 200, "{report}");
    assert_eq!(report["has_token"], true, "{report}");
    let (_, _, doc) = s.get("/api/openapi.json").await;
    let doc: Value = serde_json::from_str(&doc).expect("openapi");
    let documented: usize = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|p| p.as_object().map_or(0, |m| m.len()))
        .sum();
    assert_eq!(
        report["operations"], documented,
        "every operation was checked"
    );
    let size = std::fs::metadata(&screenshot)
        .expect("screenshot kept")
        .len();
    assert!(
        size > 10_000,
        "screenshot too small to show the page: {size} bytes"
    );
}
