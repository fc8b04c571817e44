//! `spawn_app`: a farol on a free port of 127.0.0.1 with a fresh database of its own,
//! running in this test's runtime.

use std::time::{Duration, Instant};

use farol::config::{Env, Settings};
use farol::startup::{Application, StartupError};
use farol::state::AppState;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::pg;

pub struct TestApp {
    pub address: String,
    pub metrics_address: Option<String>,
    pub client: reqwest::Client,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), StartupError>>>,
}

/// Settings as the environment would give them, for a service on a free port.
pub fn test_env(database_url: &str, overrides: &[(&str, &str)]) -> Env {
    let mut pairs = vec![
        ("HOST", "127.0.0.1".to_owned()),
        ("PORT", "0".to_owned()),
        ("DATABASE_URL", database_url.to_owned()),
    ];
    pairs.extend(overrides.iter().map(|(k, v)| (*k, v.to_string())));
    Env::from_pairs(pairs)
}

/// A ready app on its own fresh database on the shared server.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let database_url = pg::create_database(&pg::shared_server_url()).await;
    let app = start(&database_url, overrides).await;
    app.wait_ready().await;
    app
}

/// Starts an app on `database_url` without waiting for it to be ready.
pub async fn start(database_url: &str, overrides: &[(&str, &str)]) -> TestApp {
    let settings =
        Settings::from_env(&test_env(database_url, overrides)).expect("valid test settings");
    start_with_settings(settings).await
}

/// Starts an app with exactly these settings, without waiting for it to be ready.
pub async fn start_with_settings(settings: Settings) -> TestApp {
    let application = Application::build(settings).await.expect("the app builds");
    let address = format!("http://127.0.0.1:{}", application.port());
    let metrics_address = application
        .metrics_port()
        .map(|p| format!("http://127.0.0.1:{p}"));
    let state = application.state().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until(async {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        metrics_address,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        state,
        stop: Some(stop),
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .put(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// Creates a note and returns it.
    pub async fn create_note(&self, title: &str, body: &str) -> Value {
        let response = self
            .post_json(
                "/api/v1/notes",
                &serde_json::json!({"title": title, "body": body}),
            )
            .await;
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    /// Sends a create of `input` on a connection of its own, and does not read the answer:
    /// dropping the stream is its client going away.
    pub async fn post_on_a_stream(&self, input: &Value) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt as _;
        let mut stream = tokio::net::TcpStream::connect(self.address.trim_start_matches("http://"))
            .await
            .unwrap();
        let body = input.to_string();
        let request = format!(
            "POST /api/v1/notes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        stream
    }

    /// The value of the first series of `/metrics` whose line starts with `series`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.get("/metrics").await.text().await.unwrap();
        text.lines()
            .find(|line| line.starts_with(series))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
    }

    /// Waits (at most 10 s) until `series` reads `value` on `/metrics`.
    pub async fn wait_for_metric(&self, series: &str, value: f64) {
        for _ in 0..200 {
            if self.metric(series).await == Some(value) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{series} never read {value}");
    }

    /// Waits (at most 10 s) until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        self.wait_for_status("/readyz", 200, Duration::from_secs(10))
            .await;
    }

    /// Polls `path` until it answers `status`, failing the test after `limit`.
    pub async fn wait_for_status(&self, path: &str, status: u16, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(r) = self.client.get(self.url(path)).send().await
                && r.status() == status
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{path} did not answer {status} within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the app gracefully and waits for it.
    pub async fn stop(mut self) -> Result<(), StartupError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.take().unwrap().await.expect("server task")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Asserts that `response` is an RFC 9457 problem with `status` and the given type slug,
/// and returns its body.
pub async fn assert_problem(response: reqwest::Response, status: u16, slug: &str) -> Value {
    assert_eq!(response.status(), status, "status");
    assert!(
        response.headers().contains_key("x-request-id"),
        "X-Request-Id on every response"
    );
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "problem content type"
    );
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["status"], status);
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .ends_with(&format!("#{slug}")),
        "type {} should end with #{slug}",
        body["type"]
    );
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "title and detail: {body}"
    );
    body
}
