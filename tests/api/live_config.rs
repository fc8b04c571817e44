//! `CONFIG_DIR`: hot-reloadable settings applied live, as a mounted ConfigMap changes.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::app::{TestApp, spawn_app_with};
use crate::support::kubelet::ConfigMapVolume;

async fn mode(app: &TestApp) -> String {
    let body: Value = app.get("/").await.json().await.unwrap();
    body["mode"].as_str().unwrap().to_owned()
}

/// Polls `/` until it reports `expected`, for at most 5 s.
async fn wait_for_mode(app: &TestApp, expected: &str) -> Duration {
    let started = Instant::now();
    while mode(app).await != expected {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "mode never became {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn a_kubelet_symlink_swap_changes_the_mode_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut volume = ConfigMapVolume::new(dir.path(), &[("APP_MODE", "development")]);
    let app = spawn_app_with(&[("CONFIG_DIR", dir.path().to_str().unwrap())]).await;
    assert_eq!(mode(&app).await, "development");

    volume.update(&[("APP_MODE", "production")]);
    let took = wait_for_mode(&app, "production").await;
    assert!(
        took < Duration::from_secs(3),
        "applied within seconds: {took:?}"
    );

    // A broken value keeps the last good one.
    volume.update(&[("APP_MODE", "prod")]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(mode(&app).await, "production");

    // And a later good value applies again.
    volume.update(&[("APP_MODE", "development")]);
    wait_for_mode(&app, "development").await;
}

#[tokio::test]
async fn a_file_wins_over_the_environment_and_removal_falls_back_to_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("APP_MODE"), "production").unwrap();
    let app = spawn_app_with(&[
        ("CONFIG_DIR", dir.path().to_str().unwrap()),
        ("APP_MODE", "development"),
    ])
    .await;
    assert_eq!(
        mode(&app).await,
        "production",
        "the file applies before the first request"
    );
    std::fs::remove_file(dir.path().join("APP_MODE")).unwrap();
    wait_for_mode(&app, "development").await;
}

#[tokio::test]
async fn chaos_can_be_switched_on_and_off_live() {
    let dir = tempfile::tempdir().unwrap();
    let mut volume = ConfigMapVolume::new(dir.path(), &[("CHAOS_ERROR_RATE", "0")]);
    let app = spawn_app_with(&[
        ("CONFIG_DIR", dir.path().to_str().unwrap()),
        ("CHAOS_ENABLED", "true"),
    ])
    .await;
    assert_eq!(app.get("/api/v1/notes").await.status(), 200);
    volume.update(&[("CHAOS_ERROR_RATE", "1")]);
    let started = Instant::now();
    while app.get("/api/v1/notes").await.status() != 500 {
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    volume.update(&[("CHAOS_ERROR_RATE", "0")]);
    let started = Instant::now();
    while app.get("/api/v1/notes").await.status() != 200 {
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
