//! Fresh databases and helpers for tests and benchmarks (compiled only for tests and with the
//! `testing` feature, never into the product): a uniquely named PostgreSQL database
//! (dropped again when the handle is dropped) or a SQLite file, plus helpers that inspect
//! and age rows. Seed rows are written by [`super::seed`], re-exported here.
//!
//! The PostgreSQL server is `SIGNET_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). If it cannot be reached, tests fail; they are
//! skipped only when `SIGNET_TEST_SKIP_POSTGRES=1` says so explicitly, and never when `CI=true`.

use std::path::PathBuf;

use sqlx::{AssertSqlSafe, Connection, Row};
use uuid::Uuid;

pub use super::seed::{Seed, seed};
use super::{ConnectOptions, Result, Store};
use crate::policy::Workflow;

/// The columns of [`Workflow`], over the alias `w`, as both backends select them.
const WORKFLOW_COLUMNS: &str = "w.id, w.workflow_type, w.signer_email, w.signer_name, \
    w.document_title, w.signing_url, w.signer_time_zone, w.status, w.requested_at, \
    w.deadline_at, w.reminders_sent, w.last_reminded_at, w.expiry_warned_at, w.escalated_at";

/// Default PostgreSQL server for tests.
pub const DEFAULT_TEST_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDatabase {
    /// URL of the fresh database.
    pub url: String,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Postgres { server: String, name: String },
    Sqlite { path: PathBuf },
}

/// Which backend a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A fresh database on the test server.
    Postgres,
    /// A fresh file in the temporary directory.
    Sqlite,
}

impl TestDatabase {
    /// A fresh, migrated database of `backend`; `None` only when PostgreSQL is unreachable and
    /// `SIGNET_TEST_SKIP_POSTGRES=1` (outside CI) asks to skip.
    pub async fn new(backend: Backend) -> Option<(Self, Store)> {
        let db = match backend {
            Backend::Postgres => Self::postgres().await?,
            Backend::Sqlite => Self::sqlite(),
        };
        let store = db
            .connect(None)
            .await
            .expect("connect to the test database");
        store.migrate().await.expect("migrate the test database");
        Some((db, store))
    }

    /// A fresh, empty PostgreSQL database (see the module docs for when this returns `None`).
    pub async fn postgres() -> Option<Self> {
        let server = std::env::var("SIGNET_TEST_DATABASE_URL")
            .unwrap_or_else(|_| DEFAULT_TEST_SERVER.into());
        let mut admin = match sqlx::PgConnection::connect(&server).await {
            Ok(conn) => conn,
            Err(err) => {
                let ci = std::env::var("CI").is_ok_and(|v| v == "true");
                let skip = std::env::var("SIGNET_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1");
                if skip && !ci {
                    eprintln!("SKIPPED: PostgreSQL at {server} is unreachable ({err})");
                    return None;
                }
                panic!(
                    "PostgreSQL at {server} is unreachable: {err}. Start it, point \
                     SIGNET_TEST_DATABASE_URL at another server, or (outside CI) set \
                     SIGNET_TEST_SKIP_POSTGRES=1 to skip these tests"
                );
            }
        };
        let name = format!("signet_test_{}", Uuid::new_v4().simple());
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        Some(Self {
            url: with_database(&server, &name),
            cleanup: Cleanup::Postgres { server, name },
        })
    }

    /// A fresh SQLite database file (created on first connection).
    pub fn sqlite() -> Self {
        let path = std::env::temp_dir().join(format!("signet-test-{}.db", Uuid::new_v4().simple()));
        Self {
            url: format!("sqlite://{}?mode=rwc", path.display()),
            cleanup: Cleanup::Sqlite { path },
        }
    }

    /// Connects to the database, optionally with a PostgreSQL schema.
    pub async fn connect(&self, schema: Option<&str>) -> Result<Store> {
        Store::connect(
            &self.url,
            &ConnectOptions {
                schema: schema.map(str::to_owned),
                create_sqlite_file: true,
                max_connections: 8,
            },
        )
        .await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Sqlite { path } => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
            }
            Cleanup::Postgres { server, name } => {
                // Drop runs inside the test's runtime, which cannot block on itself: drop the
                // database from a thread with a runtime of its own.
                let (server, name) = (server.clone(), name.clone());
                let dropped = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a runtime to drop the test database");
                    runtime.block_on(async move {
                        let mut admin = sqlx::PgConnection::connect(&server).await?;
                        sqlx::query(AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        )))
                        .execute(&mut admin)
                        .await
                        .map(|_| ())
                    })
                })
                .join();
                if let Ok(Err(err)) = dropped {
                    eprintln!("could not drop a test database: {err}");
                }
            }
        }
    }
}

/// `server` with its database name replaced by `name`.
pub fn with_database(server: &str, name: &str) -> String {
    let (base, query) = server
        .split_once('?')
        .map_or((server, None), |(b, q)| (b, Some(q)));
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// One row of `signature_reminder_log`, as tests inspect it.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRow {
    /// Workflow id.
    pub workflow_id: Uuid,
    /// Kind.
    pub kind: String,
    /// Sequence.
    pub sequence: i32,
    /// Channel.
    pub channel: String,
    /// State.
    pub state: String,
    /// Attempts.
    pub attempts: i32,
    /// Idempotency key.
    pub idempotency_key: String,
    /// Provider message id.
    pub provider_message_id: Option<String>,
    /// Error, for a person.
    pub error: Option<String>,
    /// Reason code of the failure.
    pub reason: Option<String>,
    /// Whether the last try got no answer.
    pub unconfirmed: bool,
}

/// Every log row, in insertion order.
pub async fn log_rows(store: &Store) -> Result<Vec<LogRow>> {
    const SQL: &str = "SELECT workflow_id, kind, sequence, channel, state, attempts, \
        idempotency_key, provider_message_id, error, reason, unconfirmed \
        FROM signature_reminder_log ORDER BY id";
    let failed = super::Error::query("reading the log");
    macro_rules! rows {
        ($pool:expr, $id:expr) => {
            sqlx::query(SQL)
                .fetch_all($pool)
                .await
                .map_err(failed)?
                .iter()
                .map(|r| LogRow {
                    workflow_id: $id(r),
                    kind: r.get("kind"),
                    sequence: r.get("sequence"),
                    channel: r.get("channel"),
                    state: r.get("state"),
                    attempts: r.get("attempts"),
                    idempotency_key: r.get("idempotency_key"),
                    provider_message_id: r.get("provider_message_id"),
                    error: r.get("error"),
                    reason: r.get("reason"),
                    unconfirmed: r.get("unconfirmed"),
                })
                .collect()
        };
    }
    Ok(match store {
        Store::Postgres(pg) => rows!(pg.pool(), |r: &sqlx::postgres::PgRow| r.get("workflow_id")),
        Store::Sqlite(lite) => rows!(lite.pool(), |r: &sqlx::sqlite::SqliteRow| {
            Uuid::parse_str(r.get::<&str, _>("workflow_id")).expect("UUID text")
        }),
    })
}

/// The workflow with `id`, as the workers see it.
pub async fn workflow(store: &Store, id: Uuid) -> Result<Workflow> {
    let failed = super::Error::query("reading a workflow");
    let sql = |placeholder: &str| {
        AssertSqlSafe(format!(
            "SELECT {} FROM signature_workflows w WHERE w.id = {placeholder}",
            WORKFLOW_COLUMNS
        ))
    };
    match store {
        Store::Postgres(pg) => {
            let row = sqlx::query(sql("$1"))
                .bind(id)
                .fetch_one(pg.pool())
                .await
                .map_err(failed)?;
            super::postgres::workflow(&row)
        }
        Store::Sqlite(lite) => {
            let row = sqlx::query(sql("?1"))
                .bind(id.to_string())
                .fetch_one(lite.pool())
                .await
                .map_err(failed)?;
            super::sqlite::workflow(&row)
        }
    }
}

/// The ids of the workflows marked `timed_out` that carry a `timed_out_at`, sorted.
pub async fn timed_out(store: &Store) -> Result<Vec<Uuid>> {
    const SQL: &str = "SELECT id FROM signature_workflows \
        WHERE status = 'timed_out' AND timed_out_at IS NOT NULL ORDER BY id";
    let failed = super::Error::query("reading timed-out workflows");
    let mut ids = match store {
        Store::Postgres(pg) => sqlx::query_scalar::<_, Uuid>(SQL)
            .fetch_all(pg.pool())
            .await
            .map_err(failed)?,
        Store::Sqlite(lite) => sqlx::query_scalar::<_, String>(SQL)
            .fetch_all(lite.pool())
            .await
            .map_err(failed)?
            .iter()
            .map(|id| Uuid::parse_str(id).expect("test ids are UUIDs"))
            .collect(),
    };
    ids.sort();
    Ok(ids)
}

/// Runs one statement written for both backends (`$1`-style parameters are not used).
pub async fn execute(store: &Store, sql: &str) -> Result<u64> {
    let failed = super::Error::query("a test statement");
    Ok(match store {
        Store::Postgres(pg) => sqlx::query(AssertSqlSafe(sql.to_owned()))
            .execute(pg.pool())
            .await
            .map_err(failed)?
            .rows_affected(),
        Store::Sqlite(lite) => sqlx::query(AssertSqlSafe(sql.to_owned()))
            .execute(lite.pool())
            .await
            .map_err(failed)?
            .rows_affected(),
    })
}

/// Moves every pending delivery's lease into the past, as if its worker had died long ago.
pub async fn expire_leases(store: &Store) -> Result<u64> {
    execute(
        store,
        match store {
            Store::Postgres(_) => {
                "UPDATE signature_reminder_log SET lease_until = now() - interval '1 second' \
                 WHERE state = 'pending'"
            }
            Store::Sqlite(_) => {
                "UPDATE signature_reminder_log \
                 SET lease_until = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 seconds') \
                 WHERE state = 'pending'"
            }
        },
    )
    .await
}

/// Makes `secs` seconds pass: every timestamp of every workflow, and every lease, moves that far
/// into the past (the database clock itself cannot be moved).
pub async fn time_passes(store: &Store, secs: f64) -> Result<()> {
    const COLUMNS: [&str; 6] = [
        "requested_at",
        "deadline_at",
        "last_reminded_at",
        "expiry_warned_at",
        "escalated_at",
        "timed_out_at",
    ];
    let shift = |column: &str| match store {
        Store::Postgres(_) => format!("{column} = {column} - {secs} * interval '1 second'"),
        Store::Sqlite(_) => format!(
            "{column} = strftime('%Y-%m-%dT%H:%M:%fZ', {column}, '{:+.3} seconds')",
            -secs
        ),
    };
    let columns: Vec<String> = COLUMNS.iter().map(|c| shift(c)).collect();
    execute(
        store,
        &format!("UPDATE signature_workflows SET {}", columns.join(", ")),
    )
    .await?;
    execute(
        store,
        &format!("UPDATE signature_reminder_log SET {}", shift("lease_until")),
    )
    .await?;
    Ok(())
}
