//! `signet demo`: the whole worker loop on an embedded SQLite database, no cluster, no server, no
//! network. It applies the migrations, seeds about 25 workflows across states, ages and signer
//! time zones, shows the policy (`examples/demo.yaml`) and the plan, runs `send-reminders` and
//! `check-timeouts` with `log` channels, prints who was reminded and why, who was held and until
//! when, what timed out and which alerts went out, then runs both again to show nothing is sent
//! twice.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Timelike, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

use crate::crd::{SignaturePolicy, SignaturePolicySpec};
use crate::notify::{self, HttpTimeouts, log::SharedWriter};
use crate::policy::Policy;
use crate::store::seed::{Seed, seed, workflow_count};
use crate::store::{ConnectOptions, Store};
use crate::worker::{Error, Run, RunOptions, RunSummary, TimeoutSummary, Timeouts, plan};

/// The policy the demo runs, also checked as an example.
pub const POLICY: &str = include_str!("../../examples/demo.yaml");

/// `signet demo` options.
#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// An empty database to use instead of a temporary SQLite file (`sqlite:` or `postgres://`);
    /// the demo refuses one that already holds workflows.
    #[arg(long, env = "SIGNET_DEMO_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

/// What the demo counted, for its report and for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DemoTotals {
    /// The first reminders run.
    pub reminders: RunSummary,
    /// The first timeouts run.
    pub timeouts: TimeoutSummary,
    /// Deliveries of the second runs (both workers): must be zero.
    pub sent_again: u64,
    /// Workflows the second timeouts run timed out: must be zero.
    pub timed_out_again: u64,
}

/// Why a seeded workflow is in the demo, for the report.
struct Cast {
    name: &'static str,
    zone: Option<String>,
    story: String,
}

/// Runs the demo, writing the report to `out`; returns the exit code.
pub async fn demo(args: &DemoArgs, out: &mut impl Write) -> u8 {
    let temp = match &args.database_url {
        Some(_) => None,
        None => match tempfile::Builder::new().prefix("signet-demo-").tempdir() {
            Ok(dir) => Some(dir),
            Err(err) => {
                eprintln!("signet: cannot create a temporary directory: {err}");
                return 1;
            }
        },
    };
    let url = match (&args.database_url, &temp) {
        (Some(url), _) => url.clone(),
        (None, Some(dir)) => format!("sqlite://{}", dir.path().join("signet-demo.db").display()),
        (None, None) => unreachable!("a temporary directory exists without --database-url"),
    };
    match run(&url, out).await {
        Ok(_) => 0,
        Err(err) => {
            eprintln!("signet: {err}");
            err.exit_code()
        }
    }
}

/// The demo against `url`; the report goes to `out`.
pub async fn run(url: &str, out: &mut impl Write) -> Result<DemoTotals, Error> {
    let policy = policy();
    let store = Store::connect(
        url,
        &ConnectOptions {
            create_sqlite_file: true,
            max_connections: 4,
            ..ConnectOptions::default()
        },
    )
    .await?;
    store.migrate().await?;
    let result = scenes(&policy, &store, url, out).await;
    store.close().await;
    result
}

fn policy() -> Policy {
    let policy: SignaturePolicy =
        serde_saphyr::from_str(POLICY).expect("examples/demo.yaml is one SignaturePolicy");
    Policy::parse(&policy.spec).expect("examples/demo.yaml is valid (tested)")
}

async fn scenes(
    policy: &Policy,
    store: &Store,
    url: &str,
    out: &mut impl Write,
) -> Result<DemoTotals, Error> {
    let w = |e: std::io::Error| Error::Config(format!("cannot write the report: {e}"));
    if workflow_count(store).await? > 0 {
        return Err(Error::Config(format!(
            "{} already holds workflows; the demo seeds its own, so give it an empty database",
            redact(url)
        )));
    }
    let now = store.now().await?;
    let cast = cast(store, now).await?;

    writeln!(
        out,
        "Signet demo: the worker loop on {} (no cluster, no server, no network)\n",
        redact(url)
    )
    .map_err(w)?;
    writeln!(
        out,
        "The policy (examples/demo.yaml); its channels are `log`, so every notification is a line:\n"
    )
    .map_err(w)?;
    for line in POLICY.lines().filter(|l| !l.starts_with('#')) {
        writeln!(out, "    {line}").map_err(w)?;
    }
    writeln!(
        out,
        "\n{} workflows seeded at {} (database clock): pending ones of every age, signers in \
         time zones inside and outside the 08:00-20:00 window, signed, declined and cancelled ones.",
        cast.len(),
        now.format("%Y-%m-%d %H:%M UTC")
    )
    .map_err(w)?;

    // The plan: what is due and what the window holds.
    let plan = plan::plan(store, policy, 100).await?;
    writeln!(
        out,
        "\n1. signet plan: {} to send now, {} held by the send window",
        plan.send, plan.held
    )
    .map_err(w)?;
    for d in plan.deliveries.iter().filter(|d| d.action == "hold") {
        let who = &cast[&d.workflow_id];
        let zone: Tz = who
            .zone
            .as_deref()
            .and_then(|z| z.parse().ok())
            .unwrap_or(Tz::UTC);
        let until = d
            .held_until
            .map_or("the window never opens".to_owned(), |t| {
                t.with_timezone(&zone).format("%a %H:%M %Z").to_string()
            });
        writeln!(
            out,
            "   held  {} {} for {} ({}): it is {} there; goes out {}",
            d.kind.as_str().replace('_', " "),
            d.sequence,
            who.name,
            who.zone.as_deref().unwrap_or("policy zone"),
            now.with_timezone(&zone).format("%H:%M"),
            until
        )
        .map_err(w)?;
    }

    // The runs, with the log channels captured.
    let (lines, channels) = log_channels(policy.spec())?;
    let reminders = Run::new(policy, &channels, RunOptions::default())?;
    let timeouts = Timeouts::new(policy, &channels, RunOptions::default())?;

    let first = reminders.send_reminders(store).await?;
    writeln!(
        out,
        "\n2. signet send-reminders: due {}, sent {}, held {}, failed {}",
        first.due, first.deliveries.sent, first.held, first.deliveries.failed
    )
    .map_err(w)?;
    report_lines(&lines, &cast, out).map_err(w)?;
    summary_line(&first, first.outcome(), out).map_err(w)?;

    let timed = timeouts.check_timeouts(store).await?;
    writeln!(
        out,
        "\n3. signet check-timeouts: timed out {}, alerts sent {}, failed {}",
        timed.timed_out, timed.alerts.sent, timed.alerts.failed
    )
    .map_err(w)?;
    report_lines(&lines, &cast, out).map_err(w)?;
    summary_line(&timed, timed.outcome(), out).map_err(w)?;

    let again = reminders.send_reminders(store).await?;
    let timed_again = timeouts.check_timeouts(store).await?;
    let sent_again = again.deliveries.sent + timed_again.alerts.sent;
    writeln!(
        out,
        "\n4. Both again: send-reminders sent {} (held {}: still outside their window), \
         check-timeouts timed out {} and sent {}. Nothing went out twice: every notification is \
         claimed in the database before it is sent.",
        again.deliveries.sent, again.held, timed_again.timed_out, timed_again.alerts.sent
    )
    .map_err(w)?;
    report_lines(&lines, &cast, out).map_err(w)?;
    writeln!(
        out,
        "\nIn a cluster the same runs are CronJobs the controller creates from a SignaturePolicy; \
         `signet render -f examples/demo.yaml` prints them."
    )
    .map_err(w)?;

    Ok(DemoTotals {
        reminders: first,
        timeouts: timed,
        sent_again,
        timed_out_again: timed_again.timed_out,
    })
}

/// Prints a run's summary line as the worker prints it on its standard output.
fn summary_line(
    summary: &impl serde::Serialize,
    outcome: crate::crd::RunOutcome,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut line = serde_json::to_value(summary).map_err(std::io::Error::other)?;
    line["outcome"] = serde_json::json!(outcome);
    writeln!(
        out,
        "   summary line (the worker's last line of output): {line}"
    )
}

/// Prints the notifications the log channels wrote since the last call, one readable line each.
fn report_lines(
    lines: &Arc<Mutex<Vec<u8>>>,
    cast: &BTreeMap<Uuid, Cast>,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let text = std::mem::take(&mut *lines.lock().unwrap_or_else(|e| e.into_inner()));
    for line in String::from_utf8_lossy(&text).lines() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let n = &value["notification"];
        let id = n["workflowId"].as_str().and_then(|s| s.parse().ok());
        let Some(who) = id.and_then(|id: Uuid| cast.get(&id)) else {
            continue;
        };
        let kind = n["kind"].as_str().unwrap_or_default().replace('_', " ");
        let what = if kind == "reminder" {
            format!("reminder {}", n["sequence"])
        } else {
            kind
        };
        writeln!(
            out,
            "   {:<10} {:<16} -> {}: {}",
            value["channel"].as_str().unwrap_or_default(),
            what,
            who.name,
            who.story
        )?;
    }
    Ok(())
}

/// The buffer the `log` channels write into, and the channels by name.
type LogChannels = (Arc<Mutex<Vec<u8>>>, notify::Channels);

/// The policy's `log` channels, writing into a buffer the report reads.
fn log_channels(spec: &SignaturePolicySpec) -> Result<LogChannels, Error> {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let writer: SharedWriter = Arc::new(Mutex::new(Box::new(BufferWriter(buffer.clone()))));
    let names: Vec<&str> = spec.channels.iter().map(|c| c.name.as_str()).collect();
    let http =
        notify::http_client(HttpTimeouts::default()).map_err(|e| Error::Config(e.to_string()))?;
    let channels = notify::build_channels(spec, &names, &|_| None, &http, &writer)
        .map_err(|e| Error::Config(e.to_string()))?;
    Ok((buffer, channels))
}

struct BufferWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufferWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Zones spread over the world's offsets; the demo picks signers inside and outside the send
/// window from them at the moment it runs, with an hour's margin, so its counts never depend on
/// the time of day.
const ZONES: [&str; 22] = [
    "Pacific/Honolulu",
    "America/Anchorage",
    "America/Los_Angeles",
    "America/Denver",
    "America/Chicago",
    "America/New_York",
    "America/Sao_Paulo",
    "Atlantic/Azores",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Athens",
    "Europe/Moscow",
    "Asia/Dubai",
    "Asia/Karachi",
    "Asia/Dhaka",
    "Asia/Bangkok",
    "Asia/Singapore",
    "Asia/Tokyo",
    "Australia/Brisbane",
    "Pacific/Noumea",
    "Pacific/Auckland",
    "Pacific/Kiritimati",
];

/// Zones where local time is in `[from, to)` hours at `now` (wrapping past midnight).
fn zones_between(now: DateTime<Utc>, from: u32, to: u32) -> Vec<String> {
    ZONES
        .iter()
        .filter(|zone| {
            let tz: Tz = zone.parse().expect("known zones");
            let hour = now.with_timezone(&tz).hour();
            if from < to {
                (from..to).contains(&hour)
            } else {
                hour >= from || hour < to
            }
        })
        .map(|z| z.to_string())
        .collect()
}

const NAMES: [&str; 27] = [
    "Ada Lovelace",
    "Alan Turing",
    "Grace Hopper",
    "Edsger Dijkstra",
    "Barbara Liskov",
    "Donald Knuth",
    "Margaret Hamilton",
    "Ken Thompson",
    "Frances Allen",
    "John Backus",
    "Radia Perlman",
    "Tony Hoare",
    "Leslie Lamport",
    "Shafi Goldwasser",
    "Niklaus Wirth",
    "Adele Goldberg",
    "Dennis Ritchie",
    "Karen Sparck Jones",
    "Robin Milner",
    "Sophie Wilson",
    "Whitfield Diffie",
    "Hedy Lamarr",
    "Vint Cerf",
    "Jean Bartik",
    "Butler Lampson",
    "Mary Shaw",
    "Ivan Sutherland",
];

/// Seeds the demo's workflows, relative to the database clock, and says why each is there.
async fn cast(store: &Store, now: DateTime<Utc>) -> Result<BTreeMap<Uuid, Cast>, Error> {
    const HOUR: f64 = 3600.0;
    const DAY: f64 = 24.0 * HOUR;
    let inside = zones_between(now, 9, 19);
    let outside = zones_between(now, 21, 7);
    let zone = |list: &Vec<String>, i: usize| list[i % list.len()].clone();

    let mut seeds: Vec<(Seed, String)> = Vec::new();
    let mut add = |seed: Seed, story: &str| seeds.push((seed, story.to_owned()));
    for _ in 0..6 {
        add(
            Seed::pending(2.0 * HOUR),
            "requested 2h ago; the first reminder comes 24h after the request",
        );
    }
    for i in 0..3 {
        add(
            Seed {
                signer_time_zone: Some(zone(&inside, i)),
                ..Seed::pending(30.0 * HOUR)
            },
            "requested 30h ago, no reminder yet (firstAfter 24h); inside the window",
        );
    }
    for i in 0..3 {
        add(
            Seed {
                signer_time_zone: Some(zone(&outside, i)),
                ..Seed::pending(30.0 * HOUR)
            },
            "requested 30h ago, but it is night where the signer is",
        );
    }
    for i in 0..3 {
        add(
            Seed {
                signer_time_zone: Some(zone(&inside, i + 3)),
                reminders_sent: 1,
                last_reminded_ago: Some(50.0 * HOUR),
                ..Seed::pending(4.0 * DAY)
            },
            "reminded once 50h ago (every 48h)",
        );
    }
    for _ in 0..2 {
        add(
            Seed {
                signer_time_zone: Some(zone(&inside, 0)),
                reminders_sent: 3,
                last_reminded_ago: Some(30.0 * HOUR),
                ..Seed::pending(7.0 * DAY)
            },
            "3 of 3 reminders sent, the last 30h ago, still unsigned (escalation after 24h)",
        );
    }
    for i in 0..2 {
        add(
            Seed {
                signer_time_zone: Some(zone(&inside, i + 1)),
                reminders_sent: 3,
                last_reminded_ago: Some(20.0 * HOUR),
                ..Seed::pending(12.5 * DAY)
            },
            "deadline in 36h (timeout 14d); the warning comes 48h before it",
        );
    }
    for _ in 0..3 {
        add(
            Seed {
                reminders_sent: 3,
                last_reminded_ago: Some(3.0 * DAY),
                ..Seed::pending(15.0 * DAY)
            },
            "requested 15 days ago: past the 14-day timeout",
        );
    }
    add(
        Seed {
            deadline_in: Some(-HOUR),
            ..Seed::pending(3.0 * DAY)
        },
        "its own deadline_at passed an hour ago",
    );
    for status in ["signed", "declined", "cancelled"] {
        add(
            Seed {
                status: status.into(),
                ..Seed::pending(20.0 * DAY)
            },
            "not pending: Signet leaves it alone",
        );
    }

    let mut cast = BTreeMap::new();
    let mut rows = Vec::new();
    for ((mut seed, story), name) in seeds.into_iter().zip(NAMES) {
        seed.signer_name = Some(name.to_owned());
        seed.signer_email = format!("{}@example.com", name.to_lowercase().replace(' ', "."));
        cast.insert(
            seed.id,
            Cast {
                name,
                zone: seed.signer_time_zone.clone(),
                story,
            },
        );
        rows.push(seed);
    }
    seed(store, &rows).await?;
    Ok(cast)
}

/// The URL without its password, for the report: the user-info password and a `password`
/// query parameter (libpq's and sqlx's other way of giving it) are masked; a URL that does not
/// parse is not shown at all.
fn redact(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return "the database".to_owned();
    };
    let in_user_info = parsed.password().is_some();
    let in_query = parsed
        .query_pairs()
        .any(|(k, _)| k.eq_ignore_ascii_case("password"));
    if !in_user_info && !in_query {
        return url.to_owned();
    }
    if in_user_info {
        let _ = parsed.set_password(Some("***"));
    }
    if in_query {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") {
                    "***".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    // Keep `***` readable rather than percent-encoded.
    parsed.to_string().replace("%2A%2A%2A", "***")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_masks_every_password() {
        assert_eq!(
            redact("postgres://u:secret@db:5432/app?sslmode=require"),
            "postgres://u:***@db:5432/app?sslmode=require"
        );
        assert_eq!(
            redact("postgres://u@db/app?password=secret&sslmode=require"),
            "postgres://u@db/app?password=***&sslmode=require"
        );
        assert_eq!(redact("sqlite:///tmp/demo.db"), "sqlite:///tmp/demo.db");
        assert_eq!(redact("postgres://u:secret@db:99999/app"), "the database");
    }

    #[test]
    fn there_are_always_zones_inside_and_outside_the_window() {
        let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        // Every quarter hour of a year, across every DST change.
        for quarter in 0..(366 * 24 * 4) {
            let now = start + chrono::Duration::minutes(15 * quarter);
            assert!(zones_between(now, 9, 19).len() >= 6, "{now}");
            assert!(zones_between(now, 21, 7).len() >= 3, "{now}");
        }
    }

    #[test]
    fn the_demo_policy_is_valid() {
        // Everything a cluster would check, not only what the demo's own parse checks.
        let document = crate::manifests::parse_documents(POLICY).unwrap().remove(0);
        let verdict = crate::admission::Admission::new().check(document);
        assert_eq!(verdict.errors, [], "examples/demo.yaml");
        let spec = policy().spec().clone();
        assert!(spec.reminders.is_some() && spec.timeout.is_some());
    }
}
