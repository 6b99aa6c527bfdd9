//! Worker faults against real PostgreSQL and a local webhook sink: the `signet` binary killed
//! with SIGKILL at random points, run as concurrent processes, cut off from its database, and
//! facing 429s, 500s, slow answers and poison rows. After each scenario and a final clean run
//! the delivery invariants are checked in SQL and at the sink, and printed.

#[path = "faults/harness.rs"]
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
async fn classify(world: &World, sink: &Sink) -> (&'static str, String, u64) {
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
    let (mut unsent, mut mid_send, mut unrecorded, mut retry) = (0, 0, 0, 0);
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
    let unfinished = (unsent + mid_send + unrecorded + unconfirmed_retries) as u64;
    (phase, detail, unfinished)
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

/// 1. SIGKILL at a random point of a run, across seeds, for both workers.
#[tokio::test]
async fn killed_at_random_points_nothing_is_lost_and_duplicates_are_counted() {
    const SEEDS: u64 = 14;
    let mut totals = (0u64, 0u64);
    let mut phases: BTreeMap<&str, u32> = BTreeMap::new();
    for iteration in 0..SEEDS {
        let seed = 0x5EED_0000 + iteration;
        let mut rng = Prng(seed);
        let worker = if iteration % 3 == 2 {
            Worker::Timeouts
        } else {
            Worker::Reminders
        };
        let due = 100 + rng.below(100) as usize;
        let sink = Sink::start(seed).await;
        sink.set_faults(Faults {
            max_delay_ms: 30,
            ..Faults::default()
        });
        let label = format!("kill seed={seed:#x} {}", worker.command());
        let mut world = World::new(&label, worker, due, 0).await;
        // Half the kills come after a random delay, half once the sink has seen a random
        // number of requests (so they land mid-run however slow the machine is).
        let started = Instant::now();
        let (kill_after, kill_at_request) = if iteration % 2 == 0 {
            (Some(Duration::from_millis(20 + rng.below(900))), None)
        } else {
            (None, Some(1 + rng.below(due as u64 * 2) as usize))
        };
        let kill_now = || match (kill_after, kill_at_request) {
            (Some(after), _) => started.elapsed() >= after,
            (_, Some(n)) => sink.requests() >= n,
            _ => false,
        };
        let batch = (5 + rng.below(20)).to_string();
        let concurrency = (2 + rng.below(6)).to_string();
        let run = world
            .run(
                &sink,
                &["--batch-size", &batch, "--concurrency", &concurrency],
                kill_now,
            )
            .await;
        let killed = world.runs[run].killed();
        let (phase, detail, unfinished) = classify(&world, &sink).await;
        *phases.entry(phase).or_default() += 1;
        println!(
            "[{label}] injected: {due} due workflows x 2 channels, batch {batch}, concurrency \
             {concurrency}, sink delay 0-30ms, SIGKILL {} ({}); interrupted \
             {phase}: {detail}",
            match (kill_after, kill_at_request) {
                (Some(after), _) => format!("after {after:?}"),
                (_, n) => format!("once the sink had {} requests", n.unwrap_or_default()),
            },
            if killed {
                "killed"
            } else {
                "had already exited"
            },
        );
        let rounds = world.converge(&sink).await;
        let figures = world.check(&sink).await;
        println!("[{label}] converged after {rounds} clean run(s)");
        // The converging runs meet no sink fault, so every possible duplicate they count is a
        // delivery the kill left without an outcome: an inflated count fails here.
        assert!(
            figures.possible_duplicates <= unfinished,
            "{label}: {} possibleDuplicates, but the kill left only {unfinished} deliveries \
             without an outcome",
            figures.possible_duplicates
        );
        totals.0 += figures.sink_extra;
        totals.1 += figures.possible_duplicates;
        world.close().await;
    }
    println!(
        "[kill] all seeds: sink requests beyond one per key {}, possibleDuplicates {}; kills \
         landed {phases:?}",
        totals.0, totals.1
    );
    // Half the kills wait for the sink to have seen requests, so some land with sends in
    // flight; that is the phase where a duplicate can arise.
    assert!(
        phases.get("mid-send").is_some_and(|n| *n > 0),
        "kills landed {phases:?}"
    );
}

/// 2. Two and eight workers at once on one policy: no notification sent twice.
#[tokio::test]
async fn concurrent_workers_never_send_twice() {
    for (workers, worker) in [
        (2, Worker::Reminders),
        (8, Worker::Reminders),
        (8, Worker::Timeouts),
    ] {
        let sink = Sink::start(workers).await;
        sink.set_faults(Faults {
            max_delay_ms: 10,
            ..Faults::default()
        });
        let label = format!("{workers} concurrent {}", worker.command());
        let mut world = World::new(&label, worker, 300, 0).await;
        let procs: Vec<Proc> = (0..workers)
            .map(|_| world.spawn(&sink, &["--batch-size", "20", "--concurrency", "4"]))
            .collect();
        let ended = futures::future::join_all(procs.into_iter().map(|p| p.wait())).await;
        for e in &ended {
            assert_eq!(e.status.code(), Some(0), "{label}: {e:?}");
        }
        let sent: Vec<u64> = ended
            .iter()
            .map(|e| e.summary.as_ref().unwrap()["sent"].as_u64().unwrap())
            .collect();
        println!(
            "[{label}] injected: 300 due x 2 channels, sink delay 0-10ms; sent per worker {sent:?}"
        );
        world.runs.extend(ended);
        let before_clean = sink.accepted().values().map(|n| n - 1).sum::<u64>();
        world.converge(&sink).await;
        let figures = world.check(&sink).await;
        assert_eq!(before_clean, 0, "{label}: no duplicate at the sink");
        assert_eq!(figures.sink_extra, 0, "{label}: no duplicate at the sink");
        assert_eq!(figures.possible_duplicates, 0, "{label}");
        assert_eq!(
            sent.iter().sum::<u64>(),
            figures.due as u64,
            "{label}: the concurrent runs sent everything between them"
        );
        world.close().await;
    }
}

/// 3. The database connection cut mid-batch: exit 1 (or completion), then convergence. The
/// worker's connections are terminated once, or every 30ms until the run ends.
#[tokio::test]
async fn database_connection_cut_mid_batch() {
    for (seed, worker, repeat) in [
        (31u64, Worker::Reminders, true),
        (32, Worker::Timeouts, true),
        (33, Worker::Reminders, false),
    ] {
        let mut rng = Prng(seed);
        let sink = Sink::start(seed).await;
        sink.set_faults(Faults {
            max_delay_ms: 40,
            ..Faults::default()
        });
        let label = format!("db cut seed={seed} {}", worker.command());
        let mut world = World::new(&label, worker, 200, 0).await;
        // The worker's connections are the ones opened after it started (this test's own
        // store connects under the same name, earlier).
        let spawned_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&world.pool)
            .await
            .unwrap();
        let proc = world.spawn(&sink, &["--batch-size", "10", "--concurrency", "2"]);
        let cut_after = Duration::from_millis(200 + rng.below(600));
        let waiting = tokio::spawn(proc.wait());
        tokio::time::sleep(cut_after).await;
        let (mut cuts, mut terminated) = (0, 0);
        while !waiting.is_finished() && cuts < 200 {
            terminated += sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) \
                 FROM pg_stat_activity WHERE application_name = $1 \
                 AND datname = current_database() AND backend_start > $2) t",
            )
            .bind(DATABASE_APPLICATION_NAME)
            .bind(spawned_at)
            .fetch_one(&world.pool)
            .await
            .unwrap();
            cuts += 1;
            if !repeat {
                break;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let ended = waiting.await.unwrap();
        let code = ended.status.code();
        assert!(terminated > 0, "{label}: no worker connection was cut");
        if repeat {
            // Cut every 30ms until it ends, the run cannot complete: it must fail, loudly.
            assert_eq!(code, Some(1), "{label}: {ended:?}");
        } else {
            assert!(
                matches!(code, Some(0 | 1)),
                "{label}: exit 0 or 1: {ended:?}"
            );
        }
        println!(
            "[{label}] injected: {cuts} cut(s) from {cut_after:?} on, pg_terminate_backend on \
             {terminated} connection(s); the run exited {code:?} ({}); it left {:?}",
            ended.summary.as_ref().unwrap()["outcome"],
            classify(&world, &sink).await.1
        );
        world.runs.push(ended);
        world.converge(&sink).await;
        world.check(&sink).await;
        world.close().await;
    }
}

/// 4. A faulty sink: 429 (both Retry-After forms), 500 at 30%, answers slower than the send
/// timeout, connections closed unanswered, and 400 for poison rows.
#[tokio::test]
async fn sink_faults_are_retried_and_poison_rows_fail_alone() {
    let sink = Sink::start(4).await;
    sink.set_faults(Faults {
        max_delay_ms: 20,
        p429: 0.1,
        p500: 0.3,
        p_slow: 0.05,
        slow_ms: 1_500,
        p_drop: 0.05,
    });
    let label = "sink faults send-reminders".to_owned();
    let mut world = World::new(&label, Worker::Reminders, 60, 4).await;
    let args = [
        "--batch-size",
        "20",
        "--concurrency",
        "8",
        "--send-timeout",
        "1s",
    ];
    for _ in 0..2 {
        let run = world.run(&sink, &args, || false).await;
        let ended = &world.runs[run];
        assert_eq!(ended.status.code(), Some(0), "{ended:?}");
        println!("[{label}] faulty run: {}", ended.summary.as_ref().unwrap());
        testing::expire_leases(&world.store).await.unwrap();
    }
    println!(
        "[{label}] injected: 60 due x 2 channels (4 poison), 429 10%, 500 30%, 5% closed \
         unanswered, 5% answered after 1.5s with --send-timeout 1s"
    );
    let rounds = world.converge(&sink).await;
    println!("[{label}] converged after {rounds} clean run(s)");
    let figures = world.check(&sink).await;
    assert_eq!(figures.failed, (world.poison.len() * CHANNELS.len()) as i64);
    let injected = sink.injected();
    // Only a try that got no answer can be a possible duplicate: the slow answers and the
    // closed connections bound the count from above (the lower bound is in check()).
    let unanswered = injected
        .get("202 slower than the client timeout")
        .copied()
        .unwrap_or(0)
        + injected
            .get("202 then the connection closed unanswered")
            .copied()
            .unwrap_or(0);
    assert!(
        figures.possible_duplicates <= unanswered,
        "{label}: {} possibleDuplicates for {unanswered} unanswered tries",
        figures.possible_duplicates
    );
    for what in [
        "429 Retry-After seconds",
        "429 Retry-After date",
        "500",
        "202 slower than the client timeout",
        "202 then the connection closed unanswered",
        "400 poison",
    ] {
        assert!(
            injected.get(what).is_some_and(|n| *n > 0),
            "{what} injected"
        );
    }
    world.close().await;
}
