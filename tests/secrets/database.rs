//! Database failures with a canary password in the URL, for every command that connects.

use super::*;

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
