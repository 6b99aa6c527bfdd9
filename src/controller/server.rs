//! The controller's HTTP endpoints on one port: `/healthz` (the process is serving),
//! `/readyz` (every watch has synced and, with leader election, this replica leads or waits
//! healthily), `/metrics` (OpenMetrics to clients whose `Accept` asks for it, as Prometheus's
//! does; the Prometheus text format 0.0.4 to everyone else).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::metrics::{Format, Metrics};

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

async fn metrics(State(health): State<Health>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let format = negotiate(&accept);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        health.metrics.encode_as(format),
    )
}

/// The format for an `Accept` header: OpenMetrics when `application/openmetrics-text` is
/// acceptable (q > 0) and preferred at least as much as the text format (`text/plain`,
/// `text/*`, `*/*`); otherwise, and without a header, the text format 0.0.4.
pub fn negotiate(accept: &str) -> Format {
    let mut openmetrics = 0.0_f32;
    let mut text = 0.0_f32;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let quality = parts
            .filter_map(|p| p.split_once('='))
            .find(|(key, _)| key.trim().eq_ignore_ascii_case("q"))
            .map_or(Some(1.0), |(_, q)| q.trim().parse::<f32>().ok())
            .unwrap_or(0.0);
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(quality),
            "text/plain" | "text/*" | "*/*" => text = text.max(quality),
            _ => {}
        }
    }
    if openmetrics > 0.0 && openmetrics >= text {
        Format::OpenMetrics
    } else {
        Format::Text004
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    /// Status, headers (lower-case names) and body of a GET with `headers` added.
    async fn get(address: SocketAddr, path: &str, headers: &str) -> (u16, String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let code = response[9..12].parse().unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        (code, head.to_ascii_lowercase(), body.to_owned())
    }

    async fn get_text(address: SocketAddr, path: &str) -> (u16, String) {
        let (code, _, body) = get(address, path, "").await;
        (code, body)
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
        let (code, head, body) = get(address, "/metrics", "").await;
        assert_eq!(code, 200);
        assert!(
            body.contains("signet_reconciles_total{result=\"success\"} 1"),
            "{body}"
        );
        assert!(
            head.contains("\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{head}"
        );
        assert!(!body.contains("# EOF"), "{body}");
        let (code, head, body) =
            get(address, "/metrics", &format!("Accept: {PROMETHEUS}\r\n")).await;
        assert_eq!(code, 200);
        assert!(
            head.contains(
                "\r\ncontent-type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"
            ),
            "{head}"
        );
        assert!(body.ends_with("# EOF\n"), "{body}");
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    /// What Prometheus 2.x and 3.x send when scraping.
    const PROMETHEUS: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    #[test]
    fn openmetrics_goes_to_those_who_ask_for_it() {
        for accept in [
            PROMETHEUS,
            "application/openmetrics-text",
            "Application/OpenMetrics-Text; version=1.0.0",
            "text/plain;q=0.5, application/openmetrics-text;q=0.9",
            "application/openmetrics-text, text/plain",
        ] {
            assert_eq!(negotiate(accept), Format::OpenMetrics, "{accept}");
        }
    }

    #[test]
    fn everyone_else_gets_the_text_format() {
        for accept in [
            "",
            "*/*",
            "text/plain",
            "text/plain;version=0.0.4",
            "application/json",
            "application/openmetrics-text;q=0",
            "application/openmetrics-text;q=0.2, */*",
            "application/openmetrics-text;q=bogus",
            "application/openmetrics-text-plus",
        ] {
            assert_eq!(negotiate(accept), Format::Text004, "{accept}");
        }
    }
}
