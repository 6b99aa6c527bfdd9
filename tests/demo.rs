//! `signet demo`, the README's first command: it runs in seconds on a temporary SQLite file,
//! reports what it did, and sends nothing twice.

use std::process::Command;

use signet::commands::demo;
use signet::store::testing::{Backend, Seed, TestDatabase, seed};

#[test]
fn the_demo_reports_what_it_did_and_cleans_up() {
    let output = Command::new(env!("CARGO_BIN_EXE_signet"))
        .arg("demo")
        .env_remove("SIGNET_DEMO_DATABASE_URL")
        .output()
        .unwrap();
    let report = String::from_utf8(output.stdout.clone()).unwrap();
    assert_eq!(output.status.code(), Some(0), "{report}\n{output:?}");

    for expected in [
        "26 workflows seeded",
        "1. signet plan: 10 to send now, 3 held by the send window",
        "2. signet send-reminders: due 13, sent 10, held 3, failed 0",
        "3. signet check-timeouts: timed out 4, alerts sent 4, failed 0",
        "4. Both again: send-reminders sent 0 (held 3: still outside their window), \
         check-timeouts timed out 0 and sent 0.",
    ] {
        assert!(
            report.contains(expected),
            "{expected:?} missing from:\n{report}"
        );
    }
    let count = |needle: &str| report.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("   held  reminder 1 for "), 3, "{report}");
    assert_eq!(
        count("-> "),
        14,
        "10 reminders and 4 alerts, each once:\n{report}"
    );
    assert_eq!(count("reminder 1       -> "), 3, "{report}");
    assert_eq!(count("reminder 2       -> "), 3, "{report}");
    assert_eq!(count("expiry warning   -> "), 2, "{report}");
    assert_eq!(count("escalation       -> "), 2, "{report}");
    assert_eq!(count("timeout alert    -> "), 4, "{report}");
    assert_eq!(count("summary line"), 2, "{report}");

    // The temporary database is gone.
    let url = report
        .lines()
        .next()
        .and_then(|l| l.split("sqlite://").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .expect("the first line names the database");
    assert!(!std::path::Path::new(url).exists(), "{url} was left behind");
}

#[tokio::test]
async fn the_demo_runs_on_postgres_too_and_refuses_a_database_with_workflows() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let mut report = Vec::new();
    let totals = demo::run(&db.url, &mut report).await.unwrap();
    assert_eq!(
        (
            totals.reminders.due,
            totals.reminders.deliveries.sent,
            totals.reminders.held
        ),
        (13, 10, 3)
    );
    assert_eq!(
        (totals.timeouts.timed_out, totals.timeouts.alerts.sent),
        (4, 4)
    );
    assert_eq!((totals.sent_again, totals.timed_out_again), (0, 0));

    // Run again on the same database: refused, nothing touched.
    let err = demo::run(&db.url, &mut Vec::new()).await.unwrap_err();
    assert!(err.is_configuration(), "{err}");
    assert!(err.to_string().contains("already holds workflows"), "{err}");
}

#[tokio::test]
async fn the_demo_refuses_an_application_database() {
    let (db, store) = TestDatabase::new(Backend::Sqlite).await.unwrap();
    seed(&store, &[Seed::pending(60.0)]).await.unwrap();
    store.close().await;
    let output = Command::new(env!("CARGO_BIN_EXE_signet"))
        .args(["demo", "--database-url", &db.url])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("already holds workflows"), "{stderr}");
}
