//! The store against a real PostgreSQL and a real SQLite, a fresh database per test: the due
//! walk here; claims, recovery and outcomes, migrations and timeouts in their own files.

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

mod claims;
mod migrations;
mod timeouts;
