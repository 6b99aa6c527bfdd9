//! The worker test harness: a fresh database (PostgreSQL or SQLite), every channel kind pointed
//! at servers on 127.0.0.1, and the log channel captured.

use std::collections::HashMap;
use std::time::Duration;

use signet::crd::SignaturePolicySpec;
use signet::notify::{self, RetryPolicy};
use signet::policy::Policy;
use signet::store::Store;
use signet::store::testing::{self, Backend, Seed, TestDatabase};
use signet::worker::{Run, RunOptions, RunSummary, TimeoutSummary, Timeouts};

use super::{Capture, HttpServer, SmtpServer, policy};

pub const HOUR: f64 = 3600.0;

pub struct Harness {
    pub db: TestDatabase,
    pub store: Store,
    pub out: Capture,
    pub http: HttpServer,
    pub smtp: SmtpServer,
    pub env: HashMap<String, String>,
}

impl Harness {
    pub async fn new(backend: Backend) -> Option<Self> {
        let (db, store) = TestDatabase::new(backend).await?;
        let http = HttpServer::start().await;
        let env = HashMap::from([
            ("SIGNET_SECRET_HOOK_URL".to_owned(), http.url("/events")),
            (
                "SIGNET_SECRET_HOOK_HMAC".to_owned(),
                "hook-secret".to_owned(),
            ),
            (
                "SIGNET_SECRET_SENDGRID_KEY".to_owned(),
                "SG.test".to_owned(),
            ),
            ("SIGNET_SECRET_SLACK_URL".to_owned(), http.url("/slack")),
        ]);
        Some(Self {
            db,
            store,
            out: Capture::default(),
            http,
            smtp: SmtpServer::start().await,
            env,
        })
    }

    /// The policy's spec with every test channel defined; `sections` are the spec's other lines.
    pub fn policy(&self, sections: &str) -> SignaturePolicySpec {
        policy(&format!(
            r#"  database: {{urlSecretRef: {{name: db, key: url}}}}
{sections}
  channels:
    - name: console
      log: {{}}
    - name: hook
      webhook: {{urlSecretRef: {{name: hook, key: url}}, signingSecretRef: {{name: hook, key: hmac}}}}
    - name: mail
      sendgrid: {{apiKeySecretRef: {{name: sendgrid, key: key}}, from: "Enrollment <no-reply@example.com>", to: [ops@example.com], replyTo: "\"Enrollment, Help\" <help@example.com>", endpoint: "{}"}}
    - name: ops
      slack: {{webhookUrlSecretRef: {{name: slack, key: url}}}}
    - name: smtp
      smtp: {{host: 127.0.0.1, port: {}, security: none, from: "Enrollment <no-reply@example.com>", to: [ops@example.com], replyTo: "\"Enrollment, Help\" <help@example.com>"}}
"#,
            self.http.url("/v3/mail/send"),
            self.smtp.port
        ))
    }

    pub fn channels(&self, spec: &SignaturePolicySpec) -> notify::Channels {
        let env = |name: &str| self.env.get(name).cloned();
        let http = notify::http_client(notify::HttpTimeouts::default()).unwrap();
        let names: Vec<&str> = spec.channels.iter().map(|c| c.name.as_str()).collect();
        notify::build_channels(spec, &names, &env, &http, &self.out.shared()).unwrap()
    }

    pub async fn run(&self, spec: &SignaturePolicySpec) -> RunSummary {
        let channels = self.channels(spec);
        let policy = Policy::parse(spec).unwrap();
        Run::new(&policy, &channels, options())
            .unwrap()
            .send_reminders(&self.store)
            .await
            .unwrap()
    }

    /// One timeouts run; panics on a run error.
    pub async fn check_timeouts(&self, spec: &SignaturePolicySpec) -> TimeoutSummary {
        let channels = self.channels(spec);
        let policy = Policy::parse(spec).unwrap();
        Timeouts::new(&policy, &channels, options())
            .unwrap()
            .check_timeouts(&self.store)
            .await
            .unwrap()
    }

    /// The log channel's lines: (kind, sequence, workflow id).
    pub fn logged(&self) -> Vec<(String, i64, String)> {
        self.out
            .lines()
            .iter()
            .map(|l| {
                let n = &l["notification"];
                (
                    n["kind"].as_str().unwrap().to_owned(),
                    n["sequence"].as_i64().unwrap(),
                    n["workflowId"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    pub async fn seed(&self, seeds: &[Seed]) {
        testing::seed(&self.store, seeds).await.unwrap();
    }

    pub async fn time_passes(&self, hours: f64) {
        testing::time_passes(&self.store, hours * HOUR)
            .await
            .unwrap();
    }
}

pub fn options() -> RunOptions {
    RunOptions {
        batch_size: 3,
        concurrency: 4,
        retry: RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(5),
        },
        ..RunOptions::default()
    }
}

/// Runs each named test body (`async fn name(h: &Harness)`) once per backend, as two tests
/// `name::postgres` and `name::sqlite`.
#[allow(unused_macros)] // not every test binary that includes `common` uses it
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use $crate::common::worker::Harness;
            use signet::store::testing::Backend;
            #[tokio::test]
            async fn postgres() {
                let Some(h) = Harness::new(Backend::Postgres).await else { return };
                super::$name(&h).await;
                h.store.close().await;
            }
            #[tokio::test]
            async fn sqlite() {
                let h = Harness::new(Backend::Sqlite).await.unwrap();
                super::$name(&h).await;
                h.store.close().await;
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use on_both;
