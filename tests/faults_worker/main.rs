//! Worker faults against real PostgreSQL and a local webhook sink: the `signet` binary killed
//! with SIGKILL at random points, run as concurrent processes, cut off from its database, and
//! facing 429s, 500s, slow answers and poison rows. After each scenario and a final clean run
//! the delivery invariants are checked in SQL and at the sink, and printed.

#[path = "../faults/harness.rs"]
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::{Duration, Instant};

use harness::{CHANNELS, Ended, Faults, Prng, Proc, Sink, Worker};
use signet::constants::DATABASE_APPLICATION_NAME;
use signet::store::Store;
use signet::store::testing::{self, Backend, Seed, TestDatabase};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

const HOUR: f64 = 3600.0;
const DAY: f64 = 24.0 * HOUR;

// ---------------------------------------------------------------------------------------------
// A scenario's world: the database, the seeds and every run's summary.

struct World {
    label: String,
    worker: Worker,
    db: TestDatabase,
    store: Store,
    pool: PgPool,
    /// Workflows something is due for.
    due: Vec<Uuid>,
    /// Workflows nothing may be sent for (not due yet, finished).
    quiet: Vec<Uuid>,
    /// Due workflows the sink rejects with 400.
    poison: Vec<Uuid>,
    runs: Vec<Ended>,
}

impl World {
    /// A fresh database seeded with `due` workflows something is due for (`poison` of them
    /// rejected by the sink) and a few that must be left alone.
    async fn new(label: &str, worker: Worker, due: usize, poison: usize) -> Self {
        let (db, store) = TestDatabase::new(Backend::Postgres)
            .await
            .expect("PostgreSQL is required");
        let mut seeds = Vec::new();
        let mut due_ids = Vec::new();
        let mut poison_ids = Vec::new();
        for i in 0..due {
            let mut seed = match worker {
                Worker::Reminders => Seed::pending(25.0 * HOUR + i as f64),
                // Half expire by the policy's 14d, half by their own deadline.
                Worker::Timeouts if i % 2 == 0 => Seed::pending(15.0 * DAY + i as f64),
                Worker::Timeouts => {
                    let mut s = Seed::pending(2.0 * HOUR);
                    s.deadline_in = Some(-60.0 - i as f64);
                    s
                }
            };
            if i < poison {
                seed.signer_email = format!("poison-{i}@example.com");
                poison_ids.push(seed.id);
            }
            due_ids.push(seed.id);
            seeds.push(seed);
        }
        let mut quiet = Vec::new();
        for status in ["pending", "signed", "declined"] {
            let mut s = Seed::pending(if status == "pending" {
                HOUR
            } else {
                20.0 * DAY
            });
            s.status = status.into();
            quiet.push(s.id);
            seeds.push(s);
        }
        testing::seed(&store, &seeds).await.unwrap();
        let options = PgConnectOptions::from_str(&db.url)
            .unwrap()
            .application_name("signet-faults-test");
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .unwrap();
        Self {
            label: label.to_owned(),
            worker,
            db,
            store,
            pool,
            due: due_ids,
            quiet,
            poison: poison_ids,
            runs: Vec::new(),
        }
    }

    fn spawn(&self, sink: &Sink, args: &[&str]) -> Proc {
        Proc::spawn(self.worker, &self.db.url, sink, args)
    }

    /// One run to its end (or its kill); the run is recorded.
    async fn run(&mut self, sink: &Sink, args: &[&str], kill_now: impl FnMut() -> bool) -> usize {
        let ended = self.spawn(sink, args).wait_or_kill(kill_now).await;
        if !ended.killed() {
            assert!(
                matches!(ended.status.code(), Some(0 | 1)),
                "{}: unexpected exit {:?}: {}",
                self.label,
                ended.status,
                ended.stderr
            );
            assert!(
                ended.summary.is_some(),
                "every run that exits prints its summary: {ended:?}"
            );
        }
        self.runs.push(ended);
        self.runs.len() - 1
    }

    /// Clean runs (leases expired first, as if the lease had passed) until a run finds nothing
    /// to do; at most six.
    async fn converge(&mut self, sink: &Sink) -> usize {
        sink.set_faults(Faults::default());
        self.settle().await;
        for round in 1..=6 {
            testing::expire_leases(&self.store).await.unwrap();
            let run = self.run(sink, &["--batch-size", "50"], || false).await;
            let ended = &self.runs[run];
            assert_eq!(ended.status.code(), Some(0), "{ended:?}");
            let s = ended.summary.as_ref().unwrap();
            let work = ["due", "timedOut", "recovered", "sent", "retrying", "failed"]
                .iter()
                .map(|k| s[*k].as_u64().unwrap_or(0))
                .sum::<u64>();
            if work == 0 {
                return round;
            }
        }
        panic!("{}: clean runs did not converge in 6 rounds", self.label);
    }

    /// Waits for a killed worker's last statement to end on the server (a claim can commit
    /// after its client died), so that what the database shows is final. (This test's own
    /// store connects under the workers' name too, but is idle here.)
    async fn settle(&self) {
        for _ in 0..500 {
            let left = self
                .count_with(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
                     AND datname = current_database() AND state <> 'idle'",
                    DATABASE_APPLICATION_NAME,
                )
                .await;
            if left == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn count_with(&self, sql: &'static str, name: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Checks every invariant; prints and returns the figures.
    async fn check(&self, sink: &Sink) -> Figures {
        let label = &self.label;
        let kind = self.worker.kind();
        let rows = testing::log_rows(&self.store).await.unwrap();
        let expected = (self.due.len() * CHANNELS.len()) as i64;
        let state = |s: &str| rows.iter().filter(|r| r.state == s).count() as i64;
        let figures = Figures {
            due: expected,
            sent: state("sent"),
            failed: state("failed"),
            pending: state("pending"),
            duplicate_log_rows: self
                .count(
                    "SELECT count(*) - count(DISTINCT (workflow_id, kind, sequence, channel)) \
                     FROM signature_reminder_log",
                )
                .await,
            failed_without_reason: self
                .count(
                    "SELECT count(*) FROM signature_reminder_log \
                     WHERE state = 'failed' AND coalesce(error, '') = ''",
                )
                .await,
            sink_requests: sink.hits().len() as u64,
            sink_accepted: sink.accepted().values().sum(),
            sink_extra: sink.accepted().values().map(|n| n - 1).sum(),
            possible_duplicates: self.runs.iter().map(Ended::possible_duplicates).sum(),
            runs: self.runs.len(),
            killed: self.runs.iter().filter(|r| r.killed()).count(),
            exit_1: self
                .runs
                .iter()
                .filter(|r| r.status.code() == Some(1))
                .count(),
        };
        println!("[{label}] invariants: {figures:?}");
        println!("[{label}] sink injected: {:?}", sink.injected());

        assert_eq!(sink.bad_signatures(), 0, "{label}: every request is signed");
        assert_eq!(figures.pending, 0, "{label}: nothing left pending");
        assert_eq!(figures.duplicate_log_rows, 0, "{label}: the unique key");
        assert_eq!(
            figures.failed_without_reason, 0,
            "{label}: failures say why"
        );
        assert_eq!(
            figures.sent + figures.failed,
            expected,
            "{label}: every due notification is sent or failed, none lost"
        );
        assert!(
            figures.sink_extra <= figures.possible_duplicates,
            "{label}: {} sink requests beyond one per key, only {} counted possibleDuplicates",
            figures.sink_extra,
            figures.possible_duplicates
        );

        // Row by row: one row of the kind per due workflow and channel, none for the others.
        let mut by_workflow: BTreeMap<Uuid, Vec<&testing::LogRow>> = BTreeMap::new();
        for row in &rows {
            assert_eq!(row.kind, kind, "{label}: {row:?}");
            assert_eq!(row.sequence, 1, "{label}: {row:?}");
            by_workflow.entry(row.workflow_id).or_default().push(row);
        }
        let accepted = sink.accepted();
        for id in &self.due {
            let rows = by_workflow.get(id).map(Vec::as_slice).unwrap_or_default();
            let channels: BTreeSet<&str> = rows.iter().map(|r| r.channel.as_str()).collect();
            assert_eq!(
                channels,
                CHANNELS.into_iter().collect(),
                "{label}: workflow {id}: {rows:?}"
            );
            for row in rows {
                if self.poison.contains(id) {
                    assert_eq!(row.state, "failed", "{label}: poison {row:?}");
                    let error = row.error.as_deref().unwrap_or_default();
                    assert!(error.contains("(400)"), "{label}: {row:?}");
                    assert!(!accepted.contains_key(&row.idempotency_key));
                } else {
                    assert_eq!(row.state, "sent", "{label}: {row:?}");
                    assert!(
                        accepted.contains_key(&row.idempotency_key),
                        "{label}: sent but never accepted by the sink: {row:?}"
                    );
                }
            }
        }
        for id in &self.quiet {
            assert!(!by_workflow.contains_key(id), "{label}: {id} left alone");
        }
        let keys: BTreeSet<&str> = rows.iter().map(|r| r.idempotency_key.as_str()).collect();
        for key in accepted.keys() {
            assert!(keys.contains(key.as_str()), "{label}: unknown key {key}");
        }

        let workflows = sqlx::query(
            "SELECT id, status, timed_out_at IS NOT NULL AS stamped, reminders_sent \
             FROM signature_workflows",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap();
        for w in &workflows {
            let id: Uuid = w.get("id");
            let status: String = w.get("status");
            let stamped: bool = w.get("stamped");
            let reminders: i32 = w.get("reminders_sent");
            let due = self.due.contains(&id);
            match self.worker {
                Worker::Timeouts => {
                    assert_eq!(
                        (status == "timed_out", stamped),
                        (due, due),
                        "{label}: {id} is timed out exactly when past its deadline"
                    );
                }
                Worker::Reminders => {
                    assert_eq!(reminders, i32::from(due), "{label}: {id}");
                }
            }
        }
        if self.worker == Worker::Timeouts {
            let alerts = self
                .count(
                    "SELECT count(*) FROM ( \
                       SELECT workflow_id FROM signature_reminder_log \
                       WHERE kind = 'timeout_alert' GROUP BY workflow_id \
                       HAVING count(*) = 2 AND count(DISTINCT channel) = 2) t",
                )
                .await;
            assert_eq!(
                alerts,
                self.due.len() as i64,
                "{label}: one timeout_alert per channel per timed-out workflow"
            );
            println!(
                "[{label}] timed out: {} workflows, each with one alert per channel",
                alerts
            );
        }
        figures
    }

    async fn close(self) {
        self.pool.close().await;
        self.store.close().await;
    }
}

/// The figures a scenario prints.
#[derive(Debug)]
#[allow(dead_code)]
struct Figures {
    due: i64,
    sent: i64,
    failed: i64,
    pending: i64,
    duplicate_log_rows: i64,
    failed_without_reason: i64,
    /// Every request, refusals (429, 500, 400) included.
    sink_requests: u64,
    /// Requests answered 2xx (slow answers the client gave up on included).
    sink_accepted: u64,
    /// Accepted requests beyond one per idempotency key.
    sink_extra: u64,
    possible_duplicates: u64,
    runs: usize,
    killed: usize,
    exit_1: usize,
}

/// What a kill interrupted, read from the database and the sink before anything recovers, and
/// how many deliveries it left without an outcome (what recovery may count as possible
/// duplicates: never sent, in flight, or sent and unrecorded).
/// Where a kill left the deliveries: rows claimed and never sent, sent and unanswered, answered
/// but not recorded.
#[derive(Clone, Copy, Debug, Default)]
struct Unfinished {
    unsent: u64,
    mid_send: u64,
    unrecorded: u64,
}

async fn classify(world: &World, sink: &Sink) -> (&'static str, String, u64, Unfinished) {
    world.settle().await;
    let rows = testing::log_rows(&world.store).await.unwrap();
    let hits = sink.hits();
    let answered: BTreeSet<&str> = hits
        .iter()
        .filter(|h| h.answered)
        .map(|h| h.key.as_str())
        .collect();
    let in_flight: BTreeSet<&str> = hits
        .iter()
        .filter(|h| !h.answered)
        .map(|h| h.key.as_str())
        .collect();
    let (mut unsent, mut mid_send, mut unrecorded, mut retry) = (0u64, 0u64, 0u64, 0);
    for row in rows.iter().filter(|r| r.state == "pending") {
        let key = row.idempotency_key.as_str();
        if row.error.is_some() {
            retry += 1;
        } else if answered.contains(key) {
            unrecorded += 1;
        } else if in_flight.contains(key) {
            mid_send += 1;
        } else {
            unsent += 1;
        }
    }
    let sent = rows.iter().filter(|r| r.state == "sent").count();
    let phase = if rows.is_empty() {
        "before claim"
    } else if mid_send > 0 {
        "mid-send"
    } else if unrecorded > 0 {
        "after send, before completion"
    } else if unsent > 0 {
        "after claim, before send"
    } else if sent == rows.len() && rows.len() == world.due.len() * CHANNELS.len() {
        "after the run"
    } else {
        "between batches"
    };
    let detail = format!(
        "rows={} sent={sent} pending(claimed, unsent)={unsent} pending(mid-send)={mid_send} \
         pending(sent, unrecorded)={unrecorded} pending(retry)={retry}",
        rows.len()
    );
    let unconfirmed_retries = rows
        .iter()
        .filter(|r| r.state == "pending" && r.error.is_some() && r.unconfirmed)
        .count();
    let unfinished = unsent + mid_send + unrecorded + unconfirmed_retries as u64;
    let rows = Unfinished {
        unsent,
        mid_send,
        unrecorded,
    };
    (phase, detail, unfinished, rows)
}

mod scenarios;
