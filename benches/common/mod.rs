//! What both worker benchmarks share: sizes from the environment, a policy from its spec lines,
//! an HTTP sink on 127.0.0.1 and the process's peak RSS.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{Response, StatusCode};

/// `var` from the environment as a number, else `default`.
pub fn size(var: &str, default: i64) -> i64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A fresh, migrated PostgreSQL database (dropped with the handle) and a store on it.
pub async fn fresh_postgres() -> (signet::store::testing::TestDatabase, signet::store::Store) {
    let db = signet::store::testing::TestDatabase::postgres()
        .await
        .expect("PostgreSQL is needed for the benchmark");
    let store = db.connect(None).await.unwrap();
    store.migrate().await.unwrap();
    (db, store)
}

/// A SignaturePolicy spec from its lines after `database`, admitted like `signet validate`.
pub fn policy(sections: &str) -> signet::crd::SignaturePolicySpec {
    let yaml = format!(
        "apiVersion: signet.dev/v1alpha1\nkind: SignaturePolicy\nmetadata: {{name: bench}}\nspec:\n  database: {{urlSecretRef: {{name: db, key: url}}}}\n{sections}"
    );
    let value = signet::manifests::parse_documents(&yaml).unwrap().remove(0);
    let verdict = signet::admission::Admission::new().check(value);
    assert!(verdict.errors.is_empty(), "{:?}", verdict.errors);
    verdict.policy.unwrap().spec
}

/// A SendGrid-compatible sink: answers every request 202 with an `X-Message-Id`, keeps a count.
pub struct Sink {
    pub url: String,
    pub count: Arc<AtomicU64>,
}

impl Sink {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v3/mail/send", listener.local_addr().unwrap());
        let count = Arc::new(AtomicU64::new(0));
        let counter = count.clone();
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            async move {
                let _ = body;
                Response::builder()
                    .status(StatusCode::ACCEPTED)
                    .header("X-Message-Id", format!("bench-{n}"))
                    .body(axum::body::Body::empty())
                    .unwrap()
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, count }
    }
}

/// The process's peak resident set size, as /proc reports it.
pub fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l["VmHWM:".len()..].trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}
