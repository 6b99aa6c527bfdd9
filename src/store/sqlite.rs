//! The SQLite store, for local runs, `signet demo` and tests. SQLite has a single writer, so a
//! claim is one `BEGIN IMMEDIATE` transaction: the update of the rows still due and the insert of
//! their log rows commit together. Timestamps are ISO 8601 text compared through `unixepoch()`.

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
};
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

use super::{
    ClaimedDelivery, ConnectOptions, DueCursor, DueQuery, Error, NoticeKind, Outcome, Result,
    TimedOut, TimeoutCursor, TimeoutQuery, WORKFLOW_COLUMNS, Workflow, idempotency_key,
};

/// A SQLite connection pool.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

/// The current instant in the format the migrations use.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// SQLite's RETURNING takes no table alias.
const RETURNED_COLUMNS: &str = "id, workflow_type, signer_email, signer_name, document_title, \
    signing_url, signer_time_zone, status, requested_at, deadline_at, reminders_sent, \
    last_reminded_at, expiry_warned_at, escalated_at";

/// The due conditions over the alias `w`, with the parameters of the PostgreSQL store:
/// ?1 workflow types (JSON array), ?2 max reminders, ?3 first after, ?4 every, ?5 timeout after,
/// ?6 expiry warning before, ?7 escalation after (seconds, NULL when absent).
const SELECTED: &str = "w.status = 'pending' \
    AND (json_array_length(?1) = 0 OR w.workflow_type IN (SELECT value FROM json_each(?1))) \
    AND (DEADLINE IS NULL OR unixepoch('now', 'subsec') < DEADLINE)";
const DEADLINE: &str = "coalesce(unixepoch(w.deadline_at, 'subsec'), \
    unixepoch(w.requested_at, 'subsec') + ?5)";
const REMINDER_DUE: &str = "(w.reminders_sent < ?2 AND unixepoch('now', 'subsec') >= CASE \
    WHEN w.reminders_sent = 0 THEN unixepoch(w.requested_at, 'subsec') + ?3 \
    ELSE unixepoch(coalesce(w.last_reminded_at, w.requested_at), 'subsec') + ?4 END)";
const EXPIRY_WARNING_DUE: &str = "(w.expiry_warned_at IS NULL \
    AND unixepoch('now', 'subsec') >= DEADLINE - ?6)";
const ESCALATION_DUE: &str = "(w.escalated_at IS NULL AND w.reminders_sent >= ?2 \
    AND unixepoch('now', 'subsec') >= unixepoch(w.last_reminded_at, 'subsec') + ?7)";

fn expand(sql: &str) -> String {
    sql.replace("DEADLINE", DEADLINE)
}

static CANDIDATES: LazyLock<String> = LazyLock::new(|| {
    expand(&format!(
        "SELECT {WORKFLOW_COLUMNS} FROM signature_workflows w \
         WHERE {SELECTED} AND (?8 IS NULL OR w.id > ?8) \
           AND ({REMINDER_DUE} OR {EXPIRY_WARNING_DUE} OR {ESCALATION_DUE}) \
         ORDER BY w.id LIMIT ?9"
    ))
});

/// The update half of a claim: ?8 workflow ids (JSON array).
fn claim_sql(kind: NoticeKind) -> String {
    let (due, set) = match kind {
        NoticeKind::Reminder => (
            REMINDER_DUE,
            "reminders_sent = reminders_sent + 1, last_reminded_at = NOW",
        ),
        NoticeKind::ExpiryWarning => (EXPIRY_WARNING_DUE, "expiry_warned_at = NOW"),
        NoticeKind::Escalation => (ESCALATION_DUE, "escalated_at = NOW"),
        NoticeKind::TimeoutAlert => unreachable!("timeouts are claimed by the timeout worker"),
    };
    expand(&format!(
        "UPDATE signature_workflows AS w SET {} \
         WHERE w.id IN (SELECT value FROM json_each(?8)) AND {SELECTED} AND {due} \
         RETURNING {RETURNED_COLUMNS}",
        set.replace("NOW", NOW)
    ))
}

static CLAIMS: LazyLock<[String; 3]> = LazyLock::new(|| {
    [
        claim_sql(NoticeKind::Reminder),
        claim_sql(NoticeKind::ExpiryWarning),
        claim_sql(NoticeKind::Escalation),
    ]
});

const INSERT_LOG: &str = "INSERT INTO signature_reminder_log \
      (workflow_id, kind, sequence, channel, state, attempts, idempotency_key, lease_until) \
    VALUES (?1, ?2, ?3, ?4, 'pending', 1, ?5, strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?6)) \
    ON CONFLICT (workflow_id, kind, sequence, channel) DO NOTHING \
    RETURNING id, attempts";

/// The update half of a timeout chunk of a deadline source (0: `deadline_at`, 1:
/// `requested_at + timeout.after`): ?1 workflow types (JSON array), ?2 `timeout.after`
/// seconds, ?3 limit. Each chunk takes the first expired rows still pending (those of earlier
/// chunks are not any more), so SQLite needs no position within the walk, only its source.
fn time_out_sql(source: usize) -> String {
    let expired = if source == 0 {
        "w.deadline_at IS NOT NULL \
         AND unixepoch(w.deadline_at, 'subsec') <= unixepoch('now', 'subsec')"
    } else {
        "w.deadline_at IS NULL \
         AND unixepoch(w.requested_at, 'subsec') + ?2 <= unixepoch('now', 'subsec')"
    };
    format!(
        "UPDATE signature_workflows SET status = 'timed_out', timed_out_at = {NOW} \
         WHERE id IN ( \
           SELECT w.id FROM signature_workflows w \
           WHERE w.status = 'pending' AND {expired} \
             AND (json_array_length(?1) = 0 \
                  OR w.workflow_type IN (SELECT value FROM json_each(?1))) \
           ORDER BY w.id LIMIT ?3) \
         RETURNING {RETURNED_COLUMNS}"
    )
}

static TIME_OUTS: LazyLock<[String; 2]> = LazyLock::new(|| [time_out_sql(0), time_out_sql(1)]);

static RECOVER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE signature_reminder_log AS l \
         SET attempts = l.attempts + 1, \
             lease_until = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?3), updated_at = {NOW} \
         WHERE l.id IN ( \
           SELECT r.id FROM signature_reminder_log r \
           JOIN signature_workflows w ON w.id = r.workflow_id \
           WHERE r.state = 'pending' \
             AND unixepoch(r.lease_until, 'subsec') < unixepoch('now', 'subsec') \
             AND r.kind IN (SELECT value FROM json_each(?1)) \
             AND (json_array_length(?2) = 0 \
                  OR w.workflow_type IN (SELECT value FROM json_each(?2))) \
           ORDER BY r.id LIMIT ?4) \
         RETURNING id AS log_id, workflow_id, kind, sequence, channel, idempotency_key, \
           attempts, (unconfirmed OR reason IS NULL) AS possible_duplicate"
    )
});

static COMPLETE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE signature_reminder_log \
         SET state = ?2, provider_message_id = ?3, error = ?4, reason = ?6, unconfirmed = ?7, \
             updated_at = {NOW}, \
             lease_until = CASE WHEN ?2 = 'pending' \
               THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?5) END \
         WHERE id = ?1 AND state = 'pending'"
    )
});

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
        let now: String = sqlx::query_scalar(AssertSqlSafe(format!("SELECT {NOW}")))
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
        let rows = bind_due(sqlx::query(AssertSqlSafe(CANDIDATES.as_str())), query)
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
        let sql = &CLAIMS[super::claim_slot(kind)?];
        let failed = Error::query("claiming due notifications");
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(Error::query("starting a claim"))?;
        let rows = bind_due(sqlx::query(AssertSqlSafe(sql.as_str())), query)
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
        let rows = sqlx::query(AssertSqlSafe(TIME_OUTS[cursor.source].as_str()))
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
        let rows = sqlx::query(AssertSqlSafe(RECOVER.as_str()))
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
            let workflow_row = sqlx::query(AssertSqlSafe(format!(
                "SELECT {WORKFLOW_COLUMNS} FROM signature_workflows w WHERE w.id = ?1"
            )))
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

    pub(super) async fn complete(&self, outcomes: &[(i64, Outcome)]) -> Result<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(Error::query("starting to record outcomes"))?;
        for (id, outcome) in outcomes {
            sqlx::query(AssertSqlSafe(COMPLETE.as_str()))
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
