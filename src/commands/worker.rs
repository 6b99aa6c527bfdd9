//! `signet send-reminders`, `signet check-timeouts` and `signet plan`: load the policy (env
//! `SIGNET_POLICY` as JSON, or a YAML file) and parse it once ([`Policy::parse`]: the API server
//! already admitted it, so no schema or CEL is run here), find the database URL, then run or
//! plan. A run ends with one JSON summary line on stdout.
//! Exit codes: 0 the run completed, 1 it failed (a transient error aborted it, a channel rejected
//! it, or it was interrupted by SIGTERM), 2 configuration error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value, json};

use crate::crd::{RunOutcome, SignaturePolicy, SignaturePolicySpec};
use crate::manifests::read_documents;
use crate::notify::{self, EnvLookup, HttpTimeouts, log::SharedWriter};
use crate::policy::{FieldError, Policy, Section};
use crate::store::{ConnectOptions, Store};
use crate::worker::report::{self, ReportArgs, ReportTarget, SectionRun};
use crate::worker::{
    self, DeliveryCounts, Error, Run, RunOptions, RunSummary, Stop, TimeoutSummary, Timeouts,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Where the policy and the database come from (shared by `send-reminders` and `plan`).
#[derive(Clone, Debug, clap::Args)]
pub struct PolicyArgs {
    /// The policy as JSON: the spec, or the whole SignaturePolicy (the controller sets this).
    #[arg(
        long,
        env = "SIGNET_POLICY",
        hide_env_values = true,
        conflicts_with = "policy_file"
    )]
    pub policy: Option<String>,

    /// A policy file (YAML or JSON, one SignaturePolicy), instead of `--policy`.
    #[arg(long, env = "SIGNET_POLICY_FILE")]
    pub policy_file: Option<PathBuf>,

    /// Database URL; default: the environment variable named by spec.database.urlSecretRef.
    #[arg(long, env = "SIGNET_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

/// The options of a worker run (`send-reminders` and `check-timeouts` take the same).
#[derive(Clone, Debug, clap::Args)]
pub struct WorkerRunArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub policy: PolicyArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub run: RunArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub report: ReportArgs,
}

/// `signet send-reminders` options.
pub type SendRemindersArgs = WorkerRunArgs;

/// `signet check-timeouts` options.
pub type CheckTimeoutsArgs = WorkerRunArgs;

/// How a run works through its rows (both workers).
#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// How long a claimed delivery is this run's before another run may retry it.
    #[arg(long, env = "SIGNET_LEASE", default_value = "15m")]
    pub lease: crate::duration::Duration,

    /// Workflows per page and claim (per timeout chunk for check-timeouts).
    #[arg(long, env = "SIGNET_BATCH_SIZE", default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub batch_size: i64,

    /// Sends in flight at most.
    #[arg(long, env = "SIGNET_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,

    /// The longest one try of a send may take, response included (the HTTP client's total
    /// timeout); a send that times out is retried, and counted as a possible duplicate.
    #[arg(long, env = "SIGNET_SEND_TIMEOUT", default_value = "30s")]
    pub send_timeout: crate::duration::Duration,

    /// After SIGTERM, how long sends in flight may take to finish; those still unanswered are
    /// retried by the next run (as possible duplicates). Keep it well under the pod's
    /// terminationGracePeriodSeconds (30s by default).
    #[arg(long, env = "SIGNET_SHUTDOWN_GRACE", default_value = "10s")]
    pub shutdown_grace: crate::duration::Duration,
}

/// How `plan` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanOutput {
    /// One line per delivery, then totals per channel.
    Table,
    /// One JSON document.
    Json,
}

/// `signet plan` options.
#[derive(Clone, Debug, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub policy: PolicyArgs,

    /// Output format.
    #[arg(short = 'o', long, env = "SIGNET_PLAN_OUTPUT", value_enum, default_value_t = PlanOutput::Table)]
    pub output: PlanOutput,
}

/// Reads and parses the policy; the error is for a person (exit code 2).
pub fn load_policy(args: &PolicyArgs) -> Result<Policy, String> {
    let value = match (&args.policy, &args.policy_file) {
        (Some(json), _) => serde_json::from_str(json)
            .map_err(|e| format!("SIGNET_POLICY is not valid JSON: {e}"))?,
        (None, Some(file)) => read_policy_file(file)?,
        (None, None) => {
            return Err("no policy: set SIGNET_POLICY (JSON) or --policy-file".to_owned());
        }
    };
    let spec = decode_spec(value).map_err(|e| invalid(&[e]))?;
    Policy::parse(&spec).map_err(|errors| invalid(&errors))
}

/// The spec of a whole SignaturePolicy, or a bare spec (what the controller passes).
fn decode_spec(value: Value) -> Result<SignaturePolicySpec, FieldError> {
    let decode_error = |prefix: &str, err: serde_path_to_error::Error<serde_json::Error>| {
        let path = err.path().to_string();
        let path = match (prefix, path.as_str()) {
            (prefix, ".") => prefix.to_owned(),
            ("", path) => path.to_owned(),
            (prefix, path) => format!("{prefix}.{path}"),
        };
        FieldError::new(path, err.inner().to_string())
    };
    let whole = value.get("spec").is_some() || value.get("apiVersion").is_some();
    if !whole {
        return serde_path_to_error::deserialize(value).map_err(|e| decode_error("spec", e));
    }
    crate::crd::expect_policy(&value).map_err(|message| FieldError::new("", message))?;
    serde_path_to_error::deserialize::<_, SignaturePolicy>(value)
        .map(|policy| policy.spec)
        .map_err(|e| decode_error("", e))
}

fn invalid(errors: &[FieldError]) -> String {
    let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
    format!("the policy is invalid:\n{}", lines.join("\n"))
}

fn read_policy_file(file: &Path) -> Result<Value, String> {
    if !file.is_file() {
        return Err(format!("{}: no such file", file.display()));
    }
    let mut documents = read_documents(file);
    match documents.len() {
        1 => documents
            .remove(0)
            .content
            .map_err(|e| format!("{}: {e}", file.display())),
        n => Err(format!(
            "{}: expected one SignaturePolicy, found {n} documents",
            file.display()
        )),
    }
}

/// The database URL: `--database-url`, else the secret's environment variable.
pub fn database_url(
    args: &PolicyArgs,
    spec: &SignaturePolicySpec,
    env: EnvLookup<'_>,
) -> Result<String, String> {
    if let Some(url) = args.database_url.as_ref().filter(|u| !u.is_empty()) {
        return Ok(url.clone());
    }
    notify::secret(
        env,
        &spec.database.url_secret_ref,
        "spec.database.urlSecretRef",
    )
    .map_err(|e| format!("{e}; or pass --database-url / SIGNET_DATABASE_URL"))
}

async fn connect(url: &str, spec: &SignaturePolicySpec, max: u32) -> Result<Store, Error> {
    Ok(Store::connect(
        url,
        &ConnectOptions {
            schema: spec.database.schema.clone(),
            create_sqlite_file: false,
            max_connections: max,
        },
    )
    .await?)
}

impl RunArgs {
    fn options(&self) -> RunOptions {
        RunOptions {
            lease: self.lease.to_std(),
            batch_size: self.batch_size,
            concurrency: usize::from(self.concurrency),
            send_timeout: self.send_timeout.to_std(),
            shutdown_grace: self.shutdown_grace.to_std(),
            ..RunOptions::default()
        }
    }

    fn http_timeouts(&self) -> HttpTimeouts {
        HttpTimeouts {
            total: self.send_timeout.to_std(),
            ..HttpTimeouts::default()
        }
    }
}

/// `signet send-reminders`: one run; writes the summary line to `out`; returns the exit code.
pub async fn send_reminders(args: &SendRemindersArgs, env: EnvLookup<'_>, out: SharedWriter) -> u8 {
    let target = ReportTarget::from_env(&args.report, env);
    let started = (Instant::now(), now());
    let result = async {
        let (policy, url, channels) =
            prepare(&args.policy, &args.run, env, &out, Section::Reminders)?;
        let run = Run::new(&policy, &channels, args.run.options())?.with_stop(on_sigterm());
        let store = connect(&url, policy.spec(), 4).await?;
        let summary = run.send_reminders(&store).await;
        store.close().await;
        summary
    }
    .await;
    conclude(
        &target,
        started,
        result,
        |summary: &RunSummary| &summary.deliveries,
        SectionRun::reminders,
        &out,
    )
    .await
}

/// `signet check-timeouts`: one run; writes the summary line to `out`; returns the exit code.
pub async fn check_timeouts(args: &CheckTimeoutsArgs, env: EnvLookup<'_>, out: SharedWriter) -> u8 {
    let target = ReportTarget::from_env(&args.report, env);
    let started = (Instant::now(), now());
    let result = async {
        let (policy, url, channels) =
            prepare(&args.policy, &args.run, env, &out, Section::Timeouts)?;
        let run = Timeouts::new(&policy, &channels, args.run.options())?.with_stop(on_sigterm());
        let store = connect(&url, policy.spec(), 4).await?;
        let summary = run.check_timeouts(&store).await;
        store.close().await;
        summary
    }
    .await;
    conclude(
        &target,
        started,
        result,
        |summary: &TimeoutSummary| &summary.alerts,
        SectionRun::timeouts,
        &out,
    )
    .await
}

/// The policy, the database URL and the channels of a section's run: everything checked
/// (secrets read) before connecting, so a configuration error never waits on the database.
fn prepare(
    args: &PolicyArgs,
    run: &RunArgs,
    env: EnvLookup<'_>,
    out: &SharedWriter,
    section: Section,
) -> Result<(Policy, String, notify::Channels), Error> {
    let policy = load_policy(args).map_err(Error::Config)?;
    let spec = policy.spec();
    let url = database_url(args, spec, env).map_err(Error::Config)?;
    let names: Vec<&str> = policy.section_channels(section).into_iter().collect();
    let http =
        notify::http_client(run.http_timeouts()).map_err(|e| Error::Config(e.to_string()))?;
    let channels = notify::build_channels(spec, &names, env, &http, out)
        .map_err(|e| Error::Config(e.to_string()))?;
    Ok((policy, url, channels))
}

/// Ends a run: prints its summary line, publishes it (status, termination message, Pushgateway)
/// and returns the exit code.
async fn conclude<S: serde::Serialize + Default>(
    target: &ReportTarget,
    started: (Instant, Time),
    result: Result<S, Error>,
    counts: impl Fn(&S) -> &DeliveryCounts,
    section_run: impl Fn(String, Time, Time, RunOutcome, &S) -> SectionRun,
    out: &SharedWriter,
) -> u8 {
    let ended = match &result {
        Ok(summary) => Ended::Ran {
            counts: counts(summary),
            summary: serde_json::to_value(summary).expect("summaries serialize"),
        },
        Err(err) => Ended::Aborted(err),
    };
    let (line, outcome, reason, code) = finish(started.0, ended, out);
    let summary = result.unwrap_or_default();
    let run =
        section_run(target.job.clone(), started.1, now(), outcome, &summary).with_reason(reason);
    report::publish(target, &run, &line).await;
    code
}

/// How a run ended, for [`finish`].
enum Ended<'a> {
    /// It ran to its end: its counts and its summary line.
    Ran {
        counts: &'a DeliveryCounts,
        summary: Value,
    },
    /// An error aborted it.
    Aborted(&'a Error),
}

/// Writes the summary line; returns it with the run's outcome, its reason and message (for
/// `lastRun`) and the exit code.
fn finish(
    started: Instant,
    ended: Ended<'_>,
    out: &SharedWriter,
) -> (Value, RunOutcome, Option<(&'static str, String)>, u8) {
    let (line, outcome, reason, code) = match ended {
        Ended::Ran { counts, summary } => {
            let mut line = summary;
            let outcome = counts.outcome();
            line["outcome"] = json!(outcome);
            let reason = counts.failure();
            if let Some((reason, message)) = &reason {
                tracing::error!(reason, "{message}");
                line["reason"] = json!(reason);
            }
            // A rejected channel or an interruption fails the Job, so Kubernetes' own signals
            // (the Job's Failed condition, kube-state-metrics) see it too.
            let code = if outcome.completed() { 0 } else { 1 };
            (line, outcome, reason, code)
        }
        Ended::Aborted(err) => {
            tracing::error!(reason = err.reason(), "{err}");
            let outcome = if err.is_configuration() {
                RunOutcome::ConfigError
            } else {
                RunOutcome::Failed
            };
            let line = json!({
                "outcome": outcome,
                "reason": err.reason(),
                "error": err.to_string(),
                "durationMs": started.elapsed().as_millis() as u64,
            });
            (
                line,
                outcome,
                Some((err.reason(), err.to_string())),
                err.exit_code(),
            )
        }
    };
    let mut writer = out.lock().unwrap_or_else(|e| e.into_inner());
    let _ = writeln!(writer, "{line}").and_then(|()| writer.flush());
    (line, outcome, reason, code)
}

/// A [`Stop`] requested when the process gets SIGTERM (what the kubelet sends a pod it stops:
/// a Job deleted, a node drained, `activeDeadlineSeconds` reached) or SIGINT.
fn on_sigterm() -> Stop {
    let stop = Stop::default();
    let requested = stop.clone();
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            () = terminate => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::warn!(
            "asked to stop: claiming nothing more, finishing the sends in flight, leaving the rest due for the next run"
        );
        requested.request();
    });
    stop
}

/// The current instant as the status writes it.
fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// `signet plan`: prints what a run would do now; returns the exit code.
pub async fn plan(args: &PlanArgs, env: EnvLookup<'_>, out: &mut impl Write) -> u8 {
    let result = async {
        let policy = load_policy(&args.policy).map_err(Error::Config)?;
        let url = database_url(&args.policy, policy.spec(), env).map_err(Error::Config)?;
        let store = connect(&url, policy.spec(), 1).await?;
        let plan = worker::plan::plan(&store, &policy, 1000).await;
        store.close().await;
        plan
    }
    .await;
    match result {
        Ok(plan) => {
            let written = match args.output {
                PlanOutput::Json => plan.write_json(out),
                PlanOutput::Table => plan.write_table(out),
            };
            if let Err(err) = written {
                eprintln!("signet: cannot write the plan: {err}");
                return 1;
            }
            0
        }
        Err(err) => {
            eprintln!("signet: {err}");
            err.exit_code()
        }
    }
}
