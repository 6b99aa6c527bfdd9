//! The PostgreSQL store. A claim is one statement per batch: the workflow rows still due are
//! locked with `FOR UPDATE SKIP LOCKED`, marked, and their pending log rows inserted in the same
//! statement, so two concurrent workers never hold the same notification.

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

use super::{
    ClaimedDelivery, ConnectOptions, DueCursor, Error, Outcome, Result, TimedOut, TimeoutCursor,
    WORKFLOW_COLUMNS,
};
use crate::policy::{DueQuery, NoticeKind, TimeoutQuery, Workflow};

/// A PostgreSQL connection pool.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    schema: Option<String>,
}

/// The due conditions, over the alias `w`. Parameters: $1 workflow types, $2 max reminders,
/// $3 first after, $4 every, $5 timeout after, $6 expiry warning before, $7 escalation after
/// (durations in seconds; NULL when the policy has no such section).
const SELECTED: &str = "w.status = 'pending' \
    AND (cardinality($1::text[]) = 0 OR w.workflow_type = ANY($1::text[])) \
    AND (DEADLINE IS NULL OR now() < DEADLINE)";
const DEADLINE: &str = "coalesce(w.deadline_at, w.requested_at + $5::float8 * interval '1 second')";
const REMINDER_DUE: &str = "(w.reminders_sent < $2::int AND now() >= CASE \
    WHEN w.reminders_sent = 0 THEN w.requested_at + $3::float8 * interval '1 second' \
    ELSE coalesce(w.last_reminded_at, w.requested_at) + $4::float8 * interval '1 second' END)";
const EXPIRY_WARNING_DUE: &str = "(w.expiry_warned_at IS NULL \
    AND now() >= DEADLINE - $6::float8 * interval '1 second')";
const ESCALATION_DUE: &str = "(w.escalated_at IS NULL AND w.reminders_sent >= $2::int \
    AND now() >= w.last_reminded_at + $7::float8 * interval '1 second')";

/// The instant the time bounds of the candidate branches are taken at: $8 when a walk pinned
/// it, else the database clock.
const AS_OF: &str = "coalesce($8::timestamptz, now())";

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
const BRANCH_RANGES: [&str; 5] = [
    "w.status = 'pending' AND w.reminders_sent = 0 \
     AND w.requested_at <= AS_OF - $3::float8 * interval '1 second'",
    "w.status = 'pending' AND w.reminders_sent > 0 \
     AND w.last_reminded_at <= AS_OF - least($4::float8, $7::float8) * interval '1 second'",
    "w.status = 'pending' AND w.reminders_sent > 0 AND w.last_reminded_at IS NULL \
     AND w.requested_at <= AS_OF - $4::float8 * interval '1 second'",
    "w.status = 'pending' AND w.deadline_at IS NOT NULL AND w.deadline_at > AS_OF \
     AND w.deadline_at <= AS_OF + $6::float8 * interval '1 second' AND NOT_EARLIER",
    "w.status = 'pending' AND w.deadline_at IS NULL \
     AND w.requested_at > AS_OF - $5::float8 * interval '1 second' \
     AND w.requested_at <= AS_OF + ($6::float8 - $5::float8) * interval '1 second' AND NOT_EARLIER",
];

/// Rows the expiry branches leave to the reminder branches (never NULL).
const NOT_EARLIER: &str = "NOT ((w.reminders_sent = 0 \
      AND w.requested_at <= AS_OF - $3::float8 * interval '1 second') \
    OR (w.reminders_sent > 0 AND coalesce( \
      w.last_reminded_at <= AS_OF - least($4::float8, $7::float8) * interval '1 second', \
      w.requested_at <= AS_OF - $4::float8 * interval '1 second'))) \
    AND (w.last_reminded_at IS NULL OR w.last_reminded_at < AS_OF)";

/// The column each branch is walked by (with `id` after it); branch 3's is NULL throughout.
const BRANCH_KEYS: [&str; 5] = [
    "requested_at",
    "last_reminded_at",
    "last_reminded_at",
    "deadline_at",
    "requested_at",
];

/// The full due predicate over `w`: every branch's final filter.
static DUE: LazyLock<String> = LazyLock::new(|| {
    format!("{SELECTED} AND ({REMINDER_DUE} OR {EXPIRY_WARNING_DUE} OR {ESCALATION_DUE})")
});

fn expand(sql: &str) -> String {
    sql.replace("NOT_EARLIER", NOT_EARLIER)
        .replace("AS_OF", AS_OF)
        .replace("DEADLINE", DEADLINE)
}

/// One page of one branch of a walk: $8 the walk's instant, $9 and $10 the last row's key column
/// and id (NULL on the first page), $11 the limit.
static BRANCH_PAGES: LazyLock<Vec<String>> = LazyLock::new(|| {
    (0..BRANCH_RANGES.len())
        .map(|branch| {
            let range = BRANCH_RANGES[branch];
            let due = DUE.as_str();
            let after = if branch == 2 {
                // The key column is NULL throughout: by id alone.
                "($10::uuid IS NULL OR w.id > $10::uuid)".to_owned()
            } else {
                let key = BRANCH_KEYS[branch];
                format!(
                    "(w.{key}, w.id) > (coalesce($9::timestamptz, '-infinity'), \
                     coalesce($10::uuid, '00000000-0000-0000-0000-000000000000'))"
                )
            };
            let order = if branch == 2 {
                "w.id".to_owned()
            } else {
                format!("w.{}, w.id", BRANCH_KEYS[branch])
            };
            expand(&format!(
                "SELECT {WORKFLOW_COLUMNS} FROM signature_workflows w \
                 WHERE {range} AND {after} AND {due} ORDER BY {order} LIMIT $11"
            ))
        })
        .collect()
});

/// Due workflows in id order after $9, at most $10 ($8 NULL: bounds at the database clock).
static CANDIDATES: LazyLock<String> = LazyLock::new(|| {
    let branches: Vec<String> = BRANCH_RANGES
        .iter()
        .map(|range| format!("SELECT w.id FROM signature_workflows w WHERE {range}"))
        .collect();
    expand(&format!(
        "SELECT {WORKFLOW_COLUMNS} FROM signature_workflows w \
         WHERE w.id IN ({}) AND ($9::uuid IS NULL OR w.id > $9::uuid) AND {} \
         ORDER BY w.id LIMIT $10",
        branches.join(" UNION ALL "),
        DUE.as_str()
    ))
});

/// The claim of one kind: $8 workflow ids, $9 channel names, $10 lease seconds.
fn claim_sql(kind: NoticeKind) -> String {
    let (due, set, sequence) = match kind {
        NoticeKind::Reminder => (
            REMINDER_DUE,
            "reminders_sent = w.reminders_sent + 1, last_reminded_at = now()",
            "c.reminders_sent",
        ),
        NoticeKind::ExpiryWarning => (EXPIRY_WARNING_DUE, "expiry_warned_at = now()", "1"),
        NoticeKind::Escalation => (ESCALATION_DUE, "escalated_at = now()", "1"),
        NoticeKind::TimeoutAlert => unreachable!("timeouts are claimed by the timeout worker"),
    };
    let kind = kind.as_str();
    expand(&format!(
        "WITH claimed AS ( \
           UPDATE signature_workflows w SET {set} \
           WHERE w.id IN ( \
             SELECT w.id FROM signature_workflows w \
             WHERE w.id = ANY($8::uuid[]) AND {SELECTED} AND {due} \
             ORDER BY w.id FOR UPDATE SKIP LOCKED) \
           RETURNING {WORKFLOW_COLUMNS}), \
         logged AS ( \
           INSERT INTO signature_reminder_log \
             (workflow_id, kind, sequence, channel, state, attempts, idempotency_key, lease_until) \
           SELECT c.id, '{kind}', {sequence}, ch.name, 'pending', 1, \
             concat('signet:', c.id, ':{kind}:', {sequence}, ':', ch.name), \
             now() + $10::float8 * interval '1 second' \
           FROM claimed c CROSS JOIN unnest($9::text[]) AS ch(name) \
           ON CONFLICT (workflow_id, kind, sequence, channel) DO NOTHING \
           RETURNING id AS log_id, workflow_id, kind, sequence, channel, idempotency_key, attempts) \
         SELECT l.log_id, l.kind, l.sequence, l.channel, l.idempotency_key, l.attempts, \
           false AS recovered, false AS possible_duplicate, {} \
         FROM logged l JOIN claimed w ON w.id = l.workflow_id \
         ORDER BY w.id, l.channel",
        WORKFLOW_COLUMNS
    ))
}

static CLAIMS: LazyLock<[String; 3]> = LazyLock::new(|| {
    [
        claim_sql(NoticeKind::Reminder),
        claim_sql(NoticeKind::ExpiryWarning),
        claim_sql(NoticeKind::Escalation),
    ]
});

/// One timeout chunk of a deadline source (0: `deadline_at`, 1: `requested_at +
/// timeout.after`): $1 workflow types, $2 channel names, $3 lease seconds, $4 limit, $5
/// `timeout.after` seconds, $6 and $7 the previous chunk's last key and id (NULL at first). Each
/// source walks its own partial index of migration 0002 in deadline order, from where the last
/// chunk ended (never over the dead entries earlier chunks left); the alert rows are inserted by
/// the same statement, so a workflow is never timed out without its alerts logged.
fn time_out_sql(source: usize) -> String {
    let key = if source == 0 {
        "deadline_at"
    } else {
        "requested_at"
    };
    let expired = if source == 0 {
        "w.deadline_at IS NOT NULL AND w.deadline_at <= now()"
    } else {
        "w.deadline_at IS NULL AND w.requested_at <= now() - $5::float8 * interval '1 second'"
    };
    let after = format!(
        "(w.{key}, w.id) > (coalesce($6::timestamptz, '-infinity'), \
         coalesce($7::uuid, '00000000-0000-0000-0000-000000000000'))"
    );
    let order = format!("w.{key}, w.id");
    let kind = NoticeKind::TimeoutAlert.as_str();
    format!(
        "WITH expired AS ( \
           UPDATE signature_workflows w SET status = 'timed_out', timed_out_at = now() \
           WHERE w.id IN ( \
             SELECT w.id FROM signature_workflows w \
             WHERE w.status = 'pending' AND {expired} AND {after} \
               AND (cardinality($1::text[]) = 0 OR w.workflow_type = ANY($1::text[])) \
             ORDER BY {order} LIMIT $4 FOR UPDATE SKIP LOCKED) \
           RETURNING {WORKFLOW_COLUMNS}), \
         logged AS ( \
           INSERT INTO signature_reminder_log \
             (workflow_id, kind, sequence, channel, state, attempts, idempotency_key, lease_until) \
           SELECT e.id, '{kind}', 1, ch.name, 'pending', 1, \
             concat('signet:', e.id, ':{kind}:1:', ch.name), \
             now() + $3::float8 * interval '1 second' \
           FROM expired e CROSS JOIN unnest($2::text[]) AS ch(name) \
           ON CONFLICT (workflow_id, kind, sequence, channel) DO NOTHING \
           RETURNING id AS log_id, workflow_id, channel, idempotency_key, attempts) \
         SELECT l.log_id, '{kind}' AS kind, 1 AS sequence, l.channel, l.idempotency_key, \
           l.attempts, false AS recovered, false AS possible_duplicate, {WORKFLOW_COLUMNS} \
         FROM expired w LEFT JOIN logged l ON l.workflow_id = w.id \
         ORDER BY w.id, l.channel"
    )
}

static TIME_OUTS: LazyLock<[String; 2]> = LazyLock::new(|| [time_out_sql(0), time_out_sql(1)]);

/// Expired pending deliveries: $1 kinds, $2 workflow types, $3 lease seconds, $4 limit. A row
/// whose last try got no answer (`unconfirmed`), or that was left without an outcome (no
/// `reason`: the worker died mid-send), may already have gone out.
static RECOVER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH recovered AS ( \
      UPDATE signature_reminder_log l \
      SET attempts = l.attempts + 1, lease_until = now() + $3::float8 * interval '1 second', \
          updated_at = now() \
      WHERE l.id IN ( \
        SELECT r.id FROM signature_reminder_log r \
        JOIN signature_workflows w ON w.id = r.workflow_id \
        WHERE r.state = 'pending' AND r.lease_until < now() AND r.kind = ANY($1::text[]) \
          AND (cardinality($2::text[]) = 0 OR w.workflow_type = ANY($2::text[])) \
        ORDER BY r.id LIMIT $4 FOR UPDATE OF r SKIP LOCKED) \
      RETURNING l.id AS log_id, l.workflow_id, l.kind, l.sequence, l.channel, l.idempotency_key, \
        l.attempts, (l.unconfirmed OR l.reason IS NULL) AS possible_duplicate) \
    SELECT r.log_id, r.kind, r.sequence, r.channel, r.idempotency_key, r.attempts, \
      true AS recovered, r.possible_duplicate, {WORKFLOW_COLUMNS} \
    FROM recovered r JOIN signature_workflows w ON w.id = r.workflow_id ORDER BY r.log_id"
    )
});

const COMPLETE: &str = "UPDATE signature_reminder_log l \
    SET state = o.state, provider_message_id = o.provider_message_id, error = o.error, \
        reason = o.reason, unconfirmed = o.unconfirmed, updated_at = now(), \
        lease_until = CASE WHEN o.state = 'pending' \
          THEN now() + o.retry_after * interval '1 second' END \
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::text[], \
        $7::bool[]) \
      AS o(id, state, provider_message_id, error, retry_after, reason, unconfirmed) \
    WHERE l.id = o.id AND l.state = 'pending'";

impl PgStore {
    pub(super) async fn connect(url: &str, options: &ConnectOptions) -> Result<Self> {
        let mut connect = PgConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("the database URL is not valid: {e}")))?
            .application_name("signet");
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
        let rows = bind_due(sqlx::query(AssertSqlSafe(CANDIDATES.as_str())), query)
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
        while cursor.branch < BRANCH_RANGES.len() {
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
        bind_due(
            sqlx::query(AssertSqlSafe(BRANCH_PAGES[branch].as_str())),
            query,
        )
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
        for branch in 0..BRANCH_RANGES.len() {
            if !branch_applies(branch, query) {
                continue;
            }
            lines.push(format!("branch {}: {}", branch + 1, BRANCH_NAMES[branch]));
            let sql = format!("EXPLAIN (ANALYZE, BUFFERS) {}", BRANCH_PAGES[branch]);
            let rows = bind_due(sqlx::query(AssertSqlSafe(sql)), query)
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
        let sql = &CLAIMS[super::claim_slot(kind)?];
        let rows = bind_due(sqlx::query(AssertSqlSafe(sql.as_str())), query)
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
        let sql = &TIME_OUTS[cursor.source];
        let rows = sqlx::query(AssertSqlSafe(sql.as_str()))
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
        let rows = sqlx::query(AssertSqlSafe(RECOVER.as_str()))
            .bind(kinds)
            .bind(workflow_types)
            .bind(super::seconds(lease))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(Error::query("recovering expired deliveries"))?;
        rows.iter().map(delivery).collect()
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
