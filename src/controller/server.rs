//! The controller's HTTP endpoints on one port: `/healthz` (the process is serving),
//! `/readyz` (every watch has synced and, with leader election, this replica leads or waits
//! healthily), `/metrics` (Prometheus text format).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::metrics::Metrics;

/// What the endpoints report on.
#[derive(Clone)]
pub struct Health {
    /// Set once every watch has listed its objects.
    pub ready: Arc<AtomicBool>,
    /// The metrics to serve.
    pub metrics: Arc<Metrics>,
}

/// The routes, for serving and for tests.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    if health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "watches not synced yet\n")
    }
}

async fn metrics(State(health): State<Health>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        health.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    async fn get_text(address: SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let code = response[9..12].parse().unwrap();
        (
            code,
            response
                .split("\r\n\r\n")
                .nth(1)
                .unwrap_or_default()
                .to_owned(),
        )
    }

    #[tokio::test]
    async fn endpoints_answer_on_loopback() {
        let health = Health {
            ready: Arc::default(),
            metrics: Arc::new(Metrics::new()),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            axum::serve(listener, router(health.clone()))
                .with_graceful_shutdown(async {
                    stopped.await.ok();
                })
                .into_future(),
        );
        assert_eq!(get_text(address, "/healthz").await, (200, "ok\n".into()));
        assert_eq!(get_text(address, "/readyz").await.0, 503);
        health.ready.store(true, Ordering::Relaxed);
        assert_eq!(get_text(address, "/readyz").await, (200, "ready\n".into()));
        health
            .metrics
            .reconciled("success", std::time::Duration::from_millis(1));
        let (code, body) = get_text(address, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            body.contains("signet_reconciles_total{result=\"success\"} 1"),
            "{body}"
        );
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
