//! Timing out: each expired workflow once, with its alerts logged in the same transaction, and
//! never by two workers.

use super::*;

on_both!(
    expired_workflows_time_out_once_with_their_alerts,
    timeouts_without_channels_log_nothing,
);

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
