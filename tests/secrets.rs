//! Secrets stay secret: canary values for every kind of secret a worker holds (database
//! password, SendGrid API key, Slack and webhook URLs, HMAC key, SMTP credentials) are fed to the
//! real binary, with every delivery made to succeed or fail in each way a provider can fail, and
//! must never come out in logs (every level, text and JSON), summary lines, error lines, the log
//! table's `error` column, the termination message, the Pushgateway push, `render`, `plan`,
//! `demo` or `--help`. Plus: the store's SQL is static text (values are bound).

mod common;

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

/// `send-reminders` through every channel, against PostgreSQL reached with a canary password,
/// with the sink accepting, failing (500, 400, 429) and unreachable; the logs, summaries and the
/// log table's errors carry no canary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_reminders_never_shows_a_secret() {
    let Some((db, store)) = TestDatabase::new(Backend::Postgres).await else {
        return;
    };
    let sink = HttpServer::start().await;
    let smtp = SmtpServer::start().await;
    let db_url = with_canary_password(&db.url);
    let answer: Arc<Mutex<Option<Reply>>> = Arc::default();
    let current = answer.clone();
    sink.rule(move |_| current.lock().unwrap().clone());
    for scenario in [
        Sink::Accepts,
        Sink::Answers(500),
        Sink::Answers(400),
        Sink::RateLimits,
        Sink::Refuses,
    ] {
        let base = match scenario {
            Sink::Refuses => format!("http://127.0.0.1:{}", closed_port()),
            _ => format!("http://{}", sink.addr),
        };
        let reply = match scenario {
            Sink::Accepts => None,
            Sink::Answers(status) => Some(Reply {
                status,
                headers: vec![],
                body: "{\"errors\": [{\"message\": \"no\"}]}".into(),
            }),
            Sink::RateLimits => Some(Reply::status(429).header("Retry-After", "1")),
            Sink::Refuses => None,
        };
        *answer.lock().unwrap() = reply;
        let mut env = secret_env(&db_url, &slack_url(&base), &hook_url(&base));
        env.push((
            "SIGNET_POLICY".into(),
            spec(&format!("{base}/v3/mail/send"), smtp.port),
        ));
        let what = format!("send-reminders, sink {scenario:?}");
        let seed = async || {
            testing::seed(
                &store,
                &[Seed::pending(25.0 * HOUR), Seed::pending(26.0 * HOUR)],
            )
            .await
            .unwrap();
        };
        for (stdout, _, code) in
            run_worker(&what, "send-reminders", &env, &[], (BOTH, true), seed).await
        {
            assert_eq!(code, Some(0), "{what}: {stdout}");
            let line = summary(&stdout);
            // Two new workflows, four channels; earlier scenarios' retries may come back too.
            assert!(line["due"].as_u64().unwrap() >= 8, "{what}: {line}");
            let sent = line["sent"].as_u64().unwrap();
            match scenario {
                // SendGrid, webhook and Slack accept; SMTP has no STARTTLS here.
                Sink::Accepts => assert_eq!(sent, 6, "{what}: {line}"),
                _ => assert_eq!(sent, 0, "{what}: {line}"),
            }
        }
        if matches!(scenario, Sink::Answers(_) | Sink::RateLimits) {
            assert!(sink.requests().len() > 1, "{what}: the sink was not asked");
        }
        let errors = check_log_table(&what, &store).await;
        assert!(errors > 0, "{what}: no errors recorded");
    }
    // The sink saw the HMAC key only as a signature, and no request carried the database password.
    for request in sink.requests() {
        let text = format!(
            "{:?} {}",
            request.headers,
            String::from_utf8_lossy(&request.body)
        );
        assert!(
            !text.contains(HMAC_KEY) && !text.contains(DB_PASSWORD),
            "{text}"
        );
    }
    store.close().await;
}

/// `check-timeouts` with failing deliveries, "in a cluster" whose API server is unreachable (so
/// the status write fails and says why), with a termination message file and a Pushgateway: the
/// logs, the summary, the termination message and the push carry no canary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_timeouts_never_shows_a_secret_in_status_termination_message_or_push() {
    let Some((db, store)) = TestDatabase::new(Backend::Postgres).await else {
        return;
    };
    let sink = HttpServer::start().await;
    sink.rule(|r| r.path.contains("mail").then(|| Reply::status(500)));
    let pushgateway = HttpServer::start().await;
    let smtp = SmtpServer::start().await;
    let refused = format!("http://127.0.0.1:{}", closed_port());
    let base = format!("http://{}", sink.addr);
    let dir = tempdir();
    let message = dir.join("termination-log");
    let mut env = secret_env(
        &with_canary_password(&db.url),
        &slack_url(&refused),
        &hook_url(&base),
    );
    env.push((
        "SIGNET_POLICY".into(),
        spec(&format!("{base}/v3/mail/send"), smtp.port),
    ));
    let cluster = [
        ("KUBERNETES_SERVICE_HOST", "127.0.0.1".to_owned()),
        ("KUBERNETES_SERVICE_PORT", closed_port().to_string()),
        ("SIGNET_POLICY_REF", "enrollment/agreements".to_owned()),
        ("SIGNET_JOB_NAME", "agreements-timeouts-1".to_owned()),
        (
            "SIGNET_TERMINATION_MESSAGE_PATH",
            message.display().to_string(),
        ),
        (
            "SIGNET_PUSHGATEWAY_URL",
            format!("http://{}/", pushgateway.addr),
        ),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let seed = async || {
        let _ = std::fs::remove_file(&message);
        testing::seed(&store, &[Seed::pending(15.0 * 24.0 * HOUR)])
            .await
            .unwrap();
    };
    let what = "check-timeouts in a cluster";
    let runs = run_worker(what, "check-timeouts", &env, &cluster, (BOTH, true), seed).await;
    for (stdout, stderr, code) in &runs {
        assert_eq!(*code, Some(0), "{what}: {stdout}");
        let line = summary(stdout);
        assert_eq!(
            (&line["timedOut"], &line["sent"]),
            (&1.into(), &1.into()),
            "{what}: only the webhook accepts: {line}"
        );
        assert!(
            stderr.contains("cannot write the run's status"),
            "{what}: the status write did not fail visibly:\n{stderr}"
        );
    }
    // The last run's termination message: its summary line, written despite the status failure.
    let written = std::fs::read_to_string(&message).expect("a termination message");
    assert_no_canary("the termination message", &written);
    assert!(written.contains("\"timedOut\":1"), "{written}");
    let pushes = pushgateway.requests();
    assert_eq!(pushes.len(), 2, "one push per run");
    for push in pushes {
        let text = format!(
            "{} {:?} {}",
            push.path,
            push.headers,
            String::from_utf8_lossy(&push.body)
        );
        assert_no_canary("the Pushgateway push", &text);
        assert!(push.path.contains("/policy/agreements/"), "{}", push.path);
    }
    assert!(check_log_table(what, &store).await >= 4);
    store.close().await;
}

/// The database unreachable, or its URL unusable, with a canary password: the error line, the
/// logs and the termination message name the failure but not the password, for every command
/// that connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_failures_never_show_the_password() {
    let dir = tempdir();
    let message = dir.join("termination-log");
    let port = closed_port();
    let unreachable = format!("postgres://signet:{DB_PASSWORD}@127.0.0.1:{port}/db");
    let bad_port = format!("postgres://signet:{DB_PASSWORD}@127.0.0.1:99999/db");
    let query = format!("postgres://signet@127.0.0.1:{port}/db?password={DB_PASSWORD}");
    let bad_scheme = format!("mysql://signet:{DB_PASSWORD}@127.0.0.1:{port}/db");
    let sink = HttpServer::start().await;
    let base = format!("http://{}", sink.addr);
    // An unreachable database costs the pool's 15s connect timeout per run: fewer runs of it.
    let runs: [(&String, i32, &[&str], &[&str]); 4] = [
        (
            &unreachable,
            1,
            &["send-reminders", "check-timeouts"],
            &["text"],
        ),
        (&query, 1, &["send-reminders"], &["json"]),
        (&bad_port, 2, &["send-reminders", "check-timeouts"], BOTH),
        (&bad_scheme, 2, &["send-reminders"], &["text"]),
    ];
    for (url, expected_code, commands, formats) in runs {
        let mut env = secret_env(url, &slack_url(&base), &hook_url(&base));
        env.push((
            "SIGNET_POLICY".into(),
            spec(&format!("{base}/v3/mail/send"), 25),
        ));
        let cluster = [
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1".to_owned()),
            ("KUBERNETES_SERVICE_PORT", closed_port().to_string()),
            ("SIGNET_POLICY_REF", "enrollment/agreements".to_owned()),
            (
                "SIGNET_TERMINATION_MESSAGE_PATH",
                message.display().to_string(),
            ),
            (
                "SIGNET_PUSHGATEWAY_URL",
                format!("http://signet:{PUSH_PASSWORD}@127.0.0.1:{}/", closed_port()),
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v));
        for &command in commands {
            let what = format!("{command} with database {url}");
            let clean = async || {
                let _ = std::fs::remove_file(&message);
            };
            let runs = run_worker(&what, command, &env, &cluster, (formats, false), clean).await;
            for (stdout, stderr, code) in runs {
                assert_eq!(code, Some(expected_code), "{what}: {stdout}");
                let line = summary(&stdout);
                assert!(
                    line["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{what}: {line}"
                );
                assert!(
                    stderr.contains("cannot push the run's metrics"),
                    "{what}: the push did not fail visibly:\n{stderr}"
                );
                let written = std::fs::read_to_string(&message).expect("a termination message");
                assert_no_canary(&format!("{what}: termination message"), &written);
            }
        }
    }
    for args in [
        vec!["plan"],
        vec!["migrate", "--database-url", &unreachable],
        vec!["migrate", "--database-url", &bad_port],
    ] {
        let mut env = secret_env(&unreachable, &slack_url(&base), &hook_url(&base));
        env.push((
            "SIGNET_POLICY".into(),
            spec(&format!("{base}/v3/mail/send"), 25),
        ));
        let output = signet(&args, &env).await;
        let what = format!("{args:?}");
        let (_, stderr) = checked(&what, &output);
        assert_ne!(output.status.code(), Some(0), "{what}");
        assert!(stderr.contains("signet"), "{what}: no error line: {stderr}");
    }
}

/// `plan` and `demo` against a reachable database whose URL carries the canary password; `render`
/// with every secret variable set (it must not read them: the CronJobs get `secretKeyRef`s);
/// `--help` with the database URL and the policy in the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_demo_render_and_help_never_show_a_secret() {
    let Some((db, store)) = TestDatabase::new(Backend::Postgres).await else {
        return;
    };
    testing::seed(&store, &[Seed::pending(25.0 * HOUR)])
        .await
        .unwrap();
    store.close().await;
    let base = "http://127.0.0.1:9";
    let policy = spec(&format!("{base}/v3/mail/send"), 25);
    let mut env = secret_env(
        &with_canary_password(&db.url),
        &slack_url(base),
        &hook_url(base),
    );
    env.push(("SIGNET_POLICY".into(), policy.clone()));

    for output in ["table", "json"] {
        let out = signet(&["plan", "-o", output], &env).await;
        let (stdout, _) = checked(&format!("plan -o {output}"), &out);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert!(stdout.contains("hook"), "plan -o {output}: {stdout}");
    }

    // The demo reports the database it uses, password masked.
    let Some(demo_db) = TestDatabase::postgres().await else {
        return;
    };
    let out = signet(
        &[
            "demo",
            "--database-url",
            &with_canary_password(&demo_db.url),
        ],
        &env,
    )
    .await;
    let (stdout, _) = checked("demo", &out);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout.contains(":***@"), "demo: {stdout}");
    // libpq's other way of giving the password: a query parameter.
    let Some(demo_db) = TestDatabase::postgres().await else {
        return;
    };
    let mut url = reqwest::Url::parse(&demo_db.url).unwrap();
    url.query_pairs_mut().append_pair("password", DB_PASSWORD);
    let out = signet(&["demo", "--database-url", url.as_str()], &env).await;
    let (stdout, _) = checked("demo, password in the query", &out);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout.contains("password=***"), "demo: {stdout}");

    // render: a whole policy in a file, every secret variable set in its environment.
    let dir = tempdir();
    let file = dir.join("policy.json");
    let whole = format!(
        r#"{{"apiVersion": "signet.dev/v1alpha1", "kind": "SignaturePolicy",
            "metadata": {{"name": "agreements", "namespace": "enrollment"}}, "spec": {policy}}}"#
    );
    std::fs::write(&file, whole).unwrap();
    let out = signet(&["render", "-f", &file.display().to_string()], &env).await;
    let (stdout, _) = checked("render", &out);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    let mut secret_vars = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("- name: SIGNET_SECRET_") {
            secret_vars += 1;
            let next = lines.get(i + 1).map(|l| l.trim()).unwrap_or_default();
            assert_eq!(next, "valueFrom:", "render: {line} is not from a Secret");
            let reference = lines.get(i + 2).map(|l| l.trim()).unwrap_or_default();
            assert_eq!(reference, "secretKeyRef:", "render: {line}");
        }
    }
    // Reminders and timeouts CronJobs, 7 secret variables each.
    assert_eq!(secret_vars, 14, "render:\n{stdout}");
    // The policy reaches the worker as an env var; it holds references, never values.
    assert!(stdout.contains("SIGNET_POLICY"), "{stdout}");

    for args in [
        vec!["--help"],
        vec!["send-reminders", "--help"],
        vec!["check-timeouts", "--help"],
        vec!["plan", "--help"],
        vec!["migrate", "--help"],
        vec!["demo", "--help"],
    ] {
        let mut env = env.clone();
        env.push(("SIGNET_DATABASE_URL".into(), with_canary_password(&db.url)));
        env.push((
            "SIGNET_DEMO_DATABASE_URL".into(),
            with_canary_password(&db.url),
        ));
        let out = signet(&args, &env).await;
        let (stdout, _) = checked(&format!("{args:?}"), &out);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert!(stdout.contains("Usage"), "{args:?}: {stdout}");
    }
}

/// Channel errors for each way a request can fail carry no secret: the Slack and webhook URLs
/// are the secret, and reqwest puts the URL in its errors. Also the timeout, which a whole
/// worker run would wait 30 seconds for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_errors_never_show_the_url_or_a_key() {
    use signet::notify::{self, HttpTimeouts};

    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_base = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let sink = HttpServer::start().await;
    sink.rule(|_| Some(Reply::status(503)));
    let refused = format!("http://127.0.0.1:{}", closed_port());
    let http = notify::http_client(HttpTimeouts {
        connect: Duration::from_millis(500),
        total: Duration::from_millis(500),
    })
    .unwrap();
    let out = common::Capture::default();
    let mut reasons = HashMap::new();
    for (base, expected) in [
        (silent_base.as_str(), "ProviderTimeout"),
        (refused.as_str(), "ProviderUnreachable"),
        (&format!("http://{}", sink.addr), "ProviderUnavailable"),
        // Not a URL at all: the channel's configuration is wrong, and says so without the value.
        (
            &format!("not a url {HOOK_TOKEN} {SLACK_TOKEN}"),
            "ChannelMisconfigured",
        ),
    ] {
        let spec = common::policy(&format!(
            "  database: {{urlSecretRef: {{name: db, key: url}}}}\n{}",
            r#"  reminders: {channels: [hook, ops]}
  channels:
    - name: hook
      webhook: {urlSecretRef: {name: hook, key: url}, signingSecretRef: {name: hook, key: hmac}}
    - name: ops
      slack: {webhookUrlSecretRef: {name: slack, key: url}}
"#
        ));
        let secrets: HashMap<String, String> = secret_env("", &slack_url(base), &hook_url(base))
            .into_iter()
            .collect();
        let env = |name: &str| secrets.get(name).cloned();
        let channels =
            notify::build_channels(&spec, &["hook", "ops"], &env, &http, &out.shared()).unwrap();
        let message = message();
        for (name, channel) in &channels {
            let result = match channel {
                notify::Channel::Message(channel) => channel.send(&message).await,
                notify::Channel::Digest(channel) => {
                    let digest = notify::Digest::from_messages(std::slice::from_ref(&message));
                    channel.send(&digest).await
                }
            };
            let err = result.expect_err("the send fails");
            let what = format!("channel {name} at {base:?}");
            assert_no_canary(&what, &format!("{err} {err:?}"));
            assert_eq!(err.reason(), expected, "{what}: {err}");
            reasons.insert(err.reason(), err.to_string());
        }
    }
    held.abort();
    // The messages still say what happened.
    assert!(
        reasons["ProviderUnreachable"].contains("onnect"),
        "{reasons:?}"
    );
}

fn message() -> signet::notify::Message {
    signet::notify::Message {
        log_id: 1,
        kind: signet::policy::NoticeKind::Reminder,
        sequence: 1,
        workflow_id: uuid::Uuid::new_v4(),
        workflow_type: "enrollment-agreement".into(),
        signer_email: "ada@example.com".into(),
        signer_name: None,
        document_title: None,
        signing_url: None,
        deadline: None,
        idempotency_key: "signet:test".into(),
        content: signet::policy::templates::Rendered {
            subject: "s".into(),
            text: "t".into(),
            html: "h".into(),
        },
    }
}

/// A fresh directory under the system's temporary directory.
fn tempdir() -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("signet-secrets-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---- SQL only with bind parameters --------------------------------------------------------

/// Every statement the store runs goes through sqlx's `SqlSafeStr`: in the product store, a
/// `&'static str` (the files of `src/store/sql/`), never an `AssertSqlSafe` of a string built at
/// run time. Outside the store, no SQL at all. (Test support, `testing.rs` and `tests/`, may
/// assert its own SQL safe.)
#[test]
fn sql_is_static_text_in_the_store_and_absent_elsewhere() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut store_files = 0;
    for entry in walk(&root.join("src")) {
        let relative = entry.strip_prefix(root).unwrap();
        let source = std::fs::read_to_string(&entry).unwrap();
        if relative.starts_with("src/store") {
            let test_support =
                relative.ends_with("testing.rs") || relative.starts_with("src/store/tests");
            if !test_support {
                store_files += 1;
                assert!(
                    !source.contains("AssertSqlSafe"),
                    "{} runs SQL that is not static text",
                    relative.display()
                );
            }
        } else {
            assert!(
                !source.contains("AssertSqlSafe") && !source.contains("sqlx::query"),
                "{} runs SQL outside src/store",
                relative.display()
            );
        }
    }
    assert!(
        store_files >= 3,
        "only {store_files} store files: has the store moved?"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}
