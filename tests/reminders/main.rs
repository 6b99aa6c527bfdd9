//! `send-reminders` behaviour, the same suite against PostgreSQL and SQLite (a fresh database per
//! test), and every channel against real servers on 127.0.0.1.

#[path = "../common/mod.rs"]
mod common;

use std::time::Duration;

use chrono::Utc;
use common::Reply;
use common::worker::{HOUR, Harness, on_both, options};
use signet::store::testing::{self, Backend, Seed};
use signet::worker::{Run, RunSummary};

fn counts(s: &RunSummary) -> (u64, u64, u64, u64) {
    (s.due, s.deliveries.sent, s.held, s.deliveries.failed)
}

const REMINDERS: &str =
    "  reminders: {firstAfter: 24h, every: 48h, maxReminders: 3, channels: [console]}";

on_both!(
    reminds_due_pending_workflows_once,
    one_catch_up_after_downtime_then_every_interval_up_to_the_cap,
    expiry_warning_and_escalation_exactly_once,
    send_window_in_the_signers_zone,
    a_delivery_interrupted_mid_send_is_finished_and_counted,
    transient_failures_are_retried_by_the_next_run,
);

async fn reminds_due_pending_workflows_once(h: &Harness) {
    let spec = h.policy(&format!(
        "  selector: {{workflowTypes: [enrollment-agreement]}}\n  timeout: {{after: 14d}}\n{REMINDERS}"
    ));
    let due = Seed::pending(24.0 * HOUR + 120.0);
    let early = Seed::pending(24.0 * HOUR - 120.0);
    let mut finished = Vec::new();
    for status in ["signed", "declined", "cancelled", "timed_out"] {
        let mut s = Seed::pending(30.0 * HOUR);
        s.status = status.into();
        finished.push(s);
    }
    let mut other_type = Seed::pending(30.0 * HOUR);
    other_type.workflow_type = "addendum".into();
    let mut past_deadline = Seed::pending(30.0 * HOUR);
    past_deadline.deadline_in = Some(-60.0);
    let mut late_by_policy = Seed::pending(15.0 * 24.0 * HOUR);
    late_by_policy.reminders_sent = 1;
    late_by_policy.last_reminded_ago = Some(100.0 * HOUR);
    h.seed(&[
        due.clone(),
        early,
        other_type,
        past_deadline,
        late_by_policy,
    ])
    .await;
    h.seed(&finished).await;

    let first = h.run(&spec).await;
    assert_eq!(counts(&first), (1, 1, 0, 0), "{first:?}");
    assert_eq!(h.logged(), [("reminder".into(), 1, due.id.to_string())]);
    let second = h.run(&spec).await;
    assert_eq!(
        counts(&second),
        (0, 0, 0, 0),
        "a second run sends nothing new"
    );
    assert_eq!(h.logged().len(), 1);

    let log = testing::log_rows(&h.store).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (
            log[0].state.as_str(),
            log[0].attempts,
            log[0].channel.as_str()
        ),
        ("sent", 1, "console")
    );
    let w = testing::workflow(&h.store, due.id).await.unwrap();
    assert_eq!(w.reminders_sent, 1);
}

async fn one_catch_up_after_downtime_then_every_interval_up_to_the_cap(h: &Harness) {
    let spec = h.policy(REMINDERS);
    // Requested a month ago and never reminded: three reminders' worth of time has passed.
    let s = Seed::pending(30.0 * 24.0 * HOUR);
    h.seed(std::slice::from_ref(&s)).await;
    assert_eq!(
        h.run(&spec).await.deliveries.sent,
        1,
        "one catch-up reminder, not a burst"
    );
    assert_eq!(h.run(&spec).await.deliveries.sent, 0);
    h.time_passes(47.0).await;
    assert_eq!(
        h.run(&spec).await.deliveries.sent,
        0,
        "every is measured from the last reminder"
    );
    h.time_passes(1.1).await;
    assert_eq!(h.run(&spec).await.deliveries.sent, 1);
    h.time_passes(49.0).await;
    assert_eq!(h.run(&spec).await.deliveries.sent, 1);
    h.time_passes(200.0).await;
    assert_eq!(
        h.run(&spec).await.deliveries.sent,
        0,
        "maxReminders is the cap"
    );
    let sequences: Vec<i64> = h.logged().iter().map(|l| l.1).collect();
    assert_eq!(sequences, [1, 2, 3]);
    let log = testing::log_rows(&h.store).await.unwrap();
    let keys: Vec<&str> = log.iter().map(|r| r.idempotency_key.as_str()).collect();
    assert_eq!(
        keys,
        (1..=3)
            .map(|k| format!("signet:{}:reminder:{k}:console", s.id))
            .collect::<Vec<_>>()
    );
}

async fn expiry_warning_and_escalation_exactly_once(h: &Harness) {
    let spec = h.policy(
        "  timeout: {after: 14d}
  reminders: {firstAfter: 24h, every: 48h, maxReminders: 1, channels: [console]}
  expiryWarning: {before: 48h, channels: [console]}
  escalation: {after: 24h, channels: [console, ops]}",
    );
    let mut s = Seed::pending(25.0 * HOUR);
    s.deadline_in = Some(40.0 * HOUR);
    h.seed(std::slice::from_ref(&s)).await;

    let first = h.run(&spec).await;
    assert_eq!(counts(&first), (2, 2, 0, 0), "{first:?}");
    let kinds: Vec<String> = h.logged().into_iter().map(|l| l.0).collect();
    assert_eq!(kinds, ["reminder", "expiry_warning"]);
    assert_eq!(counts(&h.run(&spec).await), (0, 0, 0, 0));

    h.time_passes(23.0).await;
    assert_eq!(
        h.run(&spec).await.deliveries.sent,
        0,
        "escalation waits `after` past the last reminder"
    );
    h.time_passes(1.1).await;
    let escalated = h.run(&spec).await;
    assert_eq!(
        counts(&escalated),
        (2, 2, 0, 0),
        "console and the Slack digest"
    );
    assert_eq!(h.logged().last().unwrap().0, "escalation");
    assert_eq!(h.http.requests().len(), 1, "one Slack digest");
    h.time_passes(10.0).await;
    assert_eq!(counts(&h.run(&spec).await), (0, 0, 0, 0));

    let log = testing::log_rows(&h.store).await.unwrap();
    let mut kinds: Vec<(String, String)> = log
        .iter()
        .map(|r| (r.kind.clone(), r.channel.clone()))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("escalation".to_owned(), "console".to_owned()),
            ("escalation".into(), "ops".into()),
            ("expiry_warning".into(), "console".into()),
            ("reminder".into(), "console".into()),
        ]
    );
    assert!(
        log.iter()
            .all(|r| r.state == "sent" && r.workflow_id == s.id)
    );
}

async fn send_window_in_the_signers_zone(h: &Harness) {
    // A window open for an hour around now in UTC is closed in Tokyo (UTC+9).
    let now = Utc::now();
    let clock = |t: chrono::DateTime<Utc>| t.format("%H:%M").to_string();
    let spec = h.policy(&format!(
        "  timeZone: UTC\n  reminders: {{channels: [console, hook], sendWindow: {{start: \"{}\", end: \"{}\"}}}}",
        clock(now - chrono::Duration::minutes(30)),
        clock(now + chrono::Duration::minutes(30)),
    ));
    let utc = Seed::pending(25.0 * HOUR);
    let mut tokyo = Seed::pending(25.0 * HOUR);
    tokyo.signer_time_zone = Some("Asia/Tokyo".into());
    let mut unknown_zone = Seed::pending(25.0 * HOUR);
    unknown_zone.signer_time_zone = Some("Mars/Olympus".into());
    h.seed(&[utc.clone(), tokyo.clone(), unknown_zone.clone()])
        .await;

    let plan =
        signet::worker::plan::plan(&h.store, &signet::policy::Policy::parse(&spec).unwrap(), 2)
            .await
            .unwrap();
    assert_eq!((plan.send, plan.held), (4, 2), "{plan:#?}");
    let held: Vec<_> = plan
        .deliveries
        .iter()
        .filter(|d| d.action == "hold")
        .collect();
    assert!(held.iter().all(|d| d.workflow_id == tokyo.id));
    let until = held[0].held_until.unwrap();
    // Tokyo reaches the window's local start 15 hours after UTC does (give or take the half hour).
    let wait = until - now;
    assert!(
        wait > chrono::Duration::hours(14) && wait < chrono::Duration::hours(16),
        "held until {until}"
    );
    assert_eq!(
        testing::log_rows(&h.store).await.unwrap(),
        vec![],
        "plan changes nothing"
    );

    let run = h.run(&spec).await;
    assert_eq!(counts(&run), (6, 4, 2, 0), "{run:?}");
    let mut sent: Vec<String> = h.logged().into_iter().map(|l| l.2).collect();
    sent.sort();
    let mut expected = vec![utc.id.to_string(), unknown_zone.id.to_string()];
    expected.sort();
    assert_eq!(sent, expected);
    // Held, not dropped: still held on the next run, and never logged.
    let again = h.run(&spec).await;
    assert_eq!(counts(&again), (2, 0, 2, 0));
    assert_eq!(
        testing::workflow(&h.store, tokyo.id)
            .await
            .unwrap()
            .reminders_sent,
        0
    );
}

async fn a_delivery_interrupted_mid_send_is_finished_and_counted(h: &Harness) {
    let spec = h.policy("  reminders: {channels: [hook]}");
    let s = Seed::pending(25.0 * HOUR);
    h.seed(std::slice::from_ref(&s)).await;
    // A run claimed it (log row pending, leased) and died before recording the outcome.
    let query = signet::policy::Policy::parse(&spec)
        .unwrap()
        .due_query()
        .unwrap();
    let claimed = h
        .store
        .claim(
            signet::policy::NoticeKind::Reminder,
            &[s.id],
            &["hook".to_owned()],
            &query,
            std::time::Duration::from_secs(900),
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);

    // While the lease holds, nobody touches it.
    assert_eq!(counts(&h.run(&spec).await), (0, 0, 0, 0));
    assert!(h.http.requests().is_empty());

    testing::expire_leases(&h.store).await.unwrap();
    let run = h.run(&spec).await;
    assert_eq!(
        (
            run.due,
            run.deliveries.sent,
            run.deliveries.recovered,
            run.deliveries.possible_duplicates
        ),
        (1, 1, 1, 1),
        "{run:?}"
    );
    let requests = h.http.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].header("X-Signet-Idempotency-Key"),
        Some(claimed[0].idempotency_key.as_str()),
        "the idempotency key travels with the retry"
    );
    let log = testing::log_rows(&h.store).await.unwrap();
    assert_eq!(
        (log.len(), log[0].state.as_str(), log[0].attempts),
        (1, "sent", 2)
    );
    assert_eq!(counts(&h.run(&spec).await), (0, 0, 0, 0));
    assert_eq!(h.http.requests().len(), 1);
}

async fn transient_failures_are_retried_by_the_next_run(h: &Harness) {
    let spec = h.policy("  reminders: {channels: [hook]}");
    h.seed(&[Seed::pending(25.0 * HOUR)]).await;
    h.http
        .enqueue([Reply::status(503), Reply::status(503), Reply::status(502)]);
    let run = h.run(&spec).await;
    assert_eq!(
        (
            run.deliveries.sent,
            run.deliveries.retrying,
            run.deliveries.failed
        ),
        (0, 1, 0),
        "{run:?}"
    );
    assert_eq!(h.http.requests().len(), 3, "three tries within the run");
    let log = testing::log_rows(&h.store).await.unwrap();
    assert_eq!(log[0].state, "pending");
    assert!(
        log[0]
            .error
            .as_deref()
            .unwrap()
            .starts_with("ProviderUnavailable"),
        "{log:?}"
    );
    // The next run after the retry delay sends it; a recorded failure is no possible duplicate.
    testing::expire_leases(&h.store).await.unwrap();
    let next = h.run(&spec).await;
    assert_eq!(
        (
            next.deliveries.sent,
            next.deliveries.recovered,
            next.deliveries.possible_duplicates
        ),
        (1, 1, 0),
        "{next:?}"
    );
    assert_eq!(testing::log_rows(&h.store).await.unwrap()[0].state, "sent");
}

#[tokio::test]
async fn postgres_concurrent_runs_send_each_notification_once() {
    let Some(h) = Harness::new(Backend::Postgres).await else {
        return;
    };
    let spec = h.policy("  reminders: {channels: [hook, console]}");
    let seeds: Vec<Seed> = (0..60).map(|_| Seed::pending(25.0 * HOUR)).collect();
    h.seed(&seeds).await;
    let channels = h.channels(&spec);
    let second_store = h.db.connect(None).await.unwrap();
    let policy = signet::policy::Policy::parse(&spec).unwrap();
    let run_a = Run::new(&policy, &channels, options()).unwrap();
    let run_b = Run::new(&policy, &channels, options()).unwrap();
    let (a, b) = tokio::join!(
        run_a.send_reminders(&h.store),
        run_b.send_reminders(&second_store)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.deliveries.sent + b.deliveries.sent, 120, "{a:?} {b:?}");
    let requests = h.http.requests();
    let mut keys: Vec<&str> = requests
        .iter()
        .map(|r| r.header("X-Signet-Idempotency-Key").unwrap())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!((requests.len(), keys.len()), (60, 60), "no duplicate sends");
    assert_eq!(h.logged().len(), 60);
    let log = testing::log_rows(&h.store).await.unwrap();
    assert_eq!(log.len(), 120, "no duplicate log rows");
    assert!(log.iter().all(|r| r.state == "sent" && r.attempts == 1));
    second_store.close().await;
    h.store.close().await;
}

mod channels;
mod emails;
mod process;
mod rejected;
