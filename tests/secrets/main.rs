//! Secrets stay secret: canary values for every kind of secret a worker holds (database
//! password, SendGrid API key, Slack and webhook URLs, HMAC key, SMTP credentials) are fed to the
//! real binary, with every delivery made to succeed or fail in each way a provider can fail, and
//! must never come out in logs (every level, text and JSON), summary lines, error lines, the log
//! table's `error` column, the termination message, the Pushgateway push, `render`, `plan`,
//! `demo` or `--help`. Plus: the store's SQL is static text (values are bound). Shared canaries and
//! helpers live here; each module holds one surface's tests.

#[path = "../common/mod.rs"]
mod common;

mod channels;
mod commands;
mod database;
mod sql;
mod workers;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{HttpServer, Reply, SmtpServer};
use signet::store::Store;
use signet::store::testing::{self, Backend, Seed, TestDatabase};

const HOUR: f64 = 3600.0;
const BOTH: &[&str] = &["text", "json"];

const DB_PASSWORD: &str = "canary-db-pw-7f3a9c2e51d4";
const API_KEY: &str = "SG.canary-api-key-4b8d0e6f13a7";
const SLACK_TOKEN: &str = "canary-slack-tok-9e1f2a7c35b8";
const HOOK_TOKEN: &str = "canary-hook-tok-3c5e7a9b24f6";
const HMAC_KEY: &str = "canary-hmac-key-8d2f4a6c90e1";
const SMTP_USER: &str = "canary-smtp-user-1a2b3c4d5e";
const SMTP_PASSWORD: &str = "canary-smtp-pw-5e6f7a8b9c0d";
/// Not a Secret (the controller's flag), but a Pushgateway URL may carry basic-auth credentials;
/// reqwest moves them into a header, so even a failed push's error does not show them.
const PUSH_PASSWORD: &str = "canary-push-pw-2b4d6f8a0c1e";

/// Every canary, by what it stands for.
const CANARIES: [(&str, &str); 8] = [
    ("database password", DB_PASSWORD),
    ("SendGrid API key", API_KEY),
    ("Slack webhook token", SLACK_TOKEN),
    ("webhook URL token", HOOK_TOKEN),
    ("HMAC key", HMAC_KEY),
    ("SMTP user name", SMTP_USER),
    ("SMTP password", SMTP_PASSWORD),
    ("Pushgateway password", PUSH_PASSWORD),
];

/// Fails naming the canary and showing where it came out.
fn assert_no_canary(what: &str, text: &str) {
    for (name, canary) in CANARIES {
        if let Some(at) = text.find(canary) {
            let start = text[..at]
                .char_indices()
                .rev()
                .nth(200)
                .map_or(0, |(i, _)| i);
            let end = (at + canary.len() + 100).min(text.len());
            let end = (end..=text.len())
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(text.len());
            panic!(
                "{what} leaks the {name} ({canary}):\n…{}…",
                &text[start..end]
            );
        }
    }
}

/// A 127.0.0.1 port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The URL of a Slack incoming webhook and of a webhook receiver at `base` (`http://host:port`),
/// each carrying its canary in the path and in the query.
fn slack_url(base: &str) -> String {
    format!("{base}/services/T000/{SLACK_TOKEN}?token={SLACK_TOKEN}")
}

fn hook_url(base: &str) -> String {
    format!("{base}/hooks/{HOOK_TOKEN}?secret={HOOK_TOKEN}")
}

/// `url` with its password set to the database canary (PostgreSQL here trusts local
/// connections, so the password is carried but not needed).
fn with_canary_password(url: &str) -> String {
    let mut parsed = reqwest::Url::parse(url).unwrap();
    if parsed.username().is_empty() {
        parsed.set_username("postgres").unwrap();
    }
    parsed.set_password(Some(DB_PASSWORD)).unwrap();
    parsed.to_string()
}

/// The policy spec (JSON) every worker run uses: SendGrid, webhook, Slack and SMTP with
/// credentials; reminders and timeouts through all four.
fn spec(sendgrid_endpoint: &str, smtp_port: u16) -> String {
    format!(
        r#"{{
  "database": {{"urlSecretRef": {{"name": "app-db", "key": "url"}}}},
  "reminders": {{"firstAfter": "24h", "channels": ["mail", "hook", "ops", "smtp"]}},
  "timeout": {{"after": "14d", "schedule": "0 * * * *", "channels": ["mail", "hook", "ops", "smtp"]}},
  "channels": [
    {{"name": "mail", "sendgrid": {{"apiKeySecretRef": {{"name": "sendgrid", "key": "api-key"}},
      "from": "Enrollment <no-reply@example.com>", "to": ["ops@example.com"], "endpoint": "{sendgrid_endpoint}"}}}},
    {{"name": "hook", "webhook": {{"urlSecretRef": {{"name": "hook", "key": "url"}},
      "signingSecretRef": {{"name": "hook", "key": "hmac"}}}}}},
    {{"name": "ops", "slack": {{"webhookUrlSecretRef": {{"name": "slack", "key": "url"}}}}}},
    {{"name": "smtp", "smtp": {{"host": "127.0.0.1", "port": {smtp_port}, "security": "starttls",
      "credentialsSecretRef": {{"name": "smtp"}}, "from": "Enrollment <no-reply@example.com>",
      "to": ["ops@example.com"]}}}}
  ]
}}"#
    )
}

/// The secrets' environment variables, as the CronJob's `secretKeyRef`s set them.
fn secret_env(db_url: &str, slack: &str, hook: &str) -> Vec<(String, String)> {
    [
        ("SIGNET_SECRET_APP_DB_URL", db_url),
        ("SIGNET_SECRET_SENDGRID_API_KEY", API_KEY),
        ("SIGNET_SECRET_HOOK_URL", hook),
        ("SIGNET_SECRET_HOOK_HMAC", HMAC_KEY),
        ("SIGNET_SECRET_SLACK_URL", slack),
        ("SIGNET_SECRET_SMTP_USERNAME", SMTP_USER),
        ("SIGNET_SECRET_SMTP_PASSWORD", SMTP_PASSWORD),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Runs the binary with exactly `env` (nothing inherited), off the runtime's threads so the
/// test servers keep answering.
async fn signet(args: &[&str], env: &[(String, String)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_signet"));
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    tokio::task::spawn_blocking(move || command.output().expect("signet runs"))
        .await
        .unwrap()
}

/// Stdout and stderr of a run, checked for canaries; returned for further checks.
fn checked(what: &str, output: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_no_canary(&format!("{what}: stdout"), &stdout);
    assert_no_canary(&format!("{what}: stderr"), &stderr);
    (stdout, stderr)
}

/// The summary line: the last line of stdout.
fn summary(stdout: &str) -> serde_json::Value {
    let last = stdout.lines().last().expect("a summary line");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{last:?}: {e}"))
}

/// Runs a worker subcommand at trace level in each log format of `formats`; returns each run's
/// stdout, stderr and exit code. With `verbose`, debug or trace lines must actually be there, so
/// the check means something (a run that fails before any I/O logs only its error).
async fn run_worker(
    what: &str,
    command: &str,
    env: &[(String, String)],
    extra: &[(String, String)],
    (formats, verbose): (&[&str], bool),
    before_each: impl AsyncFn(),
) -> Vec<(String, String, Option<i32>)> {
    let mut runs = Vec::new();
    for &format in formats {
        before_each().await;
        let mut env = env.to_vec();
        env.extend(extra.iter().cloned());
        env.push(("SIGNET_LOG_LEVEL".into(), "trace".into()));
        env.push(("SIGNET_LOG_FORMAT".into(), format.into()));
        let output = signet(&[command], &env).await;
        let what = format!("{what} ({command}, {format} logs)");
        let (stdout, stderr) = checked(&what, &output);
        let levels: &[&str] = if verbose {
            &["DEBUG", "TRACE"]
        } else {
            &["ERROR"]
        };
        assert!(
            levels.iter().any(|l| stderr.contains(l)),
            "{what}: no {levels:?} lines on stderr:\n{stderr}"
        );
        runs.push((stdout, stderr, output.status.code()));
    }
    runs
}

/// Every error the log table holds, checked; returns how many rows carry one.
async fn check_log_table(what: &str, store: &Store) -> usize {
    let rows = testing::log_rows(store).await.unwrap();
    let errors: Vec<String> = rows.iter().filter_map(|r| r.error.clone()).collect();
    assert_no_canary(
        &format!("{what}: signature_reminder_log.error"),
        &errors.join("\n"),
    );
    errors.len()
}

/// How the sink answers in a scenario.
#[derive(Clone, Copy, Debug)]
enum Sink {
    Accepts,
    Answers(u16),
    RateLimits,
    Refuses,
}

/// A fresh directory under the system's temporary directory.
fn tempdir() -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("signet-secrets-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
