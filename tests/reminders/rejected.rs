//! A channel that rejects everything (a revoked SendGrid key, an SMTP relay that wants a login):
//! the run stops using it, fails loudly (`Failed`, reason `ChannelRejected`, exit code 1), the
//! other channels go on, and nothing it did not send is consumed: once the channel is fixed,
//! the next run sends every reminder exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use signet::crd::RunOutcome;
use signet::store::testing::LogRow;

on_both!(
    a_revoked_sendgrid_key_fails_the_run_and_the_webhook_goes_on,
    an_only_channel_that_rejects_leaves_the_workflows_as_they_were,
    an_undone_second_reminder_gets_its_last_reminded_at_back,
    an_smtp_relay_that_wants_a_login_fails_the_run,
    row_level_refusals_complete_the_run,
);

/// The stand-in for SendGrid: 401 for every send while `revoked` holds, 202 after.
fn sendgrid_key(h: &Harness) -> Arc<AtomicBool> {
    let revoked = Arc::new(AtomicBool::new(true));
    let rule = revoked.clone();
    h.http.rule(move |request| {
        (request.path == "/v3/mail/send" && rule.load(Ordering::SeqCst)).then(|| {
            Reply::status(401).body(
                r#"{"errors":[{"message":"The provided authorization grant is invalid, expired, or revoked"}]}"#,
            )
        })
    });
    revoked
}

/// Requests the stand-ins got on `path`, as (workflow id, reminder number) for SendGrid and
/// webhook alike.
fn sends(h: &Harness, path: &str) -> Vec<(String, i64)> {
    let mut sends: Vec<(String, i64)> = h
        .http
        .requests()
        .iter()
        .filter(|r| r.path == path)
        .map(|r| {
            let body = r.json();
            match path {
                "/events" => (
                    body["data"]["workflowId"].as_str().unwrap().to_owned(),
                    body["data"]["sequence"].as_i64().unwrap(),
                ),
                _ => (
                    body["custom_args"]["signet_workflow_id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    body["custom_args"]["signet_idempotency_key"]
                        .as_str()
                        .unwrap()
                        .split(':')
                        .nth(3)
                        .unwrap()
                        .parse()
                        .unwrap(),
                ),
            }
        })
        .collect();
    sends.sort();
    sends
}

/// One run whose first page holds every due workflow, so each due notice is claimed before
/// any send (with small pages, those after the breaker opened are never claimed at all).
async fn run_in_one_page(h: &Harness, spec: &signet::crd::SignaturePolicySpec) -> RunSummary {
    let channels = h.channels(spec);
    let policy = signet::policy::Policy::parse(spec).unwrap();
    let one_page = signet::worker::RunOptions {
        batch_size: 100,
        ..options()
    };
    Run::new(&policy, &channels, one_page)
        .unwrap()
        .send_reminders(&h.store)
        .await
        .unwrap()
}

fn rows_of<'a>(log: &'a [LogRow], channel: &str) -> Vec<&'a LogRow> {
    log.iter().filter(|r| r.channel == channel).collect()
}

/// Five workflows due their first reminder and one due its second.
fn due() -> Vec<Seed> {
    let mut seeds: Vec<Seed> = (0..5).map(|_| Seed::pending(25.0 * HOUR)).collect();
    let mut second = Seed::pending(80.0 * HOUR);
    second.reminders_sent = 1;
    second.last_reminded_ago = Some(49.0 * HOUR);
    seeds.push(second);
    seeds
}

fn expected(seeds: &[Seed]) -> Vec<(String, i64)> {
    let mut expected: Vec<(String, i64)> = seeds
        .iter()
        .map(|s| (s.id.to_string(), i64::from(s.reminders_sent) + 1))
        .collect();
    expected.sort();
    expected
}

async fn a_revoked_sendgrid_key_fails_the_run_and_the_webhook_goes_on(h: &Harness) {
    let spec = h.policy(
        "  reminders: {firstAfter: 24h, every: 48h, maxReminders: 3, channels: [mail, hook]}",
    );
    let revoked = sendgrid_key(h);
    let seeds = due();
    h.seed(&seeds).await;

    let first = h.run(&spec).await;
    assert_eq!(first.outcome(), RunOutcome::Failed, "{first:?}");
    let rejected = &first.deliveries.rejected_channels;
    assert_eq!(rejected.len(), 1, "{first:?}");
    assert_eq!(
        (rejected[0].channel.as_str(), rejected[0].status),
        ("mail", Some(401))
    );
    let (reason, message) = first.deliveries.failure().unwrap();
    assert_eq!(reason, "ChannelRejected");
    assert!(message.contains("channel mail answered 401"), "{message}");
    assert!(
        !message.contains("SG.test") && !message.contains("127.0.0.1"),
        "{message}"
    );
    // The webhook went on; SendGrid was tried until the breaker opened (at most the sends in
    // flight at once), and nothing was failed for good.
    assert_eq!(sends(h, "/events"), expected(&seeds));
    let tried = sends(h, "/v3/mail/send").len();
    assert!(
        (1..=options().concurrency).contains(&tried),
        "{tried} SendGrid tries"
    );
    assert_eq!(
        (
            first.deliveries.sent,
            first.deliveries.failed,
            first.deliveries.released
        ),
        (6, 0, 6),
        "{first:?}"
    );
    // Due again at once, the attempt not counted; the rows SendGrid refused keep its answer.
    let log = testing::log_rows(&h.store).await.unwrap();
    let mail = rows_of(&log, "mail");
    assert_eq!(mail.len(), 6);
    for row in &mail {
        assert_eq!(
            (row.state.as_str(), row.attempts),
            ("pending", 0),
            "{row:?}"
        );
    }
    let refused = mail
        .iter()
        .filter(|r| r.reason.as_deref() == Some("ProviderRejected"))
        .count();
    let untried = mail
        .iter()
        .filter(|r| r.reason.as_deref() == Some("ChannelRejected"))
        .count();
    assert_eq!((refused, untried), (tried, 6 - tried), "{mail:?}");

    // The key is fixed: every reminder goes out through SendGrid exactly once, and nothing is
    // sent twice through the webhook.
    revoked.store(false, Ordering::SeqCst);
    let second = h.run(&spec).await;
    assert_eq!(second.outcome(), RunOutcome::Succeeded, "{second:?}");
    assert_eq!(second.deliveries.sent, 6, "{second:?}");
    let delivered: Vec<(String, i64)> = h
        .http
        .requests()
        .iter()
        .filter(|r| r.path == "/v3/mail/send")
        .skip(tried)
        .map(|r| {
            let body = r.json();
            let key = body["custom_args"]["signet_idempotency_key"]
                .as_str()
                .unwrap();
            (
                body["custom_args"]["signet_workflow_id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                key.split(':').nth(3).unwrap().parse().unwrap(),
            )
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(delivered, expected(&seeds));
    assert_eq!(
        sends(h, "/v3/mail/send").len(),
        tried + 6,
        "each exactly once"
    );
    assert_eq!(
        sends(h, "/events"),
        expected(&seeds),
        "no webhook event twice"
    );
    let log = testing::log_rows(&h.store).await.unwrap();
    assert!(log.iter().all(|r| r.state == "sent"), "{log:?}");
    let third = h.run(&spec).await;
    assert_eq!(third.due, 0, "{third:?}");
}

async fn an_only_channel_that_rejects_leaves_the_workflows_as_they_were(h: &Harness) {
    let spec = h.policy(
        "  reminders: {firstAfter: 24h, every: 48h, maxReminders: 3, channels: [mail]}\n  expiryWarning: {before: 2d, channels: [mail]}\n  timeout: {after: 5d}",
    );
    let revoked = sendgrid_key(h);
    let mut seeds = due();
    // Due an expiry warning too (4 days of 5 gone).
    let mut warned = Seed::pending(96.0 * HOUR);
    warned.reminders_sent = 1;
    warned.last_reminded_ago = Some(10.0 * HOUR);
    seeds.push(warned.clone());
    h.seed(&seeds).await;
    let mut before = Vec::new();
    for seed in &seeds {
        before.push(testing::workflow(&h.store, seed.id).await.unwrap());
    }

    // One page, so every due notice is claimed before the breaker opens (with small pages the
    // later ones are never claimed at all) and each claim must be undone.
    let first = run_in_one_page(h, &spec).await;
    assert_eq!(first.outcome(), RunOutcome::Failed, "{first:?}");
    // Six reminders and two expiry warnings (4 and 3.3 days of 5 gone).
    assert_eq!(first.deliveries.sent, 0, "{first:?}");
    assert_eq!(first.deliveries.released, 8, "{first:?}");
    // As if the run had not claimed anything: counters, timestamps and the log as they were.
    for (seed, was) in seeds.iter().zip(&before) {
        let now = testing::workflow(&h.store, seed.id).await.unwrap();
        assert_eq!(
            (
                now.reminders_sent,
                now.last_reminded_at,
                now.expiry_warned_at
            ),
            (
                was.reminders_sent,
                was.last_reminded_at,
                was.expiry_warned_at
            ),
            "{}",
            seed.id
        );
    }
    let log = testing::log_rows(&h.store).await.unwrap();
    assert!(log.is_empty(), "{log:?}");

    revoked.store(false, Ordering::SeqCst);
    let tried = h.http.requests().len();
    let second = h.run(&spec).await;
    assert_eq!(second.outcome(), RunOutcome::Succeeded, "{second:?}");
    assert_eq!(second.deliveries.sent, 8, "{second:?}");
    assert_eq!(h.http.requests().len(), tried + 8);
    let log = testing::log_rows(&h.store).await.unwrap();
    let mut kinds: Vec<(String, i32)> = log
        .iter()
        .filter(|r| r.workflow_id == warned.id)
        .map(|r| (r.kind.clone(), r.sequence))
        .collect();
    kinds.sort();
    // The warned workflow's reminder was not due (10h ago); its expiry warning was.
    assert_eq!(kinds, [("expiry_warning".to_owned(), 1)]);
    let reminded: Vec<(String, i64)> = {
        let mut r: Vec<(String, i64)> = log
            .iter()
            .filter(|r| r.kind == "reminder")
            .map(|r| (r.workflow_id.to_string(), i64::from(r.sequence)))
            .collect();
        r.sort();
        r
    };
    assert_eq!(reminded, expected(&seeds[..6]));
}

async fn an_undone_second_reminder_gets_its_last_reminded_at_back(h: &Harness) {
    let spec = h.policy(
        "  reminders: {firstAfter: 24h, every: 48h, maxReminders: 3, channels: [mail]}\n  expiryWarning: {before: 2d, channels: [mail]}\n  timeout: {after: 5d}",
    );
    let revoked = sendgrid_key(h);
    // Each due its second reminder (the first 49h ago) and its expiry warning (80h of 120h
    // gone), so one page claims both notices of every workflow before any send.
    let seeds: Vec<Seed> = (0..4)
        .map(|i| {
            let mut seed = Seed::pending(80.0 * HOUR + f64::from(i));
            seed.reminders_sent = 1;
            seed.last_reminded_ago = Some(49.0 * HOUR + f64::from(i) * 60.0);
            seed
        })
        .collect();
    h.seed(&seeds).await;
    let mut before = Vec::new();
    for seed in &seeds {
        before.push(testing::workflow(&h.store, seed.id).await.unwrap());
    }
    let first = run_in_one_page(h, &spec).await;
    assert_eq!(first.outcome(), RunOutcome::Failed, "{first:?}");
    assert_eq!(
        (first.deliveries.sent, first.deliveries.released),
        (0, 8),
        "{first:?}"
    );
    for (seed, was) in seeds.iter().zip(&before) {
        let now = testing::workflow(&h.store, seed.id).await.unwrap();
        assert_eq!(now.reminders_sent, 1, "{}", seed.id);
        assert_eq!(now.last_reminded_at, was.last_reminded_at, "{}", seed.id);
        assert_eq!(now.expiry_warned_at, None, "{}", seed.id);
    }
    assert!(testing::log_rows(&h.store).await.unwrap().is_empty());

    revoked.store(false, Ordering::SeqCst);
    let second = h.run(&spec).await;
    assert_eq!(
        (second.outcome(), second.deliveries.sent),
        (RunOutcome::Succeeded, 8),
        "{second:?}"
    );
    let log = testing::log_rows(&h.store).await.unwrap();
    let mut notices: Vec<(String, i32)> =
        log.iter().map(|r| (r.kind.clone(), r.sequence)).collect();
    notices.sort();
    notices.dedup();
    assert_eq!(
        notices,
        [("expiry_warning".to_owned(), 1), ("reminder".to_owned(), 2)]
    );
}

async fn an_smtp_relay_that_wants_a_login_fails_the_run(h: &Harness) {
    let spec =
        h.policy("  reminders: {firstAfter: 24h, every: 48h, maxReminders: 3, channels: [smtp]}");
    h.smtp
        .refuse_senders(Some("530 5.7.0 Authentication required"));
    let seeds = due();
    h.seed(&seeds).await;

    let first = h.run(&spec).await;
    assert_eq!(first.outcome(), RunOutcome::Failed, "{first:?}");
    let rejected = &first.deliveries.rejected_channels;
    assert_eq!(
        rejected
            .iter()
            .map(|r| (r.channel.as_str(), r.status))
            .collect::<Vec<_>>(),
        [("smtp", Some(530))]
    );
    assert!(h.smtp.mails().is_empty());
    assert!(testing::log_rows(&h.store).await.unwrap().is_empty());

    h.smtp.refuse_senders(None);
    let second = h.run(&spec).await;
    assert_eq!(second.outcome(), RunOutcome::Succeeded, "{second:?}");
    let mails = h.smtp.mails();
    assert_eq!(mails.len(), seeds.len());
    let mut to: Vec<String> = mails.iter().flat_map(|m| m.to.clone()).collect();
    to.sort();
    to.dedup();
    assert_eq!(to.len(), seeds.len(), "one mail per signer: {to:?}");
    let log = testing::log_rows(&h.store).await.unwrap();
    let mut reminded: Vec<(String, i64)> = log
        .iter()
        .map(|r| (r.workflow_id.to_string(), i64::from(r.sequence)))
        .collect();
    reminded.sort();
    assert_eq!(reminded, expected(&seeds));
}

async fn row_level_refusals_complete_the_run(h: &Harness) {
    let spec =
        h.policy("  reminders: {firstAfter: 24h, every: 48h, maxReminders: 3, channels: [mail]}");
    h.http.rule(|request| {
        (request.path == "/v3/mail/send").then(|| {
            Reply::status(400).body(
                r#"{"errors":[{"field":"personalizations.0.to.0.email","message":"Does not contain a valid address."}]}"#,
            )
        })
    });
    let seeds = due();
    h.seed(&seeds).await;
    let run = h.run(&spec).await;
    // Every send refused for its own reason: the channel works, the rows failed alone.
    assert_eq!(run.outcome(), RunOutcome::CompletedWithFailures, "{run:?}");
    assert!(run.deliveries.rejected_channels.is_empty(), "{run:?}");
    assert_eq!(
        (run.deliveries.failed, run.deliveries.released),
        (6, 0),
        "{run:?}"
    );
    assert_eq!(h.http.requests().len(), 6);
}
