//! The SQLite store, for local runs, `signet demo` and tests. SQLite has a single writer, so a
//! claim is one `BEGIN IMMEDIATE` transaction: the update of the rows still due and the insert of
//! their log rows commit together. Timestamps are ISO 8601 text compared through `unixepoch()`.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
};
use uuid::Uuid;

use super::{
    ClaimedDelivery, ConnectOptions, DueCursor, DueQuery, Error, Failure, NoticeKind, Outcome,
    Released, Result, TimedOut, TimeoutCursor, TimeoutQuery, Workflow, idempotency_key,
};

/// A SQLite connection pool.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

/// A statement of `src/store/sql/sqlite/`, static text; its parameters are listed at its top.
macro_rules! sql {
    ($name:literal) => {
        include_str!(concat!("sql/sqlite/", $name, ".sql"))
    };
}

/// The database clock in the format the migrations use.
const NOW: &str = sql!("now");

/// Due workflows in id order.
const CANDIDATES: &str = sql!("due_candidates");

/// The update half of the claim of each kind the reminders worker sends, in
/// [`super::claim_slot`]'s order.
const CLAIMS: [&str; 3] = [
    sql!("claim_reminder"),
    sql!("claim_expiry_warning"),
    sql!("claim_escalation"),
];

/// The log row of a claimed delivery or a timeout alert.
const INSERT_LOG: &str = sql!("insert_log");

/// The `last_reminded_at` of workflows before a reminder claim, kept in its log rows.
const LAST_REMINDED: &str = sql!("last_reminded");

/// The update half of a timeout chunk of each deadline source: `deadline_at`, then
/// `requested_at + timeout.after`. Each chunk takes the first expired rows still pending (those
/// of earlier chunks are not any more), so SQLite needs no position within the walk.
const TIME_OUTS: [&str; 2] = [sql!("time_out_deadline_at"), sql!("time_out_timeout_after")];

/// Takes over expired pending deliveries.
const RECOVER: &str = sql!("recover");

/// A recovered delivery's workflow.
const WORKFLOW: &str = sql!("workflow");

/// Records one delivery's outcome.
const COMPLETE: &str = sql!("complete");

/// The claims of unsent deliveries that have nothing left ([`super::Store::release`]).
const RELEASE_GROUPS: &str = sql!("release_groups");

/// Undoes one such claim on its workflow.
const RELEASE_UNDO: &str = sql!("release_undo");

/// Deletes one such claim's log rows.
const RELEASE_DELETE: &str = sql!("release_delete");

/// Leaves another unsent delivery due without counting the attempt.
const RELEASE_KEEP: &str = sql!("release_keep");

/// A modifier for SQLite's date functions: `+900.000 seconds`.
fn seconds_modifier(seconds: f64) -> String {
    format!("{seconds:+.3} seconds")
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("strings serialize to JSON")
}

impl SqliteStore {
    pub(super) async fn connect(url: &str, options: &ConnectOptions) -> Result<Self> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("the database URL is not valid: {e}")))?
            .create_if_missing(options.create_sqlite_file)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect)
            .await
            .map_err(Error::Connect)?;
        Ok(Self { pool })
    }

    /// The pool, for callers that compose their own statements (tests, `signet demo`).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(super) async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("migrations/sqlite").run(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn now(&self) -> Result<DateTime<Utc>> {
        let now: String = sqlx::query_scalar(NOW)
            .fetch_one(&self.pool)
            .await
            .map_err(Error::query("reading the database clock"))?;
        timestamp("now()", &now)
    }

    pub(super) async fn due_candidates(
        &self,
        query: &DueQuery,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Workflow>> {
        let rows = bind_due(sqlx::query(CANDIDATES), query)
            .bind(after.map(|id| id.to_string()))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(Error::query("selecting due workflows"))?;
        rows.iter().map(workflow).collect()
    }

    /// SQLite walks the pending rows in id order (its scale is local runs and tests), so a
    /// walk is one branch paged by id.
    pub(super) async fn due_page(
        &self,
        query: &DueQuery,
        cursor: &mut DueCursor,
        limit: i64,
    ) -> Result<Vec<Workflow>> {
        if cursor.branch > 0 {
            return Ok(Vec::new());
        }
        let rows = self
            .due_candidates(query, cursor.last.map(|(_, id)| id), limit)
            .await?;
        match rows.last() {
            Some(last) => cursor.last = Some((None, last.id)),
            None => cursor.next_branch(),
        }
        Ok(rows)
    }

    pub(super) async fn claim(
        &self,
        kind: NoticeKind,
        ids: &[Uuid],
        channels: &[String],
        query: &DueQuery,
        lease: Duration,
    ) -> Result<Vec<ClaimedDelivery>> {
        let sql = CLAIMS[super::claim_slot(kind)?];
        let failed = Error::query("claiming due notifications");
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(Error::query("starting a claim"))?;
        let mut previous = std::collections::HashMap::new();
        if kind == NoticeKind::Reminder {
            for row in sqlx::query(LAST_REMINDED)
                .bind(json(&ids))
                .fetch_all(&mut *tx)
                .await
                .map_err(Error::query("reading when workflows were last reminded"))?
            {
                let id: String = row.try_get("id").map_err(data)?;
                let at: Option<String> = row.try_get("last_reminded_at").map_err(data)?;
                previous.insert(id, at);
            }
        }
        let rows = bind_due(sqlx::query(sql), query)
            .bind(json(&ids))
            .fetch_all(&mut *tx)
            .await
            .map_err(failed)?;
        let mut claimed = Vec::new();
        for row in &rows {
            let workflow = workflow(row)?;
            let sequence = match kind {
                NoticeKind::Reminder => workflow.reminders_sent,
                _ => 1,
            };
            for channel in channels {
                let key = idempotency_key(workflow.id, kind, sequence, channel);
                let inserted = sqlx::query(INSERT_LOG)
                    .bind(workflow.id.to_string())
                    .bind(kind.as_str())
                    .bind(sequence)
                    .bind(channel)
                    .bind(&key)
                    .bind(seconds_modifier(super::seconds(lease)))
                    .bind(previous.get(&workflow.id.to_string()).cloned().flatten())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(Error::query("logging claimed notifications"))?;
                // No row: the delivery is logged already, so it is someone else's (done) work.
                let Some(inserted) = inserted else { continue };
                claimed.push(ClaimedDelivery {
                    log_id: inserted.try_get("id").map_err(data)?,
                    workflow: workflow.clone(),
                    kind,
                    sequence,
                    channel: channel.clone(),
                    idempotency_key: key,
                    attempts: inserted.try_get("attempts").map_err(data)?,
                    recovered: false,
                    possible_duplicate: false,
                });
            }
        }
        tx.commit()
            .await
            .map_err(Error::query("committing a claim"))?;
        Ok(claimed)
    }

    pub(super) async fn time_out(
        &self,
        query: &TimeoutQuery,
        cursor: &TimeoutCursor,
        channels: &[String],
        lease: Duration,
        limit: i64,
    ) -> Result<TimedOut> {
        let kind = NoticeKind::TimeoutAlert;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(Error::query("starting a timeout"))?;
        let rows = sqlx::query(TIME_OUTS[cursor.source])
            .bind(json(&query.workflow_types))
            .bind(super::seconds(query.timeout_after))
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .map_err(Error::query("timing out expired workflows"))?;
        let mut timed_out = TimedOut::default();
        for row in &rows {
            let workflow = workflow(row)?;
            for channel in channels {
                let key = idempotency_key(workflow.id, kind, 1, channel);
                let inserted = sqlx::query(INSERT_LOG)
                    .bind(workflow.id.to_string())
                    .bind(kind.as_str())
                    .bind(1)
                    .bind(channel)
                    .bind(&key)
                    .bind(seconds_modifier(super::seconds(lease)))
                    .bind(None::<String>)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(Error::query("logging timeout alerts"))?;
                let Some(inserted) = inserted else { continue };
                timed_out.alerts.push(ClaimedDelivery {
                    log_id: inserted.try_get("id").map_err(data)?,
                    workflow: workflow.clone(),
                    kind,
                    sequence: 1,
                    channel: channel.clone(),
                    idempotency_key: key,
                    attempts: inserted.try_get("attempts").map_err(data)?,
                    recovered: false,
                    possible_duplicate: false,
                });
            }
            timed_out.workflows.push(workflow);
        }
        tx.commit()
            .await
            .map_err(Error::query("committing a timeout"))?;
        timed_out.workflows.sort_by_key(|w| w.id);
        Ok(timed_out)
    }

    pub(super) async fn recover(
        &self,
        kinds: &[NoticeKind],
        workflow_types: &[String],
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>> {
        let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(Error::query("starting a recovery"))?;
        let rows = sqlx::query(RECOVER)
            .bind(json(&kinds))
            .bind(json(&workflow_types))
            .bind(seconds_modifier(super::seconds(lease)))
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .map_err(Error::query("recovering expired deliveries"))?;
        let mut recovered = Vec::with_capacity(rows.len());
        for row in &rows {
            let workflow_id: String = row.try_get("workflow_id").map_err(data)?;
            let workflow_row = sqlx::query(WORKFLOW)
                .bind(&workflow_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(Error::query("reading recovered workflows"))?;
            recovered.push(ClaimedDelivery {
                log_id: row.try_get("log_id").map_err(data)?,
                workflow: workflow(&workflow_row)?,
                kind: super::stored_kind(row.try_get("kind").map_err(data)?)?,
                sequence: row.try_get("sequence").map_err(data)?,
                channel: row.try_get("channel").map_err(data)?,
                idempotency_key: row.try_get("idempotency_key").map_err(data)?,
                attempts: row.try_get("attempts").map_err(data)?,
                recovered: true,
                possible_duplicate: row.try_get("possible_duplicate").map_err(data)?,
            });
        }
        tx.commit()
            .await
            .map_err(Error::query("committing a recovery"))?;
        recovered.sort_by_key(|d| d.log_id);
        Ok(recovered)
    }

    pub(super) async fn release(&self, unsent: &[(i64, Failure)]) -> Result<Released> {
        let ids: Vec<i64> = unsent.iter().map(|(id, _)| *id).collect();
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(Error::query("starting a release"))?;
        let groups = sqlx::query(RELEASE_GROUPS)
            .bind(json(&ids))
            .fetch_all(&mut *tx)
            .await
            .map_err(Error::query("giving back unsent deliveries"))?;
        let mut released = Released::default();
        for group in &groups {
            let workflow: String = group.try_get("workflow_id").map_err(data)?;
            let kind: String = group.try_get("kind").map_err(data)?;
            let sequence: i32 = group.try_get("sequence").map_err(data)?;
            let previous: Option<String> = group.try_get("previous_reminded_at").map_err(data)?;
            sqlx::query(RELEASE_UNDO)
                .bind(&workflow)
                .bind(&kind)
                .bind(sequence)
                .bind(previous)
                .execute(&mut *tx)
                .await
                .map_err(Error::query("undoing unsent claims"))?;
            released.undone += sqlx::query(RELEASE_DELETE)
                .bind(&workflow)
                .bind(&kind)
                .bind(sequence)
                .execute(&mut *tx)
                .await
                .map_err(Error::query("undoing unsent claims"))?
                .rows_affected();
        }
        for (id, failure) in unsent {
            released.kept += sqlx::query(RELEASE_KEEP)
                .bind(id)
                .bind(failure.reason)
                .bind(&failure.error)
                .execute(&mut *tx)
                .await
                .map_err(Error::query("giving back unsent deliveries"))?
                .rows_affected();
        }
        tx.commit()
            .await
            .map_err(Error::query("giving back unsent deliveries"))?;
        Ok(released)
    }

    pub(super) async fn complete(&self, outcomes: &[(i64, Outcome)]) -> Result<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(Error::query("starting to record outcomes"))?;
        for (id, outcome) in outcomes {
            sqlx::query(COMPLETE)
                .bind(id)
                .bind(outcome.state())
                .bind(outcome.provider_message_id())
                .bind(outcome.error())
                .bind(seconds_modifier(super::seconds(outcome.retry_after())))
                .bind(outcome.reason())
                .bind(outcome.unconfirmed())
                .execute(&mut *tx)
                .await
                .map_err(Error::query("recording delivery outcomes"))?;
        }
        tx.commit()
            .await
            .map_err(Error::query("recording delivery outcomes"))
    }
}

fn bind_due<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    due: &'q DueQuery,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    query
        .bind(json(&due.workflow_types))
        .bind(due.max_reminders)
        .bind(super::seconds(due.first_after))
        .bind(super::seconds(due.every))
        .bind(due.timeout_after.map(super::seconds))
        .bind(due.expiry_warning_before.map(super::seconds))
        .bind(due.escalation_after.map(super::seconds))
}

fn data(e: sqlx::Error) -> Error {
    Error::Data {
        column: "signature_reminder_log",
        message: e.to_string(),
    }
}

fn timestamp(column: &'static str, text: &str) -> Result<DateTime<Utc>> {
    // The application may write any form SQLite's date functions accept; normalise through them
    // rather than guessing formats here.
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").map(|t| t.and_utc())
        })
        .map_err(|e| Error::Data {
            column,
            message: format!("{text:?} is not a timestamp: {e}"),
        })
}

fn optional_timestamp(row: &SqliteRow, column: &'static str) -> Result<Option<DateTime<Utc>>> {
    let text: Option<String> = row.try_get(column).map_err(|e| Error::Data {
        column,
        message: e.to_string(),
    })?;
    text.map(|t| timestamp(column, &t)).transpose()
}

pub(super) fn workflow(row: &SqliteRow) -> Result<Workflow> {
    let get = |e: sqlx::Error| Error::Data {
        column: "signature_workflows",
        message: e.to_string(),
    };
    let id: String = row.try_get("id").map_err(get)?;
    Ok(Workflow {
        id: Uuid::parse_str(&id).map_err(|e| Error::Data {
            column: "signature_workflows.id",
            message: format!("{id:?} is not a UUID: {e}"),
        })?,
        workflow_type: row.try_get("workflow_type").map_err(get)?,
        signer_email: row.try_get("signer_email").map_err(get)?,
        signer_name: row.try_get("signer_name").map_err(get)?,
        document_title: row.try_get("document_title").map_err(get)?,
        signing_url: row.try_get("signing_url").map_err(get)?,
        signer_time_zone: row.try_get("signer_time_zone").map_err(get)?,
        status: row.try_get("status").map_err(get)?,
        requested_at: optional_timestamp(row, "requested_at")?.ok_or(Error::Data {
            column: "requested_at",
            message: "is NULL".into(),
        })?,
        deadline_at: optional_timestamp(row, "deadline_at")?,
        reminders_sent: row.try_get("reminders_sent").map_err(get)?,
        last_reminded_at: optional_timestamp(row, "last_reminded_at")?,
        expiry_warned_at: optional_timestamp(row, "expiry_warned_at")?,
        escalated_at: optional_timestamp(row, "escalated_at")?,
    })
}
