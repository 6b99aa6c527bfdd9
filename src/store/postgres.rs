//! The PostgreSQL store. A claim is one statement per batch: the workflow rows still due are
//! locked with `FOR UPDATE SKIP LOCKED`, marked, and their pending log rows inserted in the same
//! statement, so two concurrent workers never hold the same notification.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use uuid::Uuid;

use super::{
    ClaimedDelivery, ConnectOptions, DueCursor, Error, Failure, Outcome, Released, Result,
    TimedOut, TimeoutCursor,
};
use crate::policy::{DueQuery, NoticeKind, TimeoutQuery, Workflow};

/// A PostgreSQL connection pool.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    schema: Option<String>,
}

/// A statement of `src/store/sql/postgres/`, static text; its parameters are listed at its top.
macro_rules! sql {
    ($name:literal) => {
        include_str!(concat!("sql/postgres/", $name, ".sql"))
    };
}

/// Candidate selection is driven by the time columns, so the work is proportional to what is
/// (nearly) due rather than to the pending rows. The due conditions split into branches, each a
/// range of one partial index (migration 0002) ordered by the time column it compares:
///
/// 1. first reminder: `reminders_sent = 0`, `requested_at` up to `firstAfter` ago
///    (`signature_workflows_first_reminder_idx`);
/// 2. later reminders and escalation: `reminders_sent > 0`, `last_reminded_at` up to
///    `least(every, escalation.after)` ago (`signature_workflows_next_reminder_idx`);
/// 3. the same rows without `last_reminded_at` (not written by Signet, but allowed), which the
///    reminder condition measures from `requested_at` (same index, `IS NULL`);
/// 4. expiry warning, row deadline: `deadline_at` within `before` ahead
///    (`signature_workflows_deadline_idx`);
/// 5. expiry warning, policy deadline: `deadline_at IS NULL` and `requested_at + timeout.after`
///    within `before` ahead (`signature_workflows_no_deadline_idx`).
///
/// Together they cover every row for which some notice is due at the bound's instant (each due
/// condition implies one range); branches 1 to 3 are disjoint, and 4 and 5 (disjoint from each
/// other) leave out rows in the ranges of 1 to 3 and rows reminded since the bound's instant, so
/// a walk meets each workflow once. The full due predicate stays the final filter.
///
/// One page of each branch of a walk, due conditions included: $1-$7 the policy (see
/// `due_candidates.sql`), $8 the walk's instant, $9 and $10 the last row's key column and id
/// (NULL on the first page), $11 the limit.
const BRANCH_PAGES: [&str; 5] = [
    sql!("due_page_1"),
    sql!("due_page_2"),
    sql!("due_page_3"),
    sql!("due_page_4"),
    sql!("due_page_5"),
];

/// [`BRANCH_PAGES`] under `EXPLAIN (ANALYZE, BUFFERS)`.
const EXPLAIN_BRANCH_PAGES: [&str; 5] = [
    concat!("EXPLAIN (ANALYZE, BUFFERS) ", sql!("due_page_1")),
    concat!("EXPLAIN (ANALYZE, BUFFERS) ", sql!("due_page_2")),
    concat!("EXPLAIN (ANALYZE, BUFFERS) ", sql!("due_page_3")),
    concat!("EXPLAIN (ANALYZE, BUFFERS) ", sql!("due_page_4")),
    concat!("EXPLAIN (ANALYZE, BUFFERS) ", sql!("due_page_5")),
];

/// Due workflows in id order, all branches at once.
const CANDIDATES: &str = sql!("due_candidates");

/// The claim of each kind the reminders worker sends, in [`super::claim_slot`]'s order.
const CLAIMS: [&str; 3] = [
    sql!("claim_reminder"),
    sql!("claim_expiry_warning"),
    sql!("claim_escalation"),
];

/// One timeout chunk of each deadline source: `deadline_at`, then `requested_at +
/// timeout.after`. Each walks its own partial index of migration 0002 in deadline order, from
/// where the last chunk ended; the alert rows are inserted by the same statement, so a workflow
/// is never timed out without its alerts logged.
const TIME_OUTS: [&str; 2] = [sql!("time_out_deadline_at"), sql!("time_out_timeout_after")];

/// Takes over expired pending deliveries.
const RECOVER: &str = sql!("recover");

/// Records outcomes, one array element per delivery.
const COMPLETE: &str = sql!("complete");

/// Undoes the claims of unsent deliveries that have nothing left ([`super::Store::release`]).
const RELEASE_UNDO: &str = sql!("release_undo");

/// Leaves the other unsent deliveries due without counting the attempt.
const RELEASE_KEEP: &str = sql!("release_keep");

impl PgStore {
    pub(super) async fn connect(url: &str, options: &ConnectOptions) -> Result<Self> {
        let mut connect = PgConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("the database URL is not valid: {e}")))?
            .application_name(crate::constants::DATABASE_APPLICATION_NAME);
        if let Some(schema) = &options.schema {
            connect = connect.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(15))
            .connect_with(connect)
            .await
            .map_err(Error::Connect)?;
        Ok(Self {
            pool,
            schema: options.schema.clone(),
        })
    }

    /// The pool, for callers that compose their own statements (tests, benchmarks).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(super) async fn migrate(&self) -> Result<()> {
        // sqlx's migrator holds a PostgreSQL advisory lock while it runs, so two pods migrating
        // at once apply each migration once; the schema is created under the same lock.
        let mut migrator = sqlx::migrate!("migrations/postgres");
        if let Some(schema) = &self.schema {
            migrator.create_schema(schema.clone());
        }
        migrator.run(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn now(&self) -> Result<DateTime<Utc>> {
        sqlx::query_scalar("SELECT now()")
            .fetch_one(&self.pool)
            .await
            .map_err(Error::query("reading the database clock"))
    }

    pub(super) async fn due_candidates(
        &self,
        query: &DueQuery,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Workflow>> {
        let rows = bind_due(sqlx::query(CANDIDATES), query)
            .bind(None::<DateTime<Utc>>)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(Error::query("selecting due workflows"))?;
        rows.iter().map(workflow).collect()
    }

    pub(super) async fn due_page(
        &self,
        query: &DueQuery,
        cursor: &mut DueCursor,
        limit: i64,
    ) -> Result<Vec<Workflow>> {
        let as_of = match cursor.as_of {
            Some(as_of) => as_of,
            None => *cursor.as_of.insert(self.now().await?),
        };
        while cursor.branch < BRANCH_PAGES.len() {
            let branch = cursor.branch;
            if !branch_applies(branch, query) {
                cursor.next_branch();
                continue;
            }
            let rows = self
                .branch_page(branch, query, as_of, cursor.last, limit)
                .await?;
            let rows: Vec<Workflow> = rows.iter().map(workflow).collect::<Result<_>>()?;
            match rows.last() {
                Some(last) => cursor.last = Some((branch_key(branch, last), last.id)),
                None => {
                    cursor.next_branch();
                    continue;
                }
            }
            if (rows.len() as i64) < limit {
                cursor.next_branch();
            }
            return Ok(rows);
        }
        Ok(Vec::new())
    }

    async fn branch_page(
        &self,
        branch: usize,
        query: &DueQuery,
        as_of: DateTime<Utc>,
        last: Option<(Option<DateTime<Utc>>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<PgRow>> {
        bind_due(sqlx::query(BRANCH_PAGES[branch]), query)
            .bind(as_of)
            .bind(last.and_then(|(key, _)| key))
            .bind(last.map(|(_, id)| id))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(Error::query("selecting due workflows"))
    }

    /// `EXPLAIN (ANALYZE, BUFFERS)` of the first page of `limit` rows of each branch a walk
    /// through the due workflows takes for `query` (see [`super::Store::due_page`]), one line
    /// per plan line under a heading per branch: for benchmarks and for diagnosing a slow run.
    pub async fn explain_due_candidates(
        &self,
        query: &DueQuery,
        limit: i64,
    ) -> Result<Vec<String>> {
        let as_of = self.now().await?;
        let mut lines = Vec::new();
        for branch in 0..BRANCH_PAGES.len() {
            if !branch_applies(branch, query) {
                continue;
            }
            lines.push(format!("branch {}: {}", branch + 1, BRANCH_NAMES[branch]));
            let rows = bind_due(sqlx::query(EXPLAIN_BRANCH_PAGES[branch]), query)
                .bind(as_of)
                .bind(None::<DateTime<Utc>>)
                .bind(None::<Uuid>)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(Error::query("explaining the due query"))?;
            for row in &rows {
                let line = row.try_get::<String, _>(0).map_err(|e| Error::Data {
                    column: "QUERY PLAN",
                    message: e.to_string(),
                })?;
                lines.push(format!("  {line}"));
            }
        }
        Ok(lines)
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
        let rows = bind_due(sqlx::query(sql), query)
            .bind(ids)
            .bind(channels)
            .bind(super::seconds(lease))
            .fetch_all(&self.pool)
            .await
            .map_err(Error::query("claiming due notifications"))?;
        rows.iter().map(delivery).collect()
    }

    pub(super) async fn time_out(
        &self,
        query: &TimeoutQuery,
        cursor: &TimeoutCursor,
        channels: &[String],
        lease: Duration,
        limit: i64,
    ) -> Result<TimedOut> {
        let rows = sqlx::query(TIME_OUTS[cursor.source])
            .bind(&query.workflow_types)
            .bind(channels)
            .bind(super::seconds(lease))
            .bind(limit)
            .bind(super::seconds(query.timeout_after))
            .bind(cursor.last.map(|(key, _)| key))
            .bind(cursor.last.map(|(_, id)| id))
            .fetch_all(&self.pool)
            .await
            .map_err(Error::query("timing out expired workflows"))?;
        let mut timed_out = TimedOut::default();
        for row in &rows {
            let log_id: Option<i64> = row.try_get("log_id").map_err(|e| Error::Data {
                column: "signature_reminder_log.id",
                message: e.to_string(),
            })?;
            let workflow = workflow(row)?;
            if timed_out.workflows.last().map(|w| w.id) != Some(workflow.id) {
                timed_out.workflows.push(workflow);
            }
            if log_id.is_some() {
                timed_out.alerts.push(delivery(row)?);
            }
        }
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
        let rows = sqlx::query(RECOVER)
            .bind(kinds)
            .bind(workflow_types)
            .bind(super::seconds(lease))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(Error::query("recovering expired deliveries"))?;
        rows.iter().map(delivery).collect()
    }

    pub(super) async fn release(&self, unsent: &[(i64, Failure)]) -> Result<Released> {
        let ids: Vec<i64> = unsent.iter().map(|(id, _)| *id).collect();
        let reasons: Vec<&str> = unsent.iter().map(|(_, f)| f.reason).collect();
        let errors: Vec<&str> = unsent.iter().map(|(_, f)| f.error.as_str()).collect();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(Error::query("starting a release"))?;
        let undone = sqlx::query(RELEASE_UNDO)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(Error::query("giving back unsent deliveries"))?
            .len() as u64;
        let kept = sqlx::query(RELEASE_KEEP)
            .bind(&ids)
            .bind(reasons)
            .bind(errors)
            .execute(&mut *tx)
            .await
            .map_err(Error::query("giving back unsent deliveries"))?
            .rows_affected();
        tx.commit()
            .await
            .map_err(Error::query("giving back unsent deliveries"))?;
        Ok(Released { undone, kept })
    }

    pub(super) async fn complete(&self, outcomes: &[(i64, Outcome)]) -> Result<()> {
        let ids: Vec<i64> = outcomes.iter().map(|(id, _)| *id).collect();
        let states: Vec<&str> = outcomes.iter().map(|(_, o)| o.state()).collect();
        let provider_ids: Vec<Option<&str>> = outcomes
            .iter()
            .map(|(_, o)| o.provider_message_id())
            .collect();
        let errors: Vec<Option<&str>> = outcomes.iter().map(|(_, o)| o.error()).collect();
        let retry_after: Vec<f64> = outcomes
            .iter()
            .map(|(_, o)| super::seconds(o.retry_after()))
            .collect();
        let reasons: Vec<Option<&str>> = outcomes.iter().map(|(_, o)| o.reason()).collect();
        let unconfirmed: Vec<bool> = outcomes.iter().map(|(_, o)| o.unconfirmed()).collect();
        sqlx::query(COMPLETE)
            .bind(ids)
            .bind(states)
            .bind(provider_ids)
            .bind(errors)
            .bind(retry_after)
            .bind(reasons)
            .bind(unconfirmed)
            .execute(&self.pool)
            .await
            .map_err(Error::query("recording delivery outcomes"))?;
        Ok(())
    }
}

/// What each branch selects, for the EXPLAIN output.
const BRANCH_NAMES: [&str; 5] = [
    "first reminder (requested_at)",
    "later reminders and escalation (last_reminded_at)",
    "later reminders without last_reminded_at (id)",
    "expiry warning, deadline_at (deadline_at)",
    "expiry warning, timeout.after (requested_at)",
];

/// Whether a branch can select anything for the policy (its bounds are NULL otherwise).
fn branch_applies(branch: usize, query: &DueQuery) -> bool {
    match branch {
        3 => query.expiry_warning_before.is_some(),
        4 => query.expiry_warning_before.is_some() && query.timeout_after.is_some(),
        _ => true,
    }
}

/// The value of the column a branch is walked by.
fn branch_key(branch: usize, workflow: &Workflow) -> Option<DateTime<Utc>> {
    match branch {
        0 | 4 => Some(workflow.requested_at),
        1 | 2 => workflow.last_reminded_at,
        _ => workflow.deadline_at,
    }
}

fn bind_due<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    due: &'q DueQuery,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(&due.workflow_types)
        .bind(due.max_reminders)
        .bind(super::seconds(due.first_after))
        .bind(super::seconds(due.every))
        .bind(due.timeout_after.map(super::seconds))
        .bind(due.expiry_warning_before.map(super::seconds))
        .bind(due.escalation_after.map(super::seconds))
}

pub(super) fn workflow(row: &PgRow) -> Result<Workflow> {
    let get = |e: sqlx::Error| Error::Data {
        column: "signature_workflows",
        message: e.to_string(),
    };
    Ok(Workflow {
        id: row.try_get("id").map_err(get)?,
        workflow_type: row.try_get("workflow_type").map_err(get)?,
        signer_email: row.try_get("signer_email").map_err(get)?,
        signer_name: row.try_get("signer_name").map_err(get)?,
        document_title: row.try_get("document_title").map_err(get)?,
        signing_url: row.try_get("signing_url").map_err(get)?,
        signer_time_zone: row.try_get("signer_time_zone").map_err(get)?,
        status: row.try_get("status").map_err(get)?,
        requested_at: row.try_get("requested_at").map_err(get)?,
        deadline_at: row.try_get("deadline_at").map_err(get)?,
        reminders_sent: row.try_get("reminders_sent").map_err(get)?,
        last_reminded_at: row.try_get("last_reminded_at").map_err(get)?,
        expiry_warned_at: row.try_get("expiry_warned_at").map_err(get)?,
        escalated_at: row.try_get("escalated_at").map_err(get)?,
    })
}

fn delivery(row: &PgRow) -> Result<ClaimedDelivery> {
    let get = |e: sqlx::Error| Error::Data {
        column: "signature_reminder_log",
        message: e.to_string(),
    };
    Ok(ClaimedDelivery {
        log_id: row.try_get("log_id").map_err(get)?,
        workflow: workflow(row)?,
        kind: super::stored_kind(row.try_get("kind").map_err(get)?)?,
        sequence: row.try_get("sequence").map_err(get)?,
        channel: row.try_get("channel").map_err(get)?,
        idempotency_key: row.try_get("idempotency_key").map_err(get)?,
        attempts: row.try_get("attempts").map_err(get)?,
        recovered: row.try_get("recovered").map_err(get)?,
        possible_duplicate: row.try_get("possible_duplicate").map_err(get)?,
    })
}
