//! Benchmark of one `send-reminders` run on PostgreSQL: loads 1,000,000 workflows of which 100,000
//! are due into a fresh database, runs the worker against a SendGrid-compatible HTTP sink on
//! 127.0.0.1, and prints reminders per second, the p99 latency from claim to logged outcome, the
//! peak RSS and the EXPLAIN of the due query's branches. Figures are printed, never asserted.
//!
//! `cargo bench --bench send_reminders` (PostgreSQL at `SIGNET_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`). `SIGNET_BENCH_WORKFLOWS` and
//! `SIGNET_BENCH_DUE` change the sizes, `SIGNET_BATCH_SIZE` and `SIGNET_CONCURRENCY` the run's
//! options. Without `--bench` (as `cargo test --all-targets` runs
//! it) it does nothing.

use std::sync::atomic::Ordering;
use std::time::Instant;

use common::{Sink, peak_rss, size};
use signet::notify::{self, Channels};
use signet::policy::Policy;
use signet::store::Store;
use signet::worker::{Run, RunOptions};
use sqlx::Row;

#[path = "common/mod.rs"]
mod common;

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("send_reminders: run with `cargo bench --bench send_reminders`");
        return;
    }
    let workflows = size("SIGNET_BENCH_WORKFLOWS", 1_000_000);
    let due = size("SIGNET_BENCH_DUE", 100_000);

    let (_db, store) = common::fresh_postgres().await;
    let Store::Postgres(pg) = &store else {
        unreachable!()
    };

    let started = Instant::now();
    // Every tenth row (by position) is due; the due rows are spread over the id space.
    let every = (workflows / due.max(1)).max(1);
    sqlx::query(
        "INSERT INTO signature_workflows (id, workflow_type, signer_email, signer_name, \
           document_title, signing_url, requested_at) \
         SELECT gen_random_uuid(), 'enrollment-agreement', 'signer' || i || '@example.com', \
           'Signer ' || i, 'Enrollment agreement', 'https://sign.example.com/' || i, \
           CASE WHEN i % $2 = 0 AND i / $2 <= $3 THEN now() - interval '25 hours' \
                ELSE now() - interval '1 hour' END \
         FROM generate_series(1, $1::bigint) AS i",
    )
    .bind(workflows)
    .bind(every)
    .bind(due)
    .execute(pg.pool())
    .await
    .unwrap();
    sqlx::query("ANALYZE signature_workflows")
        .execute(pg.pool())
        .await
        .unwrap();
    println!(
        "loaded {workflows} workflows ({due} due) in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let sink = Sink::start().await;
    let spec = signet_spec(&sink.url);
    let env = |name: &str| (name == "SIGNET_SECRET_SENDGRID_KEY").then(|| "SG.bench".to_owned());
    let http = notify::http_client(notify::HttpTimeouts::default()).unwrap();
    let channels: Channels =
        notify::build_channels(&spec, &["mail"], &env, &http, &notify::log::stdout()).unwrap();

    let policy = Policy::parse(&spec).unwrap();
    let query = policy.due_query().unwrap();
    println!(
        "\nEXPLAIN (ANALYZE, BUFFERS) of the due query, first page of 500 of each branch walked:"
    );
    for line in pg.explain_due_candidates(&query, 500).await.unwrap() {
        println!("  {line}");
    }

    let defaults = RunOptions::default();
    let options = RunOptions {
        batch_size: size("SIGNET_BATCH_SIZE", defaults.batch_size),
        concurrency: size("SIGNET_CONCURRENCY", defaults.concurrency as i64) as usize,
        ..defaults
    };
    println!(
        "\nrunning send-reminders: batch {}, concurrency {}",
        options.batch_size, options.concurrency
    );
    let run = Run::new(&policy, &channels, options).unwrap();
    let started = Instant::now();
    let summary = run.send_reminders(&store).await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    println!("summary: {}", serde_json::to_string(&summary).unwrap());

    let latency = sqlx::query(
        "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP \
           (ORDER BY extract(epoch FROM updated_at - created_at)) AS p, count(*) AS n \
         FROM signature_reminder_log WHERE state = 'sent'",
    )
    .fetch_one(pg.pool())
    .await
    .unwrap();
    let percentiles: Vec<f64> = latency.get("p");
    let logged: i64 = latency.get("n");

    println!("\nresults");
    println!("  reminders sent        {}", summary.deliveries.sent);
    println!(
        "  requests at the sink  {}",
        sink.count.load(Ordering::Relaxed)
    );
    println!("  log rows sent         {logged}");
    println!("  run time              {elapsed:.2}s");
    println!(
        "  reminders/s           {:.0}",
        summary.deliveries.sent as f64 / elapsed
    );
    println!("  claim-to-logged p50   {:.1} ms", percentiles[0] * 1000.0);
    println!("  claim-to-logged p99   {:.1} ms", percentiles[1] * 1000.0);
    println!("  peak RSS              {}", peak_rss());

    let second = Instant::now();
    let again = run.send_reminders(&store).await.unwrap();
    println!(
        "  second run            {} sent in {:.2}s ({workflows} workflows, nothing due)",
        again.deliveries.sent,
        second.elapsed().as_secs_f64()
    );
    // The second run is the first to walk past the index entries the first run's updates left
    // behind (and marks them dead); the third shows the steady state until VACUUM removes them.
    let third = Instant::now();
    let again = run.send_reminders(&store).await.unwrap();
    println!(
        "  third run             {} sent in {:.2}s",
        again.deliveries.sent,
        third.elapsed().as_secs_f64()
    );
    store.close().await;
}

fn signet_spec(endpoint: &str) -> signet::crd::SignaturePolicySpec {
    common::policy(&format!(
        "  reminders: {{channels: [mail]}}\n  channels:\n    - name: mail\n      sendgrid: {{apiKeySecretRef: {{name: sendgrid, key: key}}, from: \"Bench <bench@example.com>\", endpoint: \"{endpoint}\"}}\n"
    ))
}
