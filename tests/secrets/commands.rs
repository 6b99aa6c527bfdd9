//! The commands that are not workers (`plan`, `demo`, `render`, `--help`) show no secret.

use super::*;

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
