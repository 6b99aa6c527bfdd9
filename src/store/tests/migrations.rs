//! Migrations: applied once however often and however concurrently they run, the schema
//! enforcing the contract, old log rows converted, a PostgreSQL schema of the policy's own.

use super::*;

on_both!(migrations_are_idempotent, the_schema_enforces_the_contract);

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
