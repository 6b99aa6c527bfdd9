//! Writing workflow rows the way the application would, for `signet demo` (and the tests that
//! build on it): [`Seed`] rows with timestamps relative to the database clock, and a count of
//! the rows a database holds. Product code: no panics, only [`super::Error`]s.

use uuid::Uuid;

use super::{Result, Store};

/// A workflow row as the application would insert it, timestamps relative to the database clock.
#[derive(Clone, Debug)]
pub struct Seed {
    /// Workflow id.
    pub id: Uuid,
    /// `workflow_type`.
    pub workflow_type: String,
    /// `signer_email`.
    pub signer_email: String,
    /// `signer_name`.
    pub signer_name: Option<String>,
    /// `signer_time_zone`.
    pub signer_time_zone: Option<String>,
    /// `status`.
    pub status: String,
    /// `requested_at` is this many seconds before the database's now.
    pub requested_ago: f64,
    /// `deadline_at`, seconds after now (negative: in the past).
    pub deadline_in: Option<f64>,
    /// `reminders_sent`.
    pub reminders_sent: i32,
    /// `last_reminded_at`, seconds before now.
    pub last_reminded_ago: Option<f64>,
}

impl Seed {
    /// A pending `enrollment-agreement` requested `requested_ago` seconds ago, no reminders yet.
    pub fn pending(requested_ago: f64) -> Self {
        let id = Uuid::new_v4();
        Self {
            id,
            workflow_type: "enrollment-agreement".into(),
            signer_email: format!("signer-{}@example.com", &id.simple().to_string()[..8]),
            signer_name: Some("Ada Lovelace".into()),
            signer_time_zone: None,
            status: "pending".into(),
            requested_ago,
            deadline_in: None,
            reminders_sent: 0,
            last_reminded_ago: None,
        }
    }
}

/// Inserts seed rows.
pub async fn seed(store: &Store, seeds: &[Seed]) -> Result<()> {
    for s in seeds {
        match store {
            Store::Postgres(pg) => {
                sqlx::query(
                    "INSERT INTO signature_workflows (id, workflow_type, signer_email, signer_name, \
                       document_title, signing_url, signer_time_zone, status, requested_at, \
                       deadline_at, reminders_sent, last_reminded_at) \
                     VALUES ($1, $2, $3, $4, 'Enrollment agreement', \
                       'https://sign.example.com/' || $1::text, $5, $6, \
                       now() - $7::float8 * interval '1 second', \
                       now() + $8::float8 * interval '1 second', $9, \
                       now() - $10::float8 * interval '1 second')",
                )
                .bind(s.id)
                .bind(&s.workflow_type)
                .bind(&s.signer_email)
                .bind(&s.signer_name)
                .bind(&s.signer_time_zone)
                .bind(&s.status)
                .bind(s.requested_ago)
                .bind(s.deadline_in)
                .bind(s.reminders_sent)
                .bind(s.last_reminded_ago)
                .execute(pg.pool())
                .await
                .map_err(super::Error::query("seeding workflows"))?;
            }
            Store::Sqlite(lite) => {
                let ago = |secs: Option<f64>| secs.map(|s| format!("{:+.3} seconds", -s));
                sqlx::query(
                    "INSERT INTO signature_workflows (id, workflow_type, signer_email, signer_name, \
                       document_title, signing_url, signer_time_zone, status, requested_at, \
                       deadline_at, reminders_sent, last_reminded_at) \
                     VALUES (?1, ?2, ?3, ?4, 'Enrollment agreement', \
                       'https://sign.example.com/' || ?1, ?5, ?6, \
                       strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?7), \
                       CASE WHEN ?8 IS NOT NULL THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?8) END, \
                       ?9, \
                       CASE WHEN ?10 IS NOT NULL THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?10) END)",
                )
                .bind(s.id.to_string())
                .bind(&s.workflow_type)
                .bind(&s.signer_email)
                .bind(&s.signer_name)
                .bind(&s.signer_time_zone)
                .bind(&s.status)
                .bind(ago(Some(s.requested_ago)))
                .bind(ago(s.deadline_in.map(|d| -d)))
                .bind(s.reminders_sent)
                .bind(ago(s.last_reminded_ago))
                .execute(lite.pool())
                .await
                .map_err(super::Error::query("seeding workflows"))?;
            }
        }
    }
    Ok(())
}

/// How many workflows the database holds.
pub async fn workflow_count(store: &Store) -> Result<i64> {
    const SQL: &str = "SELECT count(*) FROM signature_workflows";
    let failed = super::Error::query("counting workflows");
    match store {
        Store::Postgres(pg) => sqlx::query_scalar(SQL).fetch_one(pg.pool()).await,
        Store::Sqlite(lite) => sqlx::query_scalar(SQL).fetch_one(lite.pool()).await,
    }
    .map_err(failed)
}
