//! The store against a real PostgreSQL and a real SQLite, a fresh database per test: the due
//! walk, claims, recovery and outcomes here; migrations and timeouts in their own files.

use super::testing::{self, Backend, Seed, TestDatabase};
use super::*;

const HOUR: f64 = 3600.0;

/// The lease of claims and recoveries.
const LEASE: Duration = Duration::from_secs(600);

/// Runs `$body(&Store)` once against each backend.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[tokio::test]
            async fn postgres() {
                let Some((_db, store)) = TestDatabase::new(Backend::Postgres).await else { return };
                super::$name(&store).await;
                store.close().await;
            }
            #[tokio::test]
            async fn sqlite() {
                let (_db, store) = TestDatabase::new(Backend::Sqlite).await.unwrap();
                super::$name(&store).await;
                store.close().await;
            }
        }
    )*};
}

on_both!(
    candidates_are_what_is_due_by_time,
    a_walk_meets_each_due_workflow_once,
    a_claim_logs_each_channel_once,
    expired_leases_are_recovered,
    outcomes_are_recorded,
);

fn hours(h: u64) -> std::time::Duration {
    std::time::Duration::from_secs(h * 3600)
}

fn query() -> DueQuery {
    DueQuery {
        workflow_types: vec![],
        max_reminders: 3,
        first_after: hours(24),
        every: hours(48),
        timeout_after: Some(hours(14 * 24)),
        expiry_warning_before: Some(hours(48)),
        escalation_after: Some(hours(24)),
    }
}

/// The kinds the reminders worker sends.
fn reminder_kinds() -> Vec<NoticeKind> {
    crate::policy::Section::Reminders.kinds().collect()
}

/// How many migrations the backend embeds.
fn migrations(store: &Store) -> u64 {
    match store {
        Store::Postgres(_) => sqlx::migrate!("migrations/postgres").iter().count() as u64,
        Store::Sqlite(_) => sqlx::migrate!("migrations/sqlite").iter().count() as u64,
    }
}

fn channels(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

async fn ids(store: &Store, query: &DueQuery) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = store
        .due_candidates(query, None, 1000)
        .await
        .unwrap()
        .iter()
        .map(|w| w.id)
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<Uuid>) -> Vec<Uuid> {
    ids.sort();
    ids
}
async fn candidates_are_what_is_due_by_time(store: &Store) {
    let due = Seed::pending(24.0 * HOUR + 60.0);
    let early = Seed::pending(24.0 * HOUR - 60.0);
    let mut signed = Seed::pending(30.0 * HOUR);
    signed.status = "signed".into();
    let mut declined = Seed::pending(30.0 * HOUR);
    declined.status = "declined".into();
    let mut cancelled = Seed::pending(30.0 * HOUR);
    cancelled.status = "cancelled".into();
    let mut past_deadline = Seed::pending(30.0 * HOUR);
    past_deadline.deadline_in = Some(-60.0);
    let mut second_due = Seed::pending(100.0 * HOUR);
    second_due.reminders_sent = 1;
    second_due.last_reminded_ago = Some(48.0 * HOUR + 60.0);
    let mut second_early = Seed::pending(100.0 * HOUR);
    second_early.reminders_sent = 1;
    second_early.last_reminded_ago = Some(48.0 * HOUR - 60.0);
    let mut exhausted = Seed::pending(100.0 * HOUR);
    exhausted.reminders_sent = 3;
    exhausted.last_reminded_ago = Some(HOUR);
    let mut escalation = exhausted.clone();
    escalation.id = Uuid::new_v4();
    escalation.last_reminded_ago = Some(25.0 * HOUR);
    let mut warning = Seed::pending(HOUR);
    warning.deadline_in = Some(47.0 * HOUR);
    let mut other_type = Seed::pending(30.0 * HOUR);
    other_type.workflow_type = "addendum".into();
    let mut timed_out_by_policy = Seed::pending(15.0 * 24.0 * HOUR);
    timed_out_by_policy.reminders_sent = 1;
    timed_out_by_policy.last_reminded_ago = Some(100.0 * HOUR);
    testing::seed(
        store,
        &[
            due.clone(),
            early,
            signed,
            declined,
            cancelled,
            past_deadline,
            second_due.clone(),
            second_early,
            exhausted,
            escalation.clone(),
            warning.clone(),
            other_type.clone(),
            timed_out_by_policy,
        ],
    )
    .await
    .unwrap();
    let mut q = query();
    assert_eq!(
        ids(store, &q).await,
        sorted(vec![
            due.id,
            second_due.id,
            escalation.id,
            warning.id,
            other_type.id
        ])
    );
    q.workflow_types = vec!["enrollment-agreement".into()];
    assert_eq!(
        ids(store, &q).await,
        sorted(vec![due.id, second_due.id, escalation.id, warning.id])
    );
    q.workflow_types = vec!["addendum".into(), "nothing".into()];
    assert_eq!(ids(store, &q).await, vec![other_type.id]);

    // Paging in id order.
    q.workflow_types = vec![];
    let all = ids(store, &q).await;
    let first = store.due_candidates(&q, None, 2).await.unwrap();
    let rest = store
        .due_candidates(&q, Some(first[1].id), 100)
        .await
        .unwrap();
    let paged: Vec<Uuid> = first.iter().chain(&rest).map(|w| w.id).collect();
    assert_eq!(paged, all);
}

/// Walks to the end with pages of `page`, returning the ids in the order met.
async fn walk(store: &Store, query: &DueQuery, page: i64) -> Vec<Uuid> {
    let mut cursor = DueCursor::default();
    let mut met = Vec::new();
    loop {
        let rows = store.due_page(query, &mut cursor, page).await.unwrap();
        if rows.is_empty() {
            return met;
        }
        assert!(rows.len() as i64 <= page);
        met.extend(rows.iter().map(|w| w.id));
    }
}

async fn a_walk_meets_each_due_workflow_once(store: &Store) {
    // One row per branch of the PostgreSQL walk, rows matching several, and rows due for nothing.
    let first = Seed::pending(24.0 * HOUR + 60.0);
    let mut first_tie = first.clone();
    first_tie.id = Uuid::new_v4();
    let mut second = Seed::pending(100.0 * HOUR);
    second.reminders_sent = 1;
    second.last_reminded_ago = Some(48.0 * HOUR + 60.0);
    let mut second_unrecorded = Seed::pending(100.0 * HOUR);
    second_unrecorded.reminders_sent = 1;
    let mut escalation = Seed::pending(100.0 * HOUR);
    escalation.reminders_sent = 3;
    escalation.last_reminded_ago = Some(25.0 * HOUR);
    let mut own_deadline = Seed::pending(30.0 * HOUR);
    own_deadline.reminders_sent = 1;
    own_deadline.last_reminded_ago = Some(HOUR);
    own_deadline.deadline_in = Some(47.0 * HOUR);
    // Due for its first reminder and, by timeout.after, for the expiry warning.
    let first_and_warning = Seed::pending(13.0 * 24.0 * HOUR);
    // Due for its second reminder and, by its own deadline, for the expiry warning.
    let mut second_and_warning = second.clone();
    second_and_warning.id = Uuid::new_v4();
    second_and_warning.deadline_in = Some(HOUR);
    let mut policy_deadline = Seed::pending(13.0 * 24.0 * HOUR);
    policy_deadline.reminders_sent = 1;
    policy_deadline.last_reminded_ago = Some(HOUR);
    let early = Seed::pending(HOUR);
    let mut second_early = second.clone();
    second_early.id = Uuid::new_v4();
    second_early.last_reminded_ago = Some(HOUR);
    let mut exhausted = Seed::pending(100.0 * HOUR);
    exhausted.reminders_sent = 3;
    exhausted.last_reminded_ago = Some(HOUR);
    let mut past_deadline = Seed::pending(30.0 * HOUR);
    past_deadline.deadline_in = Some(-60.0);
    let mut signed = Seed::pending(30.0 * HOUR);
    signed.status = "signed".into();
    let seeds = [
        first.clone(),
        first_tie.clone(),
        second.clone(),
        second_unrecorded.clone(),
        escalation.clone(),
        own_deadline.clone(),
        first_and_warning.clone(),
        second_and_warning.clone(),
        policy_deadline.clone(),
        early,
        second_early,
        exhausted,
        past_deadline,
        signed,
    ];
    testing::seed(store, &seeds).await.unwrap();
    let q = query();
    let due = sorted(vec![
        first.id,
        first_tie.id,
        second.id,
        second_unrecorded.id,
        escalation.id,
        own_deadline.id,
        first_and_warning.id,
        second_and_warning.id,
        policy_deadline.id,
    ]);
    assert_eq!(ids(store, &q).await, due);
    for page in [1, 2, 3, 100] {
        let met = walk(store, &q, page).await;
        assert_eq!(met.len(), due.len(), "page {page}: each workflow once");
        assert_eq!(sorted(met), due, "page {page}");
    }

    // Without the expiry warning, rows due only for it drop out.
    let mut no_warning = query();
    no_warning.expiry_warning_before = None;
    let due_without_warning = sorted(vec![
        first.id,
        first_tie.id,
        second.id,
        second_unrecorded.id,
        escalation.id,
        first_and_warning.id,
        second_and_warning.id,
    ]);
    assert_eq!(ids(store, &no_warning).await, due_without_warning);
    assert_eq!(
        sorted(walk(store, &no_warning, 2).await),
        due_without_warning
    );

    // A walk that claims as it goes still meets each workflow once.
    let mut cursor = DueCursor::default();
    let mut met = Vec::new();
    let chans = channels(&["mail"]);
    loop {
        let rows = store.due_page(&q, &mut cursor, 2).await.unwrap();
        if rows.is_empty() {
            break;
        }
        let page: Vec<Uuid> = rows.iter().map(|w| w.id).collect();
        for kind in reminder_kinds() {
            store.claim(kind, &page, &chans, &q, LEASE).await.unwrap();
        }
        met.extend(page);
    }
    assert_eq!(met.len(), 9);
    assert_eq!(sorted(met), due);
    assert_eq!(
        walk(store, &q, 100).await,
        Vec::<Uuid>::new(),
        "nothing is due any more"
    );
}

async fn a_claim_logs_each_channel_once(store: &Store) {
    let a = Seed::pending(25.0 * HOUR);
    let b = Seed::pending(25.0 * HOUR);
    let not_due = Seed::pending(HOUR);
    testing::seed(store, &[a.clone(), b.clone(), not_due.clone()])
        .await
        .unwrap();
    let q = query();
    let chans = channels(&["mail", "hook"]);
    let claimed = store
        .claim(
            NoticeKind::Reminder,
            &[a.id, b.id, not_due.id],
            &chans,
            &q,
            LEASE,
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 4, "two due workflows, two channels");
    for d in &claimed {
        assert_eq!(
            (d.kind, d.sequence, d.attempts),
            (NoticeKind::Reminder, 1, 1)
        );
        assert!(!d.recovered && !d.possible_duplicate);
        assert_eq!(d.workflow.reminders_sent, 1);
        assert!(d.workflow.last_reminded_at.is_some());
        assert_eq!(
            d.idempotency_key,
            idempotency_key(d.workflow.id, d.kind, d.sequence, &d.channel)
        );
    }
    let log = testing::log_rows(store).await.unwrap();
    assert_eq!(log.len(), 4);
    assert!(log.iter().all(|r| r.state == "pending" && r.attempts == 1));

    // Claiming again finds nothing: the rows are no longer due.
    let again = store
        .claim(NoticeKind::Reminder, &[a.id, b.id], &chans, &q, LEASE)
        .await
        .unwrap();
    assert_eq!(again, vec![]);
    assert_eq!(testing::log_rows(store).await.unwrap().len(), 4);
    assert_eq!(
        testing::workflow(store, not_due.id)
            .await
            .unwrap()
            .reminders_sent,
        0
    );

    // The once-only notices are claimed once.
    let mut exhausted = Seed::pending(400.0 * HOUR);
    exhausted.reminders_sent = 3;
    exhausted.last_reminded_ago = Some(30.0 * HOUR);
    exhausted.deadline_in = Some(40.0 * HOUR);
    testing::seed(store, std::slice::from_ref(&exhausted))
        .await
        .unwrap();
    for kind in [NoticeKind::ExpiryWarning, NoticeKind::Escalation] {
        let first = store
            .claim(kind, &[exhausted.id], &chans[..1], &q, LEASE)
            .await
            .unwrap();
        assert_eq!(first.len(), 1, "{kind:?}");
        assert_eq!(first[0].sequence, 1);
        let second = store
            .claim(kind, &[exhausted.id], &chans[..1], &q, LEASE)
            .await
            .unwrap();
        assert_eq!(second, vec![], "{kind:?}");
    }
    let w = testing::workflow(store, exhausted.id).await.unwrap();
    assert!(w.expiry_warned_at.is_some() && w.escalated_at.is_some());
    assert_eq!(w.reminders_sent, 3, "no fourth reminder");
}

async fn expired_leases_are_recovered(store: &Store) {
    let a = Seed::pending(25.0 * HOUR);
    testing::seed(store, std::slice::from_ref(&a))
        .await
        .unwrap();
    let q = query();
    let kinds = reminder_kinds();
    let claimed = store
        .claim(
            NoticeKind::Reminder,
            &[a.id],
            &channels(&["mail"]),
            &q,
            LEASE,
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    // Leased: nobody else takes it over.
    assert_eq!(
        store.recover(&kinds, &[], LEASE, 100).await.unwrap(),
        vec![]
    );

    assert_eq!(testing::expire_leases(store).await.unwrap(), 1);
    // Workflow types filter recovery too.
    assert_eq!(
        store
            .recover(&kinds, &["addendum".to_owned()], LEASE, 100)
            .await
            .unwrap(),
        vec![]
    );
    let recovered = store.recover(&kinds, &[], LEASE, 100).await.unwrap();
    assert_eq!(recovered.len(), 1);
    let r = &recovered[0];
    assert_eq!(r.log_id, claimed[0].log_id);
    assert_eq!(r.idempotency_key, claimed[0].idempotency_key);
    assert_eq!(
        (r.attempts, r.recovered, r.possible_duplicate),
        (2, true, true)
    );
    assert_eq!(r.workflow.id, a.id);
    // The new lease holds.
    assert_eq!(
        store.recover(&kinds, &[], LEASE, 100).await.unwrap(),
        vec![]
    );

    // A recorded transient failure is retried later, and is no possible duplicate.
    store
        .complete(&[(
            r.log_id,
            Outcome::Retry {
                failure: Failure {
                    reason: "ProviderUnavailable",
                    unconfirmed: false,
                    error: "ProviderUnavailable: 503 from provider".into(),
                },
                after: Duration::ZERO,
            },
        )])
        .await
        .unwrap();
    testing::expire_leases(store).await.unwrap();
    let retried = store.recover(&kinds, &[], LEASE, 100).await.unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(
        (retried[0].attempts, retried[0].possible_duplicate),
        (3, false)
    );
    // A try that got no answer (timed out, or the connection failed after sending) may have
    // been accepted: a possible duplicate.
    let mut log_id = retried[0].log_id;
    for (attempts, reason) in [(4, "ProviderTimeout"), (5, "ProviderNoAnswer")] {
        // The flag decides, not the text.
        let error = "no answer";
        store
            .complete(&[(
                log_id,
                Outcome::Retry {
                    failure: Failure {
                        reason,
                        unconfirmed: true,
                        error: error.into(),
                    },
                    after: Duration::ZERO,
                },
            )])
            .await
            .unwrap();
        testing::expire_leases(store).await.unwrap();
        let retried = store.recover(&kinds, &[], LEASE, 100).await.unwrap();
        assert_eq!(
            (retried[0].attempts, retried[0].possible_duplicate),
            (attempts, true),
            "{reason}"
        );
        log_id = retried[0].log_id;
    }
    // Other kinds are not this worker's.
    testing::expire_leases(store).await.unwrap();
    assert_eq!(
        store
            .recover(&[NoticeKind::TimeoutAlert], &[], LEASE, 100)
            .await
            .unwrap(),
        vec![]
    );
}

async fn outcomes_are_recorded(store: &Store) {
    let seeds = [
        Seed::pending(25.0 * HOUR),
        Seed::pending(25.0 * HOUR),
        Seed::pending(25.0 * HOUR),
    ];
    testing::seed(store, &seeds).await.unwrap();
    let ids: Vec<Uuid> = seeds.iter().map(|s| s.id).collect();
    let claimed = store
        .claim(
            NoticeKind::Reminder,
            &ids,
            &channels(&["mail"]),
            &query(),
            LEASE,
        )
        .await
        .unwrap();
    let by_workflow = |id: Uuid| claimed.iter().find(|d| d.workflow.id == id).unwrap().log_id;
    store
        .complete(&[
            (
                by_workflow(ids[0]),
                Outcome::Sent {
                    provider_message_id: Some("msg-1".into()),
                },
            ),
            (
                by_workflow(ids[1]),
                Outcome::Failed(Failure::unsent("ProviderRejected", "400 bad address")),
            ),
            (
                by_workflow(ids[2]),
                Outcome::Retry {
                    failure: Failure {
                        reason: "ProviderTimeout",
                        unconfirmed: true,
                        error: "timeout".into(),
                    },
                    after: Duration::from_secs(300),
                },
            ),
        ])
        .await
        .unwrap();
    let log = testing::log_rows(store).await.unwrap();
    let row = |id: Uuid| log.iter().find(|r| r.workflow_id == id).unwrap().clone();
    assert_eq!(
        (
            row(ids[0]).state,
            row(ids[0]).provider_message_id,
            row(ids[0]).error
        ),
        ("sent".into(), Some("msg-1".into()), None)
    );
    assert_eq!(
        (row(ids[1]).state, row(ids[1]).error),
        ("failed".into(), Some("400 bad address".into()))
    );
    assert_eq!(
        (row(ids[2]).state, row(ids[2]).error),
        ("pending".into(), Some("timeout".into()))
    );
    // The reason and the flag are columns of their own.
    assert_eq!(
        [ids[0], ids[1], ids[2]].map(|id| (row(id).reason, row(id).unconfirmed)),
        [
            (None, false),
            (Some("ProviderRejected".into()), false),
            (Some("ProviderTimeout".into()), true),
        ]
    );
    // The retry waits its turn; finished rows are never reopened.
    assert_eq!(
        store
            .recover(&reminder_kinds(), &[], LEASE, 100)
            .await
            .unwrap(),
        vec![]
    );
    store
        .complete(&[(
            by_workflow(ids[0]),
            Outcome::Failed(Failure::unsent("ProviderRejected", "late")),
        )])
        .await
        .unwrap();
    let log = testing::log_rows(store).await.unwrap();
    let first = log.iter().find(|r| r.workflow_id == ids[0]).unwrap();
    assert_eq!(
        (first.state.as_str(), first.error.as_deref()),
        ("sent", None),
        "a completed row stays completed"
    );
}

/// Log rows written before the `reason` and `unconfirmed` columns existed get them from the
/// reason their error text starts with.
#[tokio::test]
async fn postgres_concurrent_claims_never_share_a_delivery() {
    let Some((_db, store)) = TestDatabase::new(Backend::Postgres).await else {
        return;
    };
    let seeds: Vec<Seed> = (0..200).map(|_| Seed::pending(25.0 * HOUR)).collect();
    testing::seed(&store, &seeds).await.unwrap();
    let ids: Vec<Uuid> = seeds.iter().map(|s| s.id).collect();
    let q = query();
    let chans = channels(&["mail", "hook"]);
    let claim = |ids: Vec<Uuid>| {
        let (store, q, chans) = (store.clone(), q.clone(), chans.clone());
        tokio::spawn(async move {
            let mut claimed = Vec::new();
            for chunk in ids.chunks(20) {
                claimed.extend(
                    store
                        .claim(NoticeKind::Reminder, chunk, &chans, &q, LEASE)
                        .await
                        .unwrap(),
                );
            }
            claimed
        })
    };
    let mut reversed = ids.clone();
    reversed.reverse();
    let workers: Vec<_> = [ids.clone(), reversed, ids.clone(), ids.clone()]
        .into_iter()
        .map(claim)
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    assert_eq!(all.len(), 400, "every delivery claimed exactly once");
    let mut keys: Vec<&str> = all.iter().map(|d| d.idempotency_key.as_str()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 400);
    assert_eq!(testing::log_rows(&store).await.unwrap().len(), 400);
    store.close().await;
}

mod migrations;
mod timeouts;
