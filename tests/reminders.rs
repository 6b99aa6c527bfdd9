//! `send-reminders` behaviour, the same suite against PostgreSQL and SQLite (a fresh database per
//! test), and every channel against real servers on 127.0.0.1.

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

async fn sqlite_harness() -> Harness {
    Harness::new(Backend::Sqlite).await.unwrap()
}

#[tokio::test]
async fn sendgrid_request_shape() {
    let h = sqlite_harness().await;
    let spec = h.policy(
        "  reminders: {channels: [mail]}\n  escalation: {after: 1h, channels: [mail]}\n  timeout: {after: 14d}",
    );
    let reminded = Seed::pending(25.0 * HOUR);
    let mut exhausted = Seed::pending(100.0 * HOUR);
    exhausted.reminders_sent = 3;
    exhausted.last_reminded_ago = Some(2.0 * HOUR);
    h.seed(&[reminded.clone(), exhausted.clone()]).await;
    let run = h.run(&spec).await;
    assert_eq!(counts(&run), (2, 2, 0, 0), "{run:?}");

    let requests = h.http.requests();
    assert_eq!(requests.len(), 2);
    let log = testing::log_rows(&h.store).await.unwrap();
    for request in &requests {
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/v3/mail/send")
        );
        assert_eq!(request.header("authorization"), Some("Bearer SG.test"));
        assert_eq!(request.header("content-type"), Some("application/json"));
        let body = request.json();
        assert_eq!(
            body["from"],
            serde_json::json!({"email": "no-reply@example.com", "name": "Enrollment"})
        );
        let key = body["custom_args"]["signet_idempotency_key"]
            .as_str()
            .unwrap();
        let row = log
            .iter()
            .find(|r| r.idempotency_key == key)
            .expect("a logged key");
        assert_eq!(
            body["custom_args"]["signet_workflow_id"],
            row.workflow_id.to_string()
        );
        assert_eq!(body["content"][0]["type"], "text/plain");
        assert_eq!(body["content"][1]["type"], "text/html");
        if row.workflow_id == reminded.id {
            assert_eq!(
                body["personalizations"][0]["to"],
                serde_json::json!([{"email": reminded.signer_email, "name": "Ada Lovelace"}])
            );
            assert_eq!(
                body["subject"],
                "Reminder: please sign Enrollment agreement"
            );
            assert!(
                body["content"][0]["value"]
                    .as_str()
                    .unwrap()
                    .contains(&format!(
                        "Sign it here: https://sign.example.com/{}",
                        reminded.id
                    ))
            );
        } else {
            // Alerts go to the channel's own list.
            assert_eq!(
                body["personalizations"][0]["to"],
                serde_json::json!([{"email": "ops@example.com"}])
            );
            assert!(
                body["subject"]
                    .as_str()
                    .unwrap()
                    .starts_with("Still unsigned after 3 reminders")
            );
        }
    }
    let mut ids: Vec<_> = log
        .iter()
        .map(|r| r.provider_message_id.clone().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["msg-0", "msg-1"], "X-Message-Id is the receipt");
}

#[tokio::test]
async fn webhook_events_are_signed_and_verifiable() {
    use hmac::{Hmac, Mac};
    let h = sqlite_harness().await;
    let spec = h.policy("  reminders: {channels: [hook]}");
    let s = Seed::pending(25.0 * HOUR);
    h.seed(std::slice::from_ref(&s)).await;
    assert_eq!(h.run(&spec).await.deliveries.sent, 1);
    let request = &h.http.requests()[0];
    assert_eq!(request.path, "/events");
    let signature = request.header("x-signet-signature").unwrap();
    let (t, v1) = signature.split_once(',').unwrap();
    let t: i64 = t.strip_prefix("t=").unwrap().parse().unwrap();
    let v1 = hex::decode(v1.strip_prefix("v1=").unwrap()).unwrap();
    assert!((Utc::now().timestamp() - t).abs() < 60);
    // The receiver's check: HMAC-SHA256 over "<t>.<body>" with the shared key.
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"hook-secret").unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&request.body);
    mac.verify_slice(&v1).expect("the signature verifies");
    let mut tampered = Hmac::<sha2::Sha256>::new_from_slice(b"hook-secret").unwrap();
    tampered.update(format!("{t}.").as_bytes());
    tampered.update(&[&request.body[..], b" "].concat());
    assert!(tampered.verify_slice(&v1).is_err());

    let event = request.json();
    let key = format!("signet:{}:reminder:1:hook", s.id);
    assert_eq!(event["type"], "signet.reminder");
    assert_eq!(event["id"], key.as_str());
    assert_eq!(
        request.header("x-signet-idempotency-key"),
        Some(key.as_str())
    );
    assert_eq!(event["data"]["workflowId"], s.id.to_string());
    assert_eq!(event["data"]["sequence"], 1);
    assert_eq!(event["data"]["signerEmail"], s.signer_email.as_str());
}

#[tokio::test]
async fn slack_gets_one_digest_per_run() {
    let h = sqlite_harness().await;
    let spec = h.policy("  reminders: {channels: [ops]}");
    let seeds: Vec<Seed> = (0..12).map(|_| Seed::pending(25.0 * HOUR)).collect();
    h.seed(&seeds).await;
    let run = h.run(&spec).await;
    assert_eq!(counts(&run), (12, 12, 0, 0));
    let requests = h.http.requests();
    assert_eq!(requests.len(), 1, "one message, never one per workflow");
    let text = requests[0].json()["text"].as_str().unwrap().to_owned();
    assert!(
        text.starts_with("Signet: 12 notifications (12 reminder)"),
        "{text}"
    );
    assert_eq!(
        text.matches("\n• reminder 1: Enrollment agreement").count(),
        10,
        "{text}"
    );
    assert!(text.ends_with("\n…and 2 more"), "{text}");
    assert!(
        testing::log_rows(&h.store)
            .await
            .unwrap()
            .iter()
            .all(|r| r.state == "sent")
    );
    assert_eq!(h.run(&spec).await.deliveries.sent, 0);
    assert_eq!(h.http.requests().len(), 1, "nothing due, no empty digest");
}

#[tokio::test]
async fn smtp_delivers_and_a_rejected_address_fails_only_its_row() {
    let h = sqlite_harness().await;
    let spec = h.policy("  reminders: {channels: [smtp]}");
    let good = Seed::pending(25.0 * HOUR);
    let mut bad = Seed::pending(25.0 * HOUR);
    bad.signer_email = "reject-me@example.com".into();
    h.seed(&[good.clone(), bad.clone()]).await;
    let run = h.run(&spec).await;
    assert_eq!(counts(&run), (2, 1, 0, 1), "{run:?}");
    let mails = h.smtp.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, [format!("<{}>", good.signer_email)]);
    assert_eq!(mails[0].from, "<no-reply@example.com>");
    assert!(
        mails[0]
            .data
            .contains("Subject: Reminder: please sign Enrollment agreement")
    );
    assert!(
        mails[0].data.contains(&format!(
            "Message-ID: <signet.{}.reminder.1.smtp@example.com>",
            good.id
        )),
        "{}",
        mails[0].data
    );
    assert!(mails[0].data.contains("Content-Type: text/html"));
    let log = testing::log_rows(&h.store).await.unwrap();
    let failed = log.iter().find(|r| r.workflow_id == bad.id).unwrap();
    assert_eq!(failed.state, "failed");
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("ProviderRejected"),
        "{failed:?}"
    );
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_honouring_retry_after() {
    let h = sqlite_harness().await;
    let spec = h.policy("  reminders: {channels: [mail]}");
    h.seed(&[Seed::pending(25.0 * HOUR)]).await;
    h.http.enqueue([
        Reply::status(429).header("Retry-After", "1"),
        Reply::status(500),
    ]);
    let run = h.run(&spec).await;
    assert_eq!(
        (
            run.deliveries.sent,
            run.deliveries.failed,
            run.deliveries.retrying
        ),
        (1, 0, 0),
        "{run:?}"
    );
    let requests = h.http.requests();
    assert_eq!(requests.len(), 3);
    let waited = requests[1].at - requests[0].at;
    assert!(
        waited >= Duration::from_millis(990),
        "waited {waited:?} after Retry-After: 1"
    );
    assert!(
        requests[2].at - requests[1].at < Duration::from_millis(900),
        "backoff, not Retry-After"
    );
    assert_eq!(
        requests[0].body, requests[2].body,
        "the same request is retried"
    );
}

#[tokio::test]
async fn retry_after_as_an_http_date() {
    let h = sqlite_harness().await;
    let spec = h.policy("  reminders: {channels: [hook]}");
    h.seed(&[Seed::pending(25.0 * HOUR)]).await;
    let at = (Utc::now() + chrono::Duration::seconds(2))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    h.http
        .enqueue([Reply::status(429).header("Retry-After", &at)]);
    let run = h.run(&spec).await;
    assert_eq!(run.deliveries.sent, 1, "{run:?}");
    let requests = h.http.requests();
    assert_eq!(requests.len(), 2);
    let waited = requests[1].at - requests[0].at;
    assert!(
        waited >= Duration::from_millis(900),
        "waited {waited:?} for {at}"
    );
}

#[tokio::test]
async fn a_400_is_permanent_for_its_row_only() {
    let h = sqlite_harness().await;
    let spec = h.policy("  reminders: {channels: [mail]}");
    let mut bad = Seed::pending(25.0 * HOUR);
    bad.signer_email = "bounce@example.com".into();
    let good: Vec<Seed> = (0..4).map(|_| Seed::pending(25.0 * HOUR)).collect();
    h.seed(&good).await;
    h.seed(std::slice::from_ref(&bad)).await;
    h.http.rule(|r| {
        String::from_utf8_lossy(&r.body)
            .contains("bounce@example.com")
            .then(|| Reply {
                status: 400,
                headers: vec![],
                body: r#"{"errors":[{"message":"invalid address"}]}"#.into(),
            })
    });
    let run = h.run(&spec).await;
    assert_eq!(counts(&run), (5, 4, 0, 1), "{run:?}");
    let bounced: Vec<_> = h
        .http
        .requests()
        .into_iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains("bounce@"))
        .collect();
    assert_eq!(bounced.len(), 1, "a 400 is not retried");
    let log = testing::log_rows(&h.store).await.unwrap();
    let row = log.iter().find(|r| r.workflow_id == bad.id).unwrap();
    assert_eq!(row.state, "failed");
    let error = row.error.as_deref().unwrap();
    assert!(
        error.starts_with("ProviderRejected")
            && error.contains("400")
            && error.contains("invalid address"),
        "{error}"
    );
    // Failed for good: the next run does not send it again.
    testing::expire_leases(&h.store).await.unwrap();
    assert_eq!(counts(&h.run(&spec).await), (0, 0, 0, 0));
}
