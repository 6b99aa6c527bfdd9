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
    ClaimedDelivery, ConnectOptions, DueQuery, Error, NoticeKind, Outcome, Result,
    WORKFLOW_COLUMNS, Workflow,
};

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

fn expand(sql: &str) -> String {
    sql.replace("DEADLINE", DEADLINE)
}

static CANDIDATES: LazyLock<String> = LazyLock::new(|| {
    expand(&format!(
        "SELECT {WORKFLOW_COLUMNS} FROM signature_workflows w \
         WHERE {SELECTED} AND ($8::uuid IS NULL OR w.id > $8::uuid) \
           AND ({REMINDER_DUE} OR {EXPIRY_WARNING_DUE} OR {ESCALATION_DUE}) \
         ORDER BY w.id LIMIT $9"
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

/// Expired pending deliveries: $1 kinds, $2 workflow types, $3 lease seconds, $4 limit.
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
        l.attempts, l.error IS NULL AS possible_duplicate) \
    SELECT r.log_id, r.kind, r.sequence, r.channel, r.idempotency_key, r.attempts, \
      true AS recovered, r.possible_duplicate, {WORKFLOW_COLUMNS} \
    FROM recovered r JOIN signature_workflows w ON w.id = r.workflow_id ORDER BY r.log_id"
    )
});

const COMPLETE: &str = "UPDATE signature_reminder_log l \
    SET state = o.state, provider_message_id = o.provider_message_id, error = o.error, \
        updated_at = now(), \
        lease_until = CASE WHEN o.state = 'pending' \
          THEN now() + o.retry_after * interval '1 second' END \
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::float8[]) \
      AS o(id, state, provider_message_id, error, retry_after) \
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
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(Error::query("selecting due workflows"))?;
        rows.iter().map(workflow).collect()
    }

    /// `EXPLAIN (ANALYZE, BUFFERS)` of the due-candidates query for the first page of `limit`
    /// rows, one line per plan line: for benchmarks and for diagnosing a slow run.
    pub async fn explain_due_candidates(
        &self,
        query: &DueQuery,
        limit: i64,
    ) -> Result<Vec<String>> {
        let sql = format!("EXPLAIN (ANALYZE, BUFFERS) {}", CANDIDATES.as_str());
        let rows = bind_due(sqlx::query(AssertSqlSafe(sql)), query)
            .bind(None::<Uuid>)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(Error::query("explaining the due query"))?;
        rows.iter()
            .map(|row| {
                row.try_get::<String, _>(0).map_err(|e| Error::Data {
                    column: "QUERY PLAN",
                    message: e.to_string(),
                })
            })
            .collect()
    }

    pub(super) async fn claim(
        &self,
        kind: NoticeKind,
        ids: &[Uuid],
        channels: &[String],
        query: &DueQuery,
        lease: f64,
    ) -> Result<Vec<ClaimedDelivery>> {
        let sql = match kind {
            NoticeKind::Reminder => &CLAIMS[0],
            NoticeKind::ExpiryWarning => &CLAIMS[1],
            NoticeKind::Escalation => &CLAIMS[2],
            NoticeKind::TimeoutAlert => {
                return Err(Error::Config(
                    "timeout alerts are not claimed by the reminders worker".into(),
                ));
            }
        };
        let rows = bind_due(sqlx::query(AssertSqlSafe(sql.as_str())), query)
            .bind(ids)
            .bind(channels)
            .bind(lease)
            .fetch_all(&self.pool)
            .await
            .map_err(Error::query("claiming due notifications"))?;
        rows.iter().map(delivery).collect()
    }

    pub(super) async fn recover(
        &self,
        kinds: &[NoticeKind],
        workflow_types: &[String],
        lease: f64,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>> {
        let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        let rows = sqlx::query(AssertSqlSafe(RECOVER.as_str()))
            .bind(kinds)
            .bind(workflow_types)
            .bind(lease)
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
        let retry_after: Vec<f64> = outcomes.iter().map(|(_, o)| o.retry_after()).collect();
        sqlx::query(COMPLETE)
            .bind(ids)
            .bind(states)
            .bind(provider_ids)
            .bind(errors)
            .bind(retry_after)
            .execute(&self.pool)
            .await
            .map_err(Error::query("recording delivery outcomes"))?;
        Ok(())
    }
}

fn bind_due<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    due: &'q DueQuery,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(&due.workflow_types)
        .bind(due.max_reminders)
        .bind(due.first_after)
        .bind(due.every)
        .bind(due.timeout_after)
        .bind(due.expiry_warning_before)
        .bind(due.escalation_after)
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
        kind: NoticeKind::parse(row.try_get("kind").map_err(get)?)?,
        sequence: row.try_get("sequence").map_err(get)?,
        channel: row.try_get("channel").map_err(get)?,
        idempotency_key: row.try_get("idempotency_key").map_err(get)?,
        attempts: row.try_get("attempts").map_err(get)?,
        recovered: row.try_get("recovered").map_err(get)?,
        possible_duplicate: row.try_get("possible_duplicate").map_err(get)?,
    })
}
