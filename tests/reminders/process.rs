//! The worker as its CronJob runs it (the real binary, env in, exit code and summary line out)
//! when something goes wrong: a channel that rejects every send fails the Job (exit code 1),
//! and SIGTERM (a Job deleted, a node drained, a deadline reached) stops it without losing a
//! reminder.

use std::process::{Child, Command, Output, Stdio};

use super::*;
use signet::crd::SignaturePolicySpec;

on_both!(
    a_rejecting_channel_fails_the_job_with_its_reason,
    sigterm_mid_run_is_interrupted_and_loses_nothing,
);

/// `signet send-reminders` for `spec` against the harness's database and stand-ins.
fn worker(h: &Harness, spec: &SignaturePolicySpec, extra: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_signet"));
    command
        .arg("send-reminders")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SIGNET_POLICY", serde_json::to_string(spec).unwrap())
        .env("SIGNET_SECRET_DB_URL", &h.db.url)
        .env("SIGNET_LOG_LEVEL", "warn")
        .envs(&h.env)
        .envs(extra.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits for `child` off the runtime (the stand-ins answer on it meanwhile).
async fn wait(child: Child) -> Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

fn summary(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("{output:?}"));
    serde_json::from_str(line).unwrap()
}

async fn a_rejecting_channel_fails_the_job_with_its_reason(h: &Harness) {
    let spec = h.policy("  reminders: {firstAfter: 24h, channels: [mail, hook]}");
    h.http.rule(|request| {
        (request.path == "/v3/mail/send").then(|| Reply::status(403).body("forbidden"))
    });
    h.seed(&[Seed::pending(25.0 * HOUR), Seed::pending(26.0 * HOUR)])
        .await;

    let output = wait(worker(h, &spec, &[]).spawn().unwrap()).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let line = summary(&output);
    assert_eq!(
        (&line["outcome"], &line["reason"]),
        (&"Failed".into(), &"ChannelRejected".into()),
        "{line}"
    );
    assert_eq!(line["rejectedChannels"][0]["channel"], "mail", "{line}");
    assert_eq!(line["rejectedChannels"][0]["status"], 403, "{line}");
    assert_eq!(
        (&line["sent"], &line["released"]),
        (&2.into(), &2.into()),
        "{line}"
    );
    // Neither the key nor the stand-in's address appears in what the Job prints.
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!printed.contains("SG.test"), "{printed}");
    assert!(!printed.contains(&h.http.addr.to_string()), "{printed}");
}

async fn sigterm_mid_run_is_interrupted_and_loses_nothing(h: &Harness) {
    let spec = h.policy("  reminders: {firstAfter: 24h, channels: [hook]}");
    let slow = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let rule = slow.clone();
    h.http.rule(move |_| {
        let delay = if rule.load(std::sync::atomic::Ordering::SeqCst) {
            Duration::from_millis(300)
        } else {
            Duration::ZERO
        };
        Some(Reply::status(202).delayed(delay))
    });
    let seeds: Vec<Seed> = (0..40).map(|_| Seed::pending(25.0 * HOUR)).collect();
    h.seed(&seeds).await;

    let child = worker(
        h,
        &spec,
        &[("SIGNET_CONCURRENCY", "2"), ("SIGNET_BATCH_SIZE", "10")],
    )
    .spawn()
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while h.http.requests().len() < 4 {
        assert!(std::time::Instant::now() < deadline, "no sends started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = wait(child).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let line = summary(&output);
    assert_eq!(
        (&line["outcome"], &line["reason"]),
        (&"Interrupted".into(), &"Interrupted".into()),
        "{line}"
    );
    let sent_before = h.http.requests().len();
    assert!(
        sent_before < seeds.len(),
        "the run was not interrupted: {line}"
    );
    // The sends in flight finished and were recorded; nothing was left half-done.
    assert_eq!(line["sent"].as_u64(), Some(sent_before as u64), "{line}");
    let log = testing::log_rows(&h.store).await.unwrap();
    assert!(log.iter().all(|r| r.state == "sent"), "{log:?}");

    // The next run sends the rest, each workflow exactly once in all.
    slow.store(false, std::sync::atomic::Ordering::SeqCst);
    let next = h.run(&spec).await;
    assert_eq!(
        next.deliveries.sent as usize,
        seeds.len() - sent_before,
        "{next:?}"
    );
    let mut events: Vec<String> = h
        .http
        .requests()
        .iter()
        .map(|r| r.json()["data"]["workflowId"].as_str().unwrap().to_owned())
        .collect();
    events.sort();
    let mut expected: Vec<String> = seeds.iter().map(|s| s.id.to_string()).collect();
    expected.sort();
    assert_eq!(events, expected);
}
