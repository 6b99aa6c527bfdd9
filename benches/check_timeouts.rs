//! Benchmark of one `check-timeouts` run on PostgreSQL: loads 1,000,000 workflows of which
//! 100,000 are past their deadline (half by their own `deadline_at`, half by `timeout.after`)
//! into a fresh database, runs the worker with a Slack digest channel pointed at an HTTP sink
//! on 127.0.0.1, and prints timeouts per second, the run time, the peak RSS and the time of a
//! second run with nothing to do. Figures are printed, never asserted.
//!
//! `cargo bench --bench check_timeouts` (PostgreSQL at `SIGNET_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`). `SIGNET_BENCH_WORKFLOWS` and
//! `SIGNET_BENCH_EXPIRED` change the sizes, `SIGNET_BATCH_SIZE` the chunk size. Without
//! `--bench` (as `cargo test --all-targets` runs it) it does nothing.

use std::sync::atomic::Ordering;
use std::time::Instant;

use common::{Sink, peak_rss, size};
use signet::notify::{self, Channels};
use signet::store::Store;
use signet::worker::{RunOptions, Timeouts};

#[path = "common/mod.rs"]
mod common;

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("check_timeouts: run with `cargo bench --bench check_timeouts`");
        return;
    }
    let workflows = size("SIGNET_BENCH_WORKFLOWS", 1_000_000);
    let expired = size("SIGNET_BENCH_EXPIRED", 100_000);

    let (_db, store) = common::fresh_postgres().await;
    let Store::Postgres(pg) = &store else {
        unreachable!()
    };

    let started = Instant::now();
    // Every tenth row (by position) is expired: the even ones by deadline_at, the odd ones by
    // requested_at + 14d; the others are young and carry no deadline of their own.
    let every = (workflows / expired.max(1)).max(1);
    sqlx::query(
        "INSERT INTO signature_workflows (id, workflow_type, signer_email, signer_name, \
           document_title, signing_url, requested_at, deadline_at) \
         SELECT gen_random_uuid(), 'enrollment-agreement', 'signer' || i || '@example.com', \
           'Signer ' || i, 'Enrollment agreement', 'https://sign.example.com/' || i, \
           CASE WHEN i % $2 = 0 AND i / $2 <= $3 AND (i / $2) % 2 = 1 \
                THEN now() - interval '15 days' ELSE now() - interval '1 hour' END, \
           CASE WHEN i % $2 = 0 AND i / $2 <= $3 AND (i / $2) % 2 = 0 \
                THEN now() - interval '1 minute' END \
         FROM generate_series(1, $1::bigint) AS i",
    )
    .bind(workflows)
    .bind(every)
    .bind(expired)
    .execute(pg.pool())
    .await
    .unwrap();
    sqlx::query("ANALYZE signature_workflows")
        .execute(pg.pool())
        .await
        .unwrap();
    println!(
        "loaded {workflows} workflows ({expired} past their deadline) in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let sink = Sink::start().await;
    let spec = common::policy(
        "  timeout: {after: 14d, schedule: \"0 * * * *\", channels: [ops]}\n  channels:\n    - name: ops\n      slack: {webhookUrlSecretRef: {name: slack, key: url}}\n",
    );
    let url = sink.url.clone();
    let env = move |name: &str| (name == "SIGNET_SECRET_SLACK_URL").then(|| url.clone());
    let http = notify::http_client(notify::HttpTimeouts::default()).unwrap();
    let channels: Channels =
        notify::build_channels(&spec, &["ops"], &env, &http, &notify::log::stdout()).unwrap();

    let defaults = RunOptions::default();
    let options = RunOptions {
        batch_size: size("SIGNET_BATCH_SIZE", defaults.batch_size),
        ..defaults
    };
    println!(
        "\nrunning check-timeouts: chunk {}, one Slack digest",
        options.batch_size
    );
    let policy = signet::policy::Policy::parse(&spec).unwrap();
    let run = Timeouts::new(&policy, &channels, options).unwrap();
    let started = Instant::now();
    let summary = run.check_timeouts(&store).await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    println!("summary: {}", serde_json::to_string(&summary).unwrap());

    println!("\nresults");
    println!("  workflows timed out   {}", summary.timed_out);
    println!("  alerts logged & sent  {}", summary.alerts.sent);
    println!(
        "  requests at the sink  {}",
        sink.count.load(Ordering::Relaxed)
    );
    println!("  run time              {elapsed:.2}s");
    println!(
        "  timeouts/s            {:.0}",
        summary.timed_out as f64 / elapsed
    );
    println!("  peak RSS              {}", peak_rss());

    let second = Instant::now();
    let again = run.check_timeouts(&store).await.unwrap();
    println!(
        "  second run            {} timed out in {:.2}s (nothing expired)",
        again.timed_out,
        second.elapsed().as_secs_f64()
    );
    store.close().await;
}
