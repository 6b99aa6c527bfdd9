//! The scenarios: SIGKILL at random points, concurrent workers, database connections cut
//! mid-batch, and a faulty sink; each converges and is checked by `World::check`.

use super::*;

/// 1. SIGKILL at a random point of a run, across seeds, for both workers.
#[tokio::test]
async fn killed_at_random_points_nothing_is_lost_and_duplicates_are_counted() {
    const SEEDS: u64 = 14;
    let mut totals = (0u64, 0u64);
    let mut phases: BTreeMap<&str, u32> = BTreeMap::new();
    let mut left = Unfinished::default();
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
        let (phase, detail, unfinished, rows) = classify(&world, &sink).await;
        left.unsent += rows.unsent;
        left.mid_send += rows.mid_send;
        left.unrecorded += rows.unrecorded;
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
    // A batch is claimed whole, sent a few at a time and recorded at its end, so kills that
    // land mid-batch leave deliveries in each state the recovery must handle: claimed and
    // never sent, sent and unanswered, answered and unrecorded. Each must have been exercised.
    println!("[kill] deliveries the kills left: {left:?}");
    assert!(
        left.unsent > 0 && left.mid_send > 0 && left.unrecorded > 0,
        "the kills did not land in every phase: {left:?}"
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
