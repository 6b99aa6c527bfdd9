//! Claims, recovery after a lease expires, and recorded outcomes: one log row per workflow,
//! notice and channel, never shared between workers.

use super::*;

on_both!(
    a_claim_logs_each_channel_once,
    expired_leases_are_recovered,
    outcomes_are_recorded,
);

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
