//! The store against a real PostgreSQL and a real SQLite, a fresh database per test.

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
    migrations_are_idempotent,
    the_schema_enforces_the_contract,
    candidates_are_what_is_due_by_time,
    a_walk_meets_each_due_workflow_once,
    a_claim_logs_each_channel_once,
    expired_leases_are_recovered,
    outcomes_are_recorded,
    expired_workflows_time_out_once_with_their_alerts,
    timeouts_without_channels_log_nothing,
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

async fn migrations_are_idempotent(store: &Store) {
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    let applied = testing::execute(store, "UPDATE _sqlx_migrations SET success = success")
        .await
        .unwrap();
    assert_eq!(applied, migrations(store), "each migration applied once");
}

async fn the_schema_enforces_the_contract(store: &Store) {
    let mut bad = Seed::pending(HOUR);
    bad.status = "waiting".into();
    let err = testing::seed(store, &[bad]).await.unwrap_err();
    assert!(err.to_string().contains("status_check"), "{err}");

    let ok = Seed::pending(HOUR);
    testing::seed(store, std::slice::from_ref(&ok))
        .await
        .unwrap();
    let w = testing::workflow(store, ok.id).await.unwrap();
    assert_eq!((w.status.as_str(), w.reminders_sent), ("pending", 0));
    assert_eq!(
        (w.last_reminded_at, w.expiry_warned_at, w.escalated_at),
        (None, None, None)
    );
    let now = store.now().await.unwrap();
    let age = (now - w.requested_at).num_seconds();
    assert!((3599..=3601).contains(&age), "requested {age}s ago");

    // The application may insert only its own columns; Signet's have defaults.
    let minimal = "INSERT INTO signature_workflows (id, workflow_type, signer_email) \
        VALUES ('6b1f5f2e-0000-4000-8000-000000000001', 't', 'a@example.com')";
    testing::execute(store, minimal).await.unwrap();
    let w = testing::workflow(
        store,
        "6b1f5f2e-0000-4000-8000-000000000001".parse().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!((w.status.as_str(), w.reminders_sent), ("pending", 0));
    assert!((store.now().await.unwrap() - w.requested_at).num_seconds() < 5);
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
async fn old_log_rows_get_their_reason_and_flag(db: &TestDatabase, before: i64) {
    let store = db.connect(None).await.unwrap();
    match &store {
        Store::Postgres(pg) => sqlx::migrate!("migrations/postgres")
            .run_to(before, pg.pool())
            .await
            .unwrap(),
        Store::Sqlite(lite) => sqlx::migrate!("migrations/sqlite")
            .run_to(before, lite.pool())
            .await
            .unwrap(),
    }
    let seed = Seed::pending(HOUR);
    testing::seed(&store, std::slice::from_ref(&seed))
        .await
        .unwrap();
    let rows = [
        (
            "ProviderTimeout: the provider did not answer in time",
            "ProviderTimeout",
            true,
        ),
        (
            "ProviderNoAnswer: the connection failed: reset",
            "ProviderNoAnswer",
            true,
        ),
        (
            "ProviderUnavailable: the provider is unavailable (503): x",
            "ProviderUnavailable",
            false,
        ),
        (
            "ProviderRejected: rejected by the provider (400): no",
            "ProviderRejected",
            false,
        ),
        (
            "ChannelMisconfigured: no secret",
            "ChannelMisconfigured",
            false,
        ),
        ("not sent: the workflow is signed", "WorkflowMovedOn", false),
        (
            "not sent: the run's lease on it was running out",
            "LeaseRunningOut",
            false,
        ),
        (
            "channel ops is no longer configured",
            "ChannelNotConfigured",
            false,
        ),
        (
            "template reminder.subject: unknown filter",
            "TemplateFailed",
            false,
        ),
    ];
    for (sequence, (error, _, _)) in rows.iter().enumerate() {
        testing::execute(
            &store,
            &format!(
                "INSERT INTO signature_reminder_log (workflow_id, kind, sequence, channel, state, \
                   attempts, idempotency_key, error) \
                 VALUES ('{}', 'reminder', {sequence}, 'mail', 'pending', 1, 'k{sequence}', '{}')",
                seed.id,
                error.replace('\'', "''")
            ),
        )
        .await
        .unwrap();
    }
    // A row left without an outcome keeps neither.
    testing::execute(
        &store,
        &format!(
            "INSERT INTO signature_reminder_log (workflow_id, kind, sequence, channel, state, \
               attempts, idempotency_key) VALUES ('{}', 'reminder', 99, 'mail', 'pending', 1, 'k')",
            seed.id
        ),
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let log = testing::log_rows(&store).await.unwrap();
    let got: Vec<(Option<String>, bool)> = log
        .iter()
        .map(|r| (r.reason.clone(), r.unconfirmed))
        .collect();
    let mut expected: Vec<(Option<String>, bool)> = rows
        .iter()
        .map(|(_, reason, unconfirmed)| (Some((*reason).to_owned()), *unconfirmed))
        .collect();
    expected.push((None, false));
    assert_eq!(got, expected);
    assert_eq!(
        log.iter()
            .filter_map(|r| r.error.as_deref())
            .collect::<Vec<_>>(),
        rows.map(|(error, _, _)| error),
        "the text stays"
    );
    store.close().await;
}

#[tokio::test]
async fn postgres_old_log_rows_get_their_reason_and_flag() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    old_log_rows_get_their_reason_and_flag(&db, 2).await;
}

#[tokio::test]
async fn sqlite_old_log_rows_get_their_reason_and_flag() {
    old_log_rows_get_their_reason_and_flag(&TestDatabase::sqlite(), 1).await;
}

#[tokio::test]
async fn postgres_concurrent_migrations_apply_once() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let (a, b) = (
        db.connect(None).await.unwrap(),
        db.connect(None).await.unwrap(),
    );
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    ra.unwrap();
    rb.unwrap();
    assert_eq!(
        testing::execute(&a, "UPDATE _sqlx_migrations SET success = success")
            .await
            .unwrap(),
        migrations(&a)
    );
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn postgres_schema_is_created_and_used() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let tenant = db.connect(Some("tenant_a")).await.unwrap();
    tenant.migrate().await.unwrap();
    tenant.migrate().await.unwrap();
    let Store::Postgres(pg) = &tenant else {
        unreachable!()
    };
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables \
         WHERE table_name IN ('signature_workflows', 'signature_reminder_log', '_sqlx_migrations') \
         ORDER BY 1",
    )
    .fetch_all(pg.pool())
    .await
    .unwrap();
    assert_eq!(
        tables,
        [
            "tenant_a._sqlx_migrations",
            "tenant_a.signature_reminder_log",
            "tenant_a.signature_workflows"
        ]
    );
    let seed = Seed::pending(25.0 * HOUR);
    testing::seed(&tenant, std::slice::from_ref(&seed))
        .await
        .unwrap();
    assert_eq!(ids(&tenant, &query()).await, vec![seed.id]);
    tenant.close().await;
}

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

fn timeout_query() -> TimeoutQuery {
    TimeoutQuery {
        workflow_types: vec!["enrollment-agreement".into()],
        timeout_after: hours(14 * 24),
    }
}

/// Times out everything expired, in chunks of `limit`, from both deadline sources.
async fn time_out_all(store: &Store, channels: &[String], limit: i64) -> TimedOut {
    let mut all = TimedOut::default();
    let mut cursor = TimeoutCursor::default();
    loop {
        let chunk = store
            .time_out(
                &timeout_query(),
                &mut cursor,
                channels,
                Duration::from_secs(900),
                limit,
            )
            .await
            .unwrap();
        assert!(chunk.workflows.len() as i64 <= limit);
        if chunk.workflows.is_empty() {
            break;
        }
        all.workflows.extend(chunk.workflows);
        all.alerts.extend(chunk.alerts);
    }
    all
}

async fn expired_workflows_time_out_once_with_their_alerts(store: &Store) {
    let day = 24.0 * HOUR;
    let past_policy_deadline = Seed::pending(15.0 * day);
    let just_past = Seed::pending(14.0 * day + 5.0);
    let not_yet = Seed::pending(14.0 * day - 60.0);
    let row_deadline_passed = Seed {
        deadline_in: Some(-1.0),
        ..Seed::pending(HOUR)
    };
    // deadline_at overrides requested_at + timeout.after in both directions.
    let row_deadline_later = Seed {
        deadline_in: Some(HOUR),
        ..Seed::pending(30.0 * day)
    };
    let signed = Seed {
        status: "signed".into(),
        ..Seed::pending(30.0 * day)
    };
    let cancelled_row_deadline = Seed {
        status: "cancelled".into(),
        deadline_in: Some(-day),
        ..Seed::pending(30.0 * day)
    };
    let other_type = Seed {
        workflow_type: "nda".into(),
        ..Seed::pending(30.0 * day)
    };
    testing::seed(
        store,
        &[
            past_policy_deadline.clone(),
            just_past.clone(),
            not_yet.clone(),
            row_deadline_passed.clone(),
            row_deadline_later.clone(),
            signed.clone(),
            cancelled_row_deadline.clone(),
            other_type.clone(),
        ],
    )
    .await
    .unwrap();

    let ops = channels(&["ops", "hook"]);
    let done = time_out_all(store, &ops, 2).await;
    let expected = sorted(vec![
        past_policy_deadline.id,
        just_past.id,
        row_deadline_passed.id,
    ]);
    let mut ids: Vec<Uuid> = done.workflows.iter().map(|w| w.id).collect();
    ids.sort();
    assert_eq!(ids, expected);
    assert!(done.workflows.iter().all(|w| w.status == "timed_out"));
    assert_eq!(testing::timed_out(store).await.unwrap(), expected);
    for untouched in [
        &not_yet,
        &row_deadline_later,
        &signed,
        &cancelled_row_deadline,
        &other_type,
    ] {
        let row = testing::workflow(store, untouched.id).await.unwrap();
        assert_eq!(row.status, untouched.status, "{untouched:?}");
    }

    // One pending alert per workflow and channel, held by this run, with a stable key.
    assert_eq!(done.alerts.len(), 6);
    for alert in &done.alerts {
        assert_eq!(alert.kind, NoticeKind::TimeoutAlert);
        assert_eq!((alert.sequence, alert.attempts), (1, 1));
        assert_eq!(alert.workflow.status, "timed_out");
        assert_eq!(
            alert.idempotency_key,
            idempotency_key(
                alert.workflow.id,
                NoticeKind::TimeoutAlert,
                1,
                &alert.channel
            )
        );
    }
    let logged = testing::log_rows(store).await.unwrap();
    assert_eq!(logged.len(), 6);
    assert!(
        logged
            .iter()
            .all(|r| r.kind == "timeout_alert" && r.state == "pending")
    );

    // Exactly once: a second pass finds nothing and logs nothing.
    assert_eq!(time_out_all(store, &ops, 2).await, TimedOut::default());
    assert_eq!(testing::log_rows(store).await.unwrap().len(), 6);

    // The not-yet row crosses its deadline later and is then taken alone.
    testing::time_passes(store, 120.0).await.unwrap();
    let later = time_out_all(store, &ops, 10).await;
    let later_ids: Vec<Uuid> = later.workflows.iter().map(|w| w.id).collect();
    assert_eq!(later_ids, vec![not_yet.id]);
    // Timed-out rows are no longer candidates for reminders.
    assert!(ids_due(store).await.iter().all(|id| !expected.contains(id)));
}

async fn ids_due(store: &Store) -> Vec<Uuid> {
    ids(store, &query()).await
}

async fn timeouts_without_channels_log_nothing(store: &Store) {
    let expired = Seed::pending(15.0 * 24.0 * HOUR);
    testing::seed(store, std::slice::from_ref(&expired))
        .await
        .unwrap();
    let done = time_out_all(store, &[], 100).await;
    assert_eq!(done.workflows.len(), 1);
    assert!(done.alerts.is_empty());
    assert!(testing::log_rows(store).await.unwrap().is_empty());
    assert_eq!(testing::timed_out(store).await.unwrap(), vec![expired.id]);
}

#[tokio::test]
async fn postgres_concurrent_timeouts_take_each_workflow_once() {
    let Some((db, store)) = TestDatabase::new(Backend::Postgres).await else {
        return;
    };
    let seeds: Vec<Seed> = (0..400)
        .map(|i| Seed {
            deadline_in: (i % 2 == 0).then_some(-60.0),
            ..Seed::pending(15.0 * 24.0 * HOUR)
        })
        .collect();
    testing::seed(&store, &seeds).await.unwrap();
    let ops = channels(&["ops"]);
    let mut workers = Vec::new();
    for _ in 0..4 {
        let store = db.connect(None).await.unwrap();
        let ops = ops.clone();
        workers.push(tokio::spawn(async move {
            let done = time_out_all(&store, &ops, 7).await;
            store.close().await;
            done
        }));
    }
    let mut ids = Vec::new();
    let mut alerts = 0;
    for worker in workers {
        let done = worker.await.unwrap();
        alerts += done.alerts.len();
        ids.extend(done.workflows.into_iter().map(|w| w.id));
    }
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!((total, ids.len(), alerts), (400, 400, 400));
    assert_eq!(testing::log_rows(&store).await.unwrap().len(), 400);
    store.close().await;
}
