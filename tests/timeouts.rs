//! `check-timeouts` behaviour, the same suite against PostgreSQL and SQLite (a fresh database per
//! test), with the alert channels pointed at real servers on 127.0.0.1.

mod common;

use common::Reply;
use common::worker::{HOUR, Harness, on_both, options};
use signet::store::testing::{self, Backend, Seed};
use signet::worker::{TimeoutSummary, Timeouts};

const DAY: f64 = 24.0 * HOUR;

/// (timed out, alerts sent, failed, retrying)
fn counts(s: &TimeoutSummary) -> (u64, u64, u64, u64) {
    (
        s.timed_out,
        s.alerts.sent,
        s.alerts.failed,
        s.alerts.retrying,
    )
}

fn timeout(channels: &str) -> String {
    format!("  timeout: {{after: 14d, schedule: \"0 * * * *\", channels: [{channels}]}}")
}

on_both!(
    expired_workflows_time_out_and_alert_once,
    a_failed_alert_is_retried_without_timing_out_again,
    an_alert_interrupted_mid_send_is_finished_and_counted,
    a_policy_without_timeout_does_nothing,
    alerts_through_a_rejecting_slack_webhook_wait_for_the_next_run,
);

async fn alerts_through_a_rejecting_slack_webhook_wait_for_the_next_run(h: &Harness) {
    let spec = h.policy(&timeout("hook, ops"));
    // The Slack webhook was revoked (Slack answers 404 no_team / 403 invalid_token).
    let revoked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let rule = revoked.clone();
    h.http.rule(move |r| {
        (r.path == "/slack" && rule.load(std::sync::atomic::Ordering::SeqCst))
            .then(|| Reply::status(404).body("no_team"))
    });
    let expired: Vec<Seed> = (0..3).map(|_| Seed::pending(15.0 * DAY)).collect();
    h.seed(&expired).await;

    let run = h.check_timeouts(&spec).await;
    assert_eq!(run.outcome(), signet::crd::RunOutcome::Failed, "{run:?}");
    assert_eq!(
        (run.timed_out, run.alerts.sent, run.alerts.released),
        (3, 3, 3),
        "{run:?}"
    );
    assert_eq!(run.alerts.rejected_channels[0].channel, "ops");
    assert_eq!(run.alerts.rejected_channels[0].status, Some(404));
    let slack = |h: &Harness| {
        h.http
            .requests()
            .iter()
            .filter(|r| r.path == "/slack")
            .count()
    };
    assert_eq!(slack(h), 1, "one digest, refused");

    // Fixed: the next run sends the three alerts in one digest, and nothing times out twice.
    revoked.store(false, std::sync::atomic::Ordering::SeqCst);
    let next = h.check_timeouts(&spec).await;
    assert_eq!(
        next.outcome(),
        signet::crd::RunOutcome::Succeeded,
        "{next:?}"
    );
    assert_eq!((next.timed_out, next.alerts.sent), (0, 3), "{next:?}");
    assert_eq!(slack(h), 2);
    let digest = h.http.requests().last().unwrap().json();
    let text = digest["text"].as_str().unwrap();
    assert!(
        text.starts_with("Signet: 3 notifications (3 timeout alerts)"),
        "{text}"
    );
    for seed in &expired {
        assert!(text.contains(&seed.id.to_string()), "{text}");
    }
    let events = h
        .http
        .requests()
        .iter()
        .filter(|r| r.path == "/events")
        .count();
    assert_eq!(events, 3, "no webhook alert twice");
    assert!(
        testing::log_rows(&h.store)
            .await
            .unwrap()
            .iter()
            .all(|r| r.state == "sent")
    );
}

async fn expired_workflows_time_out_and_alert_once(h: &Harness) {
    let spec = h.policy(&timeout("console, hook"));
    let expired: Vec<Seed> = (0..5).map(|_| Seed::pending(15.0 * DAY)).collect();
    let own_deadline = Seed {
        deadline_in: Some(-60.0),
        ..Seed::pending(HOUR)
    };
    let young = Seed::pending(13.0 * DAY);
    let signed = Seed {
        status: "signed".into(),
        ..Seed::pending(30.0 * DAY)
    };
    h.seed(&expired).await;
    h.seed(&[own_deadline.clone(), young.clone(), signed.clone()])
        .await;

    let run = h.check_timeouts(&spec).await;
    assert_eq!(counts(&run), (6, 12, 0, 0), "{run:?}");
    assert_eq!(run.outcome(), signet::crd::RunOutcome::Succeeded);

    // The log channel: one line per workflow, kind timeout_alert.
    let logged = h.logged();
    assert_eq!(logged.len(), 6);
    assert!(
        logged
            .iter()
            .all(|(kind, seq, _)| kind == "timeout_alert" && *seq == 1)
    );
    // The webhook: one signed event per workflow.
    let events = h.http.requests();
    assert_eq!(events.len(), 6);
    for event in &events {
        assert_eq!(event.path, "/events");
        assert_eq!(event.json()["type"], "signet.timeout_alert");
        assert!(event.header("x-signet-signature").is_some());
    }
    let mut alerted: Vec<String> = events
        .iter()
        .map(|e| e.json()["data"]["workflowId"].as_str().unwrap().to_owned())
        .collect();
    alerted.sort();
    let mut expected: Vec<String> = expired
        .iter()
        .chain([&own_deadline])
        .map(|s| s.id.to_string())
        .collect();
    expected.sort();
    assert_eq!(alerted, expected);
    for s in [&young, &signed] {
        let row = testing::workflow(&h.store, s.id).await.unwrap();
        assert_eq!(row.status, s.status);
    }
    assert!(
        testing::log_rows(&h.store)
            .await
            .unwrap()
            .iter()
            .all(|r| r.kind == "timeout_alert" && r.state == "sent")
    );

    // Exactly once: a second run times out nothing and sends nothing.
    let again = h.check_timeouts(&spec).await;
    assert_eq!(counts(&again), (0, 0, 0, 0));
    assert_eq!(h.http.requests().len(), 6);
    assert_eq!(h.logged().len(), 6);
}

async fn a_failed_alert_is_retried_without_timing_out_again(h: &Harness) {
    let spec = h.policy(&timeout("hook"));
    let s = Seed::pending(15.0 * DAY);
    h.seed(std::slice::from_ref(&s)).await;
    // Every try of the first run fails with 503 (three tries in the test's retry policy).
    h.http
        .enqueue([Reply::status(503), Reply::status(503), Reply::status(503)]);
    let run = h.check_timeouts(&spec).await;
    assert_eq!(counts(&run), (1, 0, 0, 1), "{run:?}");
    assert_eq!(
        run.outcome(),
        signet::crd::RunOutcome::CompletedWithFailures
    );
    // Not yet: the retry waits for its delay.
    assert_eq!(counts(&h.check_timeouts(&spec).await), (0, 0, 0, 0));

    testing::expire_leases(&h.store).await.unwrap();
    let next = h.check_timeouts(&spec).await;
    assert_eq!(counts(&next), (0, 1, 0, 0), "{next:?}");
    assert_eq!(
        (next.alerts.recovered, next.alerts.possible_duplicates),
        (1, 0),
        "the failed attempt recorded its error, so it cannot have gone out"
    );
    let rows = testing::log_rows(&h.store).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].state.as_str(), rows[0].attempts), ("sent", 2));
}

async fn an_alert_interrupted_mid_send_is_finished_and_counted(h: &Harness) {
    let spec = h.policy(&timeout("console"));
    let s = Seed::pending(15.0 * DAY);
    h.seed(std::slice::from_ref(&s)).await;
    // A worker timed the row out, logged its alert, and died before recording the send.
    let taken = time_out_without_sending(h).await;
    assert_eq!((taken.workflows.len(), taken.alerts.len()), (1, 1));

    // While its lease holds, nobody else sends it.
    assert_eq!(counts(&h.check_timeouts(&spec).await), (0, 0, 0, 0));
    testing::expire_leases(&h.store).await.unwrap();
    let run = h.check_timeouts(&spec).await;
    assert_eq!(counts(&run), (0, 1, 0, 0), "{run:?}");
    assert_eq!(
        (run.alerts.recovered, run.alerts.possible_duplicates),
        (1, 1)
    );
    assert_eq!(h.logged().len(), 1);
}

async fn a_policy_without_timeout_does_nothing(h: &Harness) {
    let spec = h.policy("  reminders: {channels: [console]}");
    h.seed(&[Seed::pending(30.0 * DAY)]).await;
    let channels = h.channels(&spec);
    let policy = signet::policy::Policy::parse(&spec).unwrap();
    let run = Timeouts::new(&policy, &channels, options())
        .unwrap()
        .check_timeouts(&h.store)
        .await
        .unwrap();
    assert_eq!(counts(&run), (0, 0, 0, 0));
    assert!(testing::timed_out(&h.store).await.unwrap().is_empty());
}

/// Times out what has expired and logs its `console` alerts, as a worker that dies before
/// sending them would.
async fn time_out_without_sending(h: &Harness) -> signet::store::TimedOut {
    use signet::policy::TimeoutQuery;
    use signet::store::TimeoutCursor;
    let query = TimeoutQuery {
        workflow_types: vec![],
        timeout_after: std::time::Duration::from_secs_f64(14.0 * DAY),
    };
    h.store
        .time_out(
            &query,
            &mut TimeoutCursor::default(),
            &["console".into()],
            std::time::Duration::from_secs(900),
            10,
        )
        .await
        .unwrap()
}

async fn sqlite_harness() -> Harness {
    Harness::new(Backend::Sqlite).await.unwrap()
}

#[tokio::test]
async fn slack_gets_one_digest_per_run_with_the_count_and_first_items() {
    let h = sqlite_harness().await;
    let spec = h.policy(&timeout("ops"));
    let seeds: Vec<Seed> = (0..14).map(|_| Seed::pending(15.0 * DAY)).collect();
    h.seed(&seeds).await;
    let run = h.check_timeouts(&spec).await;
    assert_eq!(counts(&run), (14, 14, 0, 0));
    let requests = h.http.requests();
    assert_eq!(
        requests.len(),
        1,
        "one digest, never one message per workflow"
    );
    let text = requests[0].json()["text"].as_str().unwrap().to_owned();
    assert!(
        text.starts_with("Signet: 14 notifications (14 timeout alerts)"),
        "{text}"
    );
    assert_eq!(text.matches("\n• timeout alert: ").count(), 10, "{text}");
    assert!(text.ends_with("\n…and 4 more"), "{text}");
}

#[tokio::test]
async fn a_digest_of_500_timeouts_with_4kb_titles_stays_within_slacks_limits() {
    let h = sqlite_harness().await;
    let spec = h.policy(&timeout("ops"));
    let seeds: Vec<Seed> = (0..500).map(|_| Seed::pending(15.0 * DAY)).collect();
    h.seed(&seeds).await;
    // 4 KB titles full of mrkdwn and Slack control characters.
    let title = "*bold* _it_ ~gone~ `code` <!channel> & ".repeat(106);
    assert!(title.len() >= 4096);
    testing::execute(
        &h.store,
        &format!("UPDATE signature_workflows SET document_title = '{title}'"),
    )
    .await
    .unwrap();
    let run = h.check_timeouts(&spec).await;
    assert_eq!(counts(&run), (500, 500, 0, 0), "{run:?}");
    let requests = h.http.requests();
    assert_eq!(requests.len(), 1, "one digest");
    let payload = requests[0].json();

    // Slack's limits, as src/notify/slack.rs cites them.
    let units = |s: &str| s.encode_utf16().count();
    let text = payload["text"].as_str().unwrap();
    assert!(units(text) <= 4_000, "text of {}", units(text));
    let blocks = payload["blocks"].as_array().unwrap();
    assert!(blocks.len() <= 50);
    assert_eq!(blocks[0]["type"], "header");
    assert!(blocks[0]["text"]["text"].as_str().unwrap().chars().count() <= 150);
    let sections: Vec<&str> = blocks
        .iter()
        .filter(|b| b["type"] == "section")
        .map(|b| b["text"]["text"].as_str().unwrap())
        .collect();
    assert!(sections.iter().all(|s| units(s) <= 3_000));

    let listed = text.matches("\n• timeout alert: ").count();
    assert!((1..=10).contains(&listed), "{text}");
    assert_eq!(sections.len(), listed, "a section per listed alert");
    assert!(
        text.starts_with("Signet: 500 notifications (500 timeout alerts)\n"),
        "{text}"
    );
    let more = format!("…and {} more", 500 - listed);
    assert!(text.ends_with(&format!("\n{more}")), "{text}");
    let context = blocks.last().unwrap();
    assert_eq!(context["type"], "context");
    assert_eq!(
        context["elements"][0]["text"],
        format!("500 timeout alerts · {more}")
    );

    // Escaped: no control character of Slack's, and no formatting character that touches a
    // word without an invisible guard between them.
    let z = '\u{200b}';
    for item in sections
        .iter()
        .copied()
        .chain(text.lines().filter(|l| l.starts_with("• ")))
    {
        assert!(
            !item.contains("<!channel>") && !item.contains("& "),
            "{item}"
        );
        assert!(item.contains("&lt;!channel&gt; &amp; "), "{item}");
        for delimiter in ['*', '_', '~', '`'] {
            for (at, _) in item.match_indices(delimiter) {
                let before = item[..at].chars().next_back();
                let after = item[at + 1..].chars().next();
                assert!(
                    before == Some(z) && after == Some(z),
                    "{delimiter} unguarded in {item:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn email_alerts_go_to_the_channels_own_recipients() {
    let h = sqlite_harness().await;
    let spec = h.policy(&timeout("mail, smtp"));
    let s = Seed::pending(15.0 * DAY);
    h.seed(std::slice::from_ref(&s)).await;
    let run = h.check_timeouts(&spec).await;
    assert_eq!(counts(&run), (1, 2, 0, 0), "{run:?}");

    let sendgrid = &h.http.requests()[0];
    let body = sendgrid.json();
    assert_eq!(
        body["personalizations"][0]["to"],
        serde_json::json!([{"email": "ops@example.com"}])
    );
    assert_eq!(
        body["custom_args"]["signet_idempotency_key"],
        format!("signet:{}:timeout_alert:1:mail", s.id)
    );
    let mails = h.smtp.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, vec!["<ops@example.com>".to_owned()]);
    assert!(
        !mails[0].to.iter().any(|to| to.contains(&s.signer_email)),
        "an alert goes to the team, not to the signer"
    );
}

#[tokio::test]
async fn a_recovered_alert_for_a_workflow_reopened_by_the_application_is_skipped() {
    let h = sqlite_harness().await;
    let spec = h.policy(&timeout("console"));
    let s = Seed::pending(15.0 * DAY);
    h.seed(std::slice::from_ref(&s)).await;
    time_out_without_sending(&h).await;
    // The application cancelled the workflow after Signet timed it out.
    testing::execute(
        &h.store,
        &format!(
            "UPDATE signature_workflows SET status = 'cancelled' WHERE id = '{}'",
            s.id
        ),
    )
    .await
    .unwrap();
    testing::expire_leases(&h.store).await.unwrap();
    let run = h.check_timeouts(&spec).await;
    assert_eq!((run.alerts.skipped, run.alerts.sent), (1, 0), "{run:?}");
    let rows = testing::log_rows(&h.store).await.unwrap();
    assert_eq!(rows[0].state, "failed");
    assert_eq!(
        rows[0].error.as_deref(),
        Some("not sent: the workflow is cancelled")
    );
}

#[tokio::test]
async fn postgres_concurrent_runs_time_out_and_alert_each_workflow_once() {
    let Some(h) = Harness::new(Backend::Postgres).await else {
        return;
    };
    let spec = h.policy(&timeout("hook"));
    let seeds: Vec<Seed> = (0..120)
        .map(|i| Seed {
            deadline_in: (i % 3 == 0).then_some(-5.0),
            ..Seed::pending(15.0 * DAY)
        })
        .collect();
    h.seed(&seeds).await;
    let second_store = h.db.connect(None).await.unwrap();
    let channels = h.channels(&spec);
    let policy = signet::policy::Policy::parse(&spec).unwrap();
    let a = Timeouts::new(&policy, &channels, options()).unwrap();
    let b = Timeouts::new(&policy, &channels, options()).unwrap();
    let (a, b) = tokio::join!(a.check_timeouts(&h.store), b.check_timeouts(&second_store));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.timed_out + b.timed_out, 120, "{a:?} {b:?}");
    assert_eq!(a.alerts.sent + b.alerts.sent, 120, "{a:?} {b:?}");
    let keys: Vec<String> = h
        .http
        .requests()
        .iter()
        .map(|r| r.header("x-signet-idempotency-key").unwrap().to_owned())
        .collect();
    // Counted before and after removing duplicates: a second alert for a workflow fails here.
    let distinct: std::collections::BTreeSet<&String> = keys.iter().collect();
    assert_eq!(keys.len(), 120, "one request per workflow");
    assert_eq!(distinct.len(), 120, "each workflow alerted exactly once");
    second_store.close().await;
}
