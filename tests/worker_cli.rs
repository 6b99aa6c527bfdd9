//! The worker subcommands as a CronJob runs them: env vars in, exit code and summary line out.

use std::process::{Command, Output};

use signet::store::testing::{self, Backend, Seed, TestDatabase};

const HOUR: f64 = 3600.0;

fn signet(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_signet"));
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("SIGNET_LOG_LEVEL")
        .env_remove("SIGNET_POLICY")
        .env_remove("SIGNET_DATABASE_URL");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("signet runs")
}

fn stdout_lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

const SPEC: &str = r#"{
  "database": {"urlSecretRef": {"name": "app-db", "key": "url"}},
  "reminders": {"channels": ["console"]},
  "channels": [{"name": "console", "log": {}}]
}"#;

#[tokio::test]
async fn send_reminders_runs_from_env_and_prints_a_summary() {
    let (db, store) = TestDatabase::new(Backend::Sqlite).await.unwrap();
    let due = Seed::pending(25.0 * HOUR);
    testing::seed(&store, &[due.clone(), Seed::pending(HOUR)])
        .await
        .unwrap();
    store.close().await;

    let output = signet(
        &["send-reminders"],
        &[
            ("SIGNET_POLICY", SPEC),
            ("SIGNET_SECRET_APP_DB_URL", &db.url),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let lines = stdout_lines(&output);
    assert_eq!(lines.len(), 2, "one log line, then the summary: {lines:?}");
    assert_eq!(lines[0]["channel"], "console");
    assert_eq!(lines[0]["notification"]["workflowId"], due.id.to_string());
    let summary = &lines[1];
    for key in [
        "due",
        "sent",
        "held",
        "failed",
        "possibleDuplicates",
        "durationMs",
    ] {
        assert!(summary.get(key).is_some(), "{key} in {summary}");
    }
    assert_eq!(
        (&summary["due"], &summary["sent"], &summary["outcome"]),
        (&1.into(), &1.into(), &"Succeeded".into())
    );

    // The whole SignaturePolicy is accepted too; nothing is due any more.
    let whole = format!(
        r#"{{"apiVersion": "signet.dev/v1alpha1", "kind": "SignaturePolicy", "metadata": {{"name": "p"}}, "spec": {SPEC}}}"#
    );
    let output = signet(
        &["send-reminders", "--database-url", &db.url],
        &[("SIGNET_POLICY", &whole)],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let lines = stdout_lines(&output);
    assert_eq!((lines.len(), &lines[0]["sent"]), (1, &0.into()));
}

#[tokio::test]
async fn check_timeouts_runs_from_env_and_prints_a_summary() {
    let (db, store) = TestDatabase::new(Backend::Sqlite).await.unwrap();
    let expired = Seed::pending(15.0 * 24.0 * HOUR);
    testing::seed(&store, &[expired.clone(), Seed::pending(HOUR)])
        .await
        .unwrap();
    store.close().await;
    let spec = r#"{
      "database": {"urlSecretRef": {"name": "app-db", "key": "url"}},
      "timeout": {"after": "14d", "schedule": "0 * * * *", "channels": ["console"]},
      "channels": [{"name": "console", "log": {}}]
    }"#;
    let env = [
        ("SIGNET_POLICY", spec),
        ("SIGNET_SECRET_APP_DB_URL", &db.url),
    ];

    let output = signet(&["check-timeouts"], &env);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let lines = stdout_lines(&output);
    assert_eq!(
        lines.len(),
        2,
        "one alert line, then the summary: {lines:?}"
    );
    assert_eq!(lines[0]["notification"]["kind"], "timeout_alert");
    assert_eq!(
        lines[0]["notification"]["workflowId"],
        expired.id.to_string()
    );
    let summary = &lines[1];
    assert_eq!(
        (
            &summary["timedOut"],
            &summary["sent"],
            &summary["failed"],
            &summary["outcome"]
        ),
        (&1.into(), &1.into(), &0.into(), &"Succeeded".into()),
        "{summary}"
    );
    assert!(summary.get("durationMs").is_some(), "{summary}");

    let again = signet(&["check-timeouts"], &env);
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    let lines = stdout_lines(&again);
    assert_eq!(lines.len(), 1, "nothing sent twice: {lines:?}");
    assert_eq!(lines[0]["timedOut"], 0);

    // A channel the timeout names but whose secret is missing: configuration error, exit 2.
    let hook = r#"{
      "database": {"urlSecretRef": {"name": "app-db", "key": "url"}},
      "timeout": {"after": "14d", "schedule": "0 * * * *", "channels": ["hook"]},
      "channels": [{"name": "hook", "webhook": {"urlSecretRef": {"name": "hook", "key": "url"}}}]
    }"#;
    let output = signet(
        &["check-timeouts"],
        &[
            ("SIGNET_POLICY", hook),
            ("SIGNET_SECRET_APP_DB_URL", &db.url),
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let lines = stdout_lines(&output);
    assert_eq!(lines[0]["outcome"], "ConfigError");
    assert!(
        lines[0]["error"]
            .as_str()
            .unwrap()
            .contains("SIGNET_SECRET_HOOK_URL"),
        "{}",
        lines[0]
    );
}

#[tokio::test]
async fn configuration_errors_exit_2_and_database_failures_exit_1() {
    let (db, store) = TestDatabase::new(Backend::Sqlite).await.unwrap();
    store.close().await;
    let url = db.url.as_str();

    let invalid = SPEC.replace("\"console\"]", "\"nowhere\"]");
    let output = signet(
        &["send-reminders", "--database-url", url],
        &[("SIGNET_POLICY", &invalid)],
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let summary = &stdout_lines(&output)[0];
    assert_eq!(summary["outcome"], "ConfigError");
    assert!(
        summary["error"]
            .as_str()
            .unwrap()
            .contains("no channel named nowhere"),
        "{summary}"
    );

    let output = signet(&["send-reminders"], &[("SIGNET_POLICY", "{not json")]);
    assert_eq!(output.status.code(), Some(2));

    let output = signet(&["send-reminders"], &[("SIGNET_POLICY", SPEC)]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "the database secret is missing"
    );
    assert!(
        stdout_lines(&output)[0]["error"]
            .as_str()
            .unwrap()
            .contains("SIGNET_SECRET_APP_DB_URL")
    );

    let hook = SPEC.replace(
        r#"{"name": "console", "log": {}}"#,
        r#"{"name": "console", "webhook": {"urlSecretRef": {"name": "hook", "key": "url"}}}"#,
    );
    let output = signet(
        &["send-reminders", "--database-url", url],
        &[("SIGNET_POLICY", &hook)],
    );
    assert_eq!(
        output.status.code(),
        Some(2),
        "a channel's secret is missing"
    );
    assert!(
        stdout_lines(&output)[0]["error"]
            .as_str()
            .unwrap()
            .contains("SIGNET_SECRET_HOOK_URL")
    );

    let output = signet(
        &["send-reminders", "--database-url", "ftp://db"],
        &[("SIGNET_POLICY", SPEC)],
    );
    assert_eq!(output.status.code(), Some(2), "an unusable URL");

    let output = signet(
        &[
            "send-reminders",
            "--database-url",
            "postgres://postgres@127.0.0.1:1/none?connect_timeout=2",
        ],
        &[("SIGNET_POLICY", SPEC)],
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(stdout_lines(&output)[0]["outcome"], "Failed");
}

#[tokio::test]
async fn plan_and_migrate_from_the_command_line() {
    let dir = std::env::temp_dir().join(format!("signet-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("app.db").display());
    for _ in 0..2 {
        let output = signet(&["migrate", "--database-url", &url], &[]);
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "migrations applied (SQLite)\n"
        );
    }
    let store = signet::store::Store::connect(&url, &Default::default())
        .await
        .unwrap();
    let due = Seed::pending(25.0 * HOUR);
    testing::seed(&store, std::slice::from_ref(&due))
        .await
        .unwrap();
    store.close().await;

    let file = dir.join("policy.yaml");
    std::fs::write(
        &file,
        "apiVersion: signet.dev/v1alpha1\nkind: SignaturePolicy\nmetadata: {name: p}\nspec:\n  database: {urlSecretRef: {name: app-db, key: url}}\n  reminders: {channels: [console]}\n  channels: [{name: console, log: {}}]\n",
    )
    .unwrap();
    let output = signet(
        &[
            "plan",
            "--policy-file",
            file.to_str().unwrap(),
            "-o",
            "json",
        ],
        &[("SIGNET_SECRET_APP_DB_URL", &url)],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!((&plan["send"], &plan["held"]), (&1.into(), &0.into()));
    assert_eq!(plan["deliveries"][0]["workflowId"], due.id.to_string());
    assert_eq!(plan["deliveries"][0]["channel"], "console");
    assert_eq!(plan["deliveries"][0]["action"], "send");

    let output = signet(
        &["plan", "--policy-file", file.to_str().unwrap()],
        &[("SIGNET_SECRET_APP_DB_URL", &url)],
    );
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(table.starts_with("WORKFLOW "), "{table}");
    assert!(table.contains(&format!("{}  reminder", due.id)), "{table}");
    assert!(table.contains("  console: 1 to send, 0 held"), "{table}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn migrate_postgres_into_a_schema() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    for _ in 0..2 {
        let output = signet(
            &[
                "migrate",
                "--database-url",
                &db.url,
                "--schema",
                "enrollment",
            ],
            &[],
        );
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "migrations applied (PostgreSQL, schema enrollment)\n"
        );
    }
    let output = signet(
        &["migrate", "--database-url", &db.url, "--schema", "Bad-Name"],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test]
async fn send_timeout_bounds_each_try() {
    // A webhook receiver that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let (db, store) = TestDatabase::new(Backend::Sqlite).await.unwrap();
    testing::seed(&store, &[Seed::pending(25.0 * HOUR)])
        .await
        .unwrap();
    store.close().await;
    let hook = SPEC.replace(
        r#"{"name": "console", "log": {}}"#,
        r#"{"name": "console", "webhook": {"urlSecretRef": {"name": "hook", "key": "url"}}}"#,
    );
    let env = [
        ("SIGNET_POLICY", hook.as_str()),
        ("SIGNET_SECRET_APP_DB_URL", &db.url),
        ("SIGNET_SECRET_HOOK_URL", &url),
        ("SIGNET_SEND_TIMEOUT", "1s"),
    ];
    let output = signet(&["send-reminders"], &env);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let summary = &stdout_lines(&output)[0];
    // Four tries of 1s (not 30s) and their backoff; left for the next run.
    assert_eq!(
        (&summary["retrying"], &summary["sent"]),
        (&1.into(), &0.into()),
        "{summary}"
    );
    assert!(
        summary["durationMs"].as_u64().unwrap() < 15_000,
        "{summary}"
    );
    let rows = testing::log_rows(&TestDatabase::connect(&db, None).await.unwrap())
        .await
        .unwrap();
    assert!(
        rows[0]
            .error
            .as_deref()
            .unwrap()
            .starts_with("ProviderTimeout:"),
        "{rows:?}"
    );
    assert_eq!(
        (rows[0].reason.as_deref(), rows[0].unconfirmed),
        (Some("ProviderTimeout"), true),
        "the log keeps the reason and that the try went unanswered: {rows:?}"
    );

    let output = signet(&["send-reminders", "--send-timeout", "0s"], &env);
    assert_eq!(output.status.code(), Some(2), "a zero timeout is refused");
}
