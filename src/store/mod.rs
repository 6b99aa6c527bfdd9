//! The database behind the workers: the embedded migrations and one small interface over
//! PostgreSQL ([`postgres`]) and SQLite ([`sqlite`]). Plain SQL with bind parameters; the database
//! clock decides what is due; a claim marks a workflow's notice as taken and inserts its pending
//! log rows in one statement (PostgreSQL) or one `BEGIN IMMEDIATE` transaction (SQLite).

pub mod postgres;
pub mod seed;
pub mod sqlite;
/// Test support, never in the product: built for unit tests and with the `testing` feature
/// (which the crate's own tests, benchmarks and examples turn on through a dev-dependency).
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::policy::{DueQuery, NoticeKind, Section, TimeoutQuery, Workflow};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL or schema name cannot be used: a configuration error.
    #[error("{0}")]
    Config(String),
    /// The database could not be reached.
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// Applying the migrations failed.
    #[error("applying the migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A statement failed.
    #[error("{context} failed: {source}")]
    Query {
        /// What was being done.
        context: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A row held a value Signet cannot use.
    #[error("unexpected value in {column}: {message}")]
    Data {
        /// The column.
        column: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

impl Error {
    /// A stable name for logs, metrics and condition reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Config(_) => "DatabaseConfigInvalid",
            Error::Connect(_) => "DatabaseUnavailable",
            Error::Migrate(_) => "MigrationFailed",
            Error::Query { .. } => "QueryFailed",
            Error::Data { .. } => "UnexpectedData",
        }
    }

    /// Whether retrying cannot help (exit code 2 rather than 1).
    pub fn is_configuration(&self) -> bool {
        matches!(self, Error::Config(_))
    }

    pub(crate) fn query(context: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
        move |source| Error::Query { context, source }
    }
}

/// Shorthand for store results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a run's walk through the expired workflows stands ([`Store::time_out`]); start with
/// `TimeoutCursor::default()`. Rows whose own `deadline_at` passed are walked first, then rows
/// whose deadline is `requested_at + timeout.after`, each in deadline order from where the
/// previous chunk ended, so a chunk never re-reads the rows earlier chunks changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TimeoutCursor {
    /// 0: `deadline_at` set; 1: `requested_at + timeout.after`; 2: done.
    source: usize,
    /// The last row of the previous chunk: its key column and id.
    last: Option<(DateTime<Utc>, Uuid)>,
}

impl TimeoutCursor {
    fn next_source(&mut self) {
        self.source += 1;
        self.last = None;
    }

    /// Moves past the rows of `chunk` (returned in any order).
    fn advance(&mut self, chunk: &[Workflow]) {
        let key = |w: &Workflow| {
            let at = match self.source {
                0 => w.deadline_at.unwrap_or(w.requested_at),
                _ => w.requested_at,
            };
            (at, w.id)
        };
        if let Some(last) = chunk.iter().map(key).max() {
            self.last = Some(last);
        }
    }
}

/// What one timeout chunk did: the workflows now `timed_out` and the alert deliveries logged
/// for them in the same transaction (none when the timeout names no channel).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TimedOut {
    /// The workflows marked `timed_out`, as they stand after the update.
    pub workflows: Vec<Workflow>,
    /// One pending `timeout_alert` delivery per workflow and channel, held by this run.
    pub alerts: Vec<ClaimedDelivery>,
}

/// Where a walk through the due workflows stands ([`Store::due_page`]); start with
/// `DueCursor::default()`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DueCursor {
    /// The instant the walk's time bounds are taken at: the database clock at its first page.
    as_of: Option<DateTime<Utc>>,
    /// The branch of the due conditions being walked (backend-specific).
    branch: usize,
    /// The last row returned in this branch: its key column and id.
    last: Option<(Option<DateTime<Utc>>, Uuid)>,
}

impl DueCursor {
    fn next_branch(&mut self) {
        self.branch += 1;
        self.last = None;
    }
}

/// A delivery this worker now holds: one pending log row (one workflow, notice and channel).
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimedDelivery {
    /// `signature_reminder_log.id`.
    pub log_id: i64,
    /// The workflow, as it stands after the claim.
    pub workflow: Workflow,
    /// What is being sent.
    pub kind: NoticeKind,
    /// Reminder number, 1 for once-only notices.
    pub sequence: i32,
    /// The channel's name in the policy.
    pub channel: String,
    /// Stable across retries; travels with the send so providers can deduplicate.
    pub idempotency_key: String,
    /// Attempts including this one.
    pub attempts: i32,
    /// A retry of an earlier run's delivery.
    pub recovered: bool,
    /// A retry whose earlier attempt left no outcome (the worker died mid-send, or the provider
    /// did not answer in time): the message may already have gone out.
    pub possible_duplicate: bool,
}

/// Why a delivery was not sent, as the log keeps it: `signature_reminder_log.reason`,
/// `.unconfirmed` and `.error`.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// A stable reason code: `notify::Error::reason()`, or the worker's own when no provider
    /// was asked.
    pub reason: &'static str,
    /// The try got no answer (`notify::Error::Timeout`, `NoAnswer`): the provider may have
    /// accepted the message anyway, so recovering the row counts a possible duplicate.
    pub unconfirmed: bool,
    /// What happened, for a person.
    pub error: String,
}

impl Failure {
    /// A failure before any provider was asked (nothing can have gone out).
    pub fn unsent(reason: &'static str, error: impl Into<String>) -> Self {
        Self {
            reason,
            unconfirmed: false,
            error: error.into(),
        }
    }
}

/// What [`Store::release`] did with the unsent deliveries it was given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// Log rows deleted with the claims they belonged to (those notices are due again).
    pub undone: u64,
    /// Log rows left pending for the next run's recovery.
    pub kept: u64,
}

/// How a delivery ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The provider accepted it.
    Sent {
        /// The provider's id for it, when it gives one.
        provider_message_id: Option<String>,
    },
    /// It will not be sent.
    Failed(Failure),
    /// Not sent this run; the next run retries once `after` has passed.
    Retry {
        /// Why.
        failure: Failure,
        /// How long until it may be retried.
        after: Duration,
    },
}

impl Outcome {
    fn state(&self) -> &'static str {
        match self {
            Outcome::Sent { .. } => "sent",
            Outcome::Failed { .. } => "failed",
            Outcome::Retry { .. } => "pending",
        }
    }

    fn provider_message_id(&self) -> Option<&str> {
        match self {
            Outcome::Sent {
                provider_message_id,
            } => provider_message_id.as_deref(),
            _ => None,
        }
    }

    fn failure(&self) -> Option<&Failure> {
        match self {
            Outcome::Failed(failure) | Outcome::Retry { failure, .. } => Some(failure),
            Outcome::Sent { .. } => None,
        }
    }

    fn error(&self) -> Option<&str> {
        self.failure().map(|f| f.error.as_str())
    }

    fn reason(&self) -> Option<&'static str> {
        self.failure().map(|f| f.reason)
    }

    fn unconfirmed(&self) -> bool {
        self.failure().is_some_and(|f| f.unconfirmed)
    }

    fn retry_after(&self) -> Duration {
        match self {
            Outcome::Retry { after, .. } => *after,
            _ => Duration::ZERO,
        }
    }
}

/// A connected store.
#[derive(Clone, Debug)]
pub enum Store {
    /// PostgreSQL, the production store.
    Postgres(postgres::PgStore),
    /// SQLite, for local runs and tests.
    Sqlite(sqlite::SqliteStore),
}

/// How to connect.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// PostgreSQL schema holding the tables (`spec.database.schema`); set as the search path.
    pub schema: Option<String>,
    /// Create the SQLite file when it is missing (migrations only).
    pub create_sqlite_file: bool,
    /// Connections in the pool at most.
    pub max_connections: u32,
}

impl Store {
    /// Connects to `url`: `postgres://` / `postgresql://` or `sqlite:`.
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Self> {
        if let Some(schema) = &options.schema {
            check_schema_name(schema)?;
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(
                postgres::PgStore::connect(url, options).await?,
            ))
        } else if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(
                sqlite::SqliteStore::connect(url, options).await?,
            ))
        } else {
            Err(Error::Config(
                "the database URL must start with postgres://, postgresql:// or sqlite:".into(),
            ))
        }
    }

    /// Applies the embedded migrations; a no-op when they are applied already.
    pub async fn migrate(&self) -> Result<()> {
        match self {
            Store::Postgres(s) => s.migrate().await,
            Store::Sqlite(s) => s.migrate().await,
        }
    }

    /// The database clock.
    pub async fn now(&self) -> Result<DateTime<Utc>> {
        match self {
            Store::Postgres(s) => s.now().await,
            Store::Sqlite(s) => s.now().await,
        }
    }

    /// Up to `limit` pending workflows, in id order after `after`, for which some notice is due by
    /// time (send windows are the caller's business).
    pub async fn due_candidates(
        &self,
        query: &DueQuery,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Workflow>> {
        match self {
            Store::Postgres(s) => s.due_candidates(query, after, limit).await,
            Store::Sqlite(s) => s.due_candidates(query, after, limit).await,
        }
    }

    /// The next up to `limit` pending workflows for which some notice is due by time (send
    /// windows are the caller's business), walking from `cursor`; empty when the walk is done.
    /// A walk meets each workflow at most once and finds every workflow due when it started;
    /// pages come in no particular order. On PostgreSQL the walk follows time-ordered partial
    /// indexes, so its cost follows what is due, not the number of pending rows.
    pub async fn due_page(
        &self,
        query: &DueQuery,
        cursor: &mut DueCursor,
        limit: i64,
    ) -> Result<Vec<Workflow>> {
        match self {
            Store::Postgres(s) => s.due_page(query, cursor, limit).await,
            Store::Sqlite(s) => s.due_page(query, cursor, limit).await,
        }
    }

    /// Claims `kind` for those of `ids` for which it is still due by the database clock, and
    /// inserts a pending log row per channel held for `lease`. Rows another worker
    /// holds or already claimed are left out.
    pub async fn claim(
        &self,
        kind: NoticeKind,
        ids: &[Uuid],
        channels: &[String],
        query: &DueQuery,
        lease: Duration,
    ) -> Result<Vec<ClaimedDelivery>> {
        if ids.is_empty() || channels.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Store::Postgres(s) => s.claim(kind, ids, channels, query, lease).await,
            Store::Sqlite(s) => s.claim(kind, ids, channels, query, lease).await,
        }
    }

    /// Marks the next up to `limit` pending workflows past their deadline `timed_out`, walking
    /// from `cursor`, with `timed_out_at` from the database clock, and logs a pending alert per
    /// channel held for `lease`, all in one transaction; empty when the walk is
    /// done. Rows another worker holds are left for it; a workflow is timed out (and its alerts
    /// logged) exactly once.
    pub async fn time_out(
        &self,
        query: &TimeoutQuery,
        cursor: &mut TimeoutCursor,
        channels: &[String],
        lease: Duration,
        limit: i64,
    ) -> Result<TimedOut> {
        while cursor.source < 2 {
            let chunk = match self {
                Store::Postgres(s) => s.time_out(query, cursor, channels, lease, limit).await?,
                Store::Sqlite(s) => s.time_out(query, cursor, channels, lease, limit).await?,
            };
            if chunk.workflows.is_empty() {
                cursor.next_source();
                continue;
            }
            cursor.advance(&chunk.workflows);
            return Ok(chunk);
        }
        Ok(TimedOut::default())
    }

    /// Takes over up to `limit` pending deliveries of `kinds` whose lease has expired (a crashed
    /// or failed earlier run), for workflows of `workflow_types`, with a new lease.
    pub async fn recover(
        &self,
        kinds: &[NoticeKind],
        workflow_types: &[String],
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>> {
        match self {
            Store::Postgres(s) => s.recover(kinds, workflow_types, lease, limit).await,
            Store::Sqlite(s) => s.recover(kinds, workflow_types, lease, limit).await,
        }
    }

    /// Records how deliveries ended (only rows still pending are changed).
    pub async fn complete(&self, outcomes: &[(i64, Outcome)]) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        match self {
            Store::Postgres(s) => s.complete(outcomes).await,
            Store::Sqlite(s) => s.complete(outcomes).await,
        }
    }

    /// Gives back deliveries this run claimed and did not send (their channel rejected the run,
    /// or the worker was asked to stop), so that nothing is consumed: a claim none of whose
    /// deliveries went out is undone on the workflow, as if it had never been made (the
    /// reminder counter and `last_reminded_at`, or the notice's timestamp, go back; its log rows
    /// go), so the notice is due again by its own schedule; any other (a sibling channel sent
    /// it, the workflow moved on, a timeout alert) stays pending, due for the next run's
    /// recovery at once, without the attempt counted. Only rows still pending change.
    pub async fn release(&self, unsent: &[(i64, Failure)]) -> Result<Released> {
        if unsent.is_empty() {
            return Ok(Released::default());
        }
        match self {
            Store::Postgres(s) => s.release(unsent).await,
            Store::Sqlite(s) => s.release(unsent).await,
        }
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        match self {
            Store::Postgres(s) => s.pool().close().await,
            Store::Sqlite(s) => s.pool().close().await,
        }
    }
}

/// Schema names are interpolated into `CREATE SCHEMA` and the search path, so only plain
/// lowercase identifiers (what the CRD allows) get through.
fn check_schema_name(schema: &str) -> Result<()> {
    let mut chars = schema.chars();
    let valid = schema.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "schema {schema:?} is not a lowercase identifier (a-z, 0-9, _; at most 63 characters)"
        )))
    }
}

/// A duration as the seconds both backends' SQL computes with: the only conversion of a policy's
/// durations to numbers.
pub(crate) fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// Index of `kind`'s claim statement in a backend's `CLAIMS`: the kinds the reminders worker
/// sends, in [`NoticeKind::ALL`]'s order. Timeout alerts are logged with the timeout itself.
pub(crate) fn claim_slot(kind: NoticeKind) -> Result<usize> {
    Section::Reminders
        .kinds()
        .position(|k| k == kind)
        .ok_or_else(|| {
            Error::Config(format!(
                "{} is not claimed by the reminders worker",
                kind.as_str()
            ))
        })
}

/// The kind of a stored `signature_reminder_log.kind`.
pub(crate) fn stored_kind(name: &str) -> Result<NoticeKind> {
    NoticeKind::parse(name).ok_or_else(|| Error::Data {
        column: "signature_reminder_log.kind",
        message: format!("unknown kind {name:?}"),
    })
}

/// The idempotency key of a delivery; the stores build the same string in SQL.
pub fn idempotency_key(workflow: Uuid, kind: NoticeKind, sequence: i32, channel: &str) -> String {
    format!("signet:{workflow}:{}:{sequence}:{channel}", kind.as_str())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for ok in ["public", "signet", "_x", "a1_b"] {
            check_schema_name(ok).unwrap();
        }
        for bad in ["", "Public", "1a", "a-b", "a;drop", "a b", &"a".repeat(64)] {
            assert_eq!(
                check_schema_name(bad).unwrap_err().reason(),
                "DatabaseConfigInvalid",
                "{bad}"
            );
        }
    }
}
