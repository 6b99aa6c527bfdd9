//! The `signet` binary: parse the command line, set up logging, dispatch to one function per
//! subcommand in `signet::commands`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use signet::commands;

/// Signet keeps e-signature workflows moving: reminders, timeouts and alerts from a SignaturePolicy.
#[derive(Parser, Debug)]
#[command(name = "signet", version, about, propagate_version = true)]
struct Cli {
    /// Log level: error, warn, info, debug or trace (or a tracing filter such as `signet=debug`).
    #[arg(long, env = "SIGNET_LOG_LEVEL", default_value = "info", global = true)]
    log_level: String,

    /// Log format.
    #[arg(long, env = "SIGNET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the SignaturePolicy CustomResourceDefinition (YAML) generated from the Rust types.
    Crd,
    /// Check policy files offline: CRD schema (unknown fields included), CEL rules and semantic checks.
    Validate {
        /// Policy files or directories (directories: their .yaml, .yml and .json files).
        #[arg(
            short = 'f',
            long = "filename",
            env = "SIGNET_VALIDATE_FILES",
            value_delimiter = ',',
            required = true
        )]
        files: Vec<PathBuf>,

        /// Also read subdirectories of the directories given.
        #[arg(short = 'R', long, env = "SIGNET_VALIDATE_RECURSIVE")]
        recursive: bool,

        /// Output format.
        #[arg(short = 'o', long, env = "SIGNET_VALIDATE_OUTPUT", value_enum, default_value_t = commands::validate::OutputFormat::Text)]
        output: commands::validate::OutputFormat,
    },
    /// Run the operator: reconcile SignaturePolicies into worker CronJobs, serve health and metrics.
    Controller(ControllerArgs),
    /// Print, offline, the CronJobs and RBAC the controller would apply for a policy file.
    Render {
        /// The policy file.
        #[arg(short = 'f', long = "filename", env = "SIGNET_RENDER_FILE")]
        file: PathBuf,

        /// Namespace for a policy that names none.
        #[arg(
            short = 'n',
            long,
            env = "SIGNET_RENDER_NAMESPACE",
            default_value = "default"
        )]
        namespace: String,

        #[command(flatten)]
        worker: WorkerArgs,
    },
    /// Apply the embedded SQL migrations (PostgreSQL or SQLite); idempotent.
    Migrate(commands::migrate::MigrateArgs),
    /// One reminders run: remind due signers, expiry warnings, escalations; then exit.
    SendReminders(commands::worker::SendRemindersArgs),
    /// One timeouts run: mark expired workflows timed_out, alert; then exit.
    CheckTimeouts(commands::worker::CheckTimeoutsArgs),
    /// The whole worker loop on a temporary SQLite database: seed, plan, remind, time out, report.
    Demo(commands::demo::DemoArgs),
    /// Show what a reminders run would do right now, changing nothing.
    Plan(commands::worker::PlanArgs),
}

#[derive(clap::Args, Debug)]
struct ControllerArgs {
    /// Namespaces to watch (repeat or comma-separate); all namespaces when none is given.
    #[arg(long = "namespace", env = "SIGNET_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,

    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "SIGNET_METRICS_BIND_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    metrics_bind_address: std::net::SocketAddr,

    /// Elect a leader through a Lease so only one replica reconciles; `--leader-election=false` for a single replica.
    #[arg(long, env = "SIGNET_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,

    /// Namespace of the leader Lease (default: the pod's own namespace).
    #[arg(long, env = "SIGNET_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,

    /// Name of the leader Lease.
    #[arg(
        long,
        env = "SIGNET_LEADER_ELECTION_LEASE_NAME",
        default_value = "signet-controller"
    )]
    leader_election_lease_name: String,

    /// This replica's identity in the Lease (default: the host name, which in a pod is its name).
    #[arg(long, env = "SIGNET_LEADER_ELECTION_IDENTITY")]
    leader_election_identity: Option<String>,

    #[command(flatten)]
    worker: WorkerArgs,
}

impl ControllerArgs {
    fn config(self) -> signet::controller::ControllerConfig {
        let leader_election = self
            .leader_election
            .then(|| signet::controller::LeaderElection {
                namespace: self.leader_election_namespace.unwrap_or_else(own_namespace),
                lease_name: self.leader_election_lease_name,
                identity: self.leader_election_identity.unwrap_or_else(host_name),
            });
        signet::controller::ControllerConfig {
            namespaces: self.namespaces,
            settings: self.worker.settings(),
            metrics_address: self.metrics_bind_address,
            leader_election,
        }
    }
}

/// The namespace of the pod this runs in, or `default` outside a cluster.
fn own_namespace() -> String {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .map(|ns| ns.trim().to_owned())
        .unwrap_or_else(|_| "default".to_owned())
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("signet-{}", std::process::id()))
}

/// How the worker Jobs run; shared by `controller` and `render`.
#[derive(clap::Args, Debug)]
struct WorkerArgs {
    /// Image of the worker Jobs (the controller's own image).
    #[arg(long, env = "SIGNET_WORKER_IMAGE", default_value = signet::constants::DEFAULT_WORKER_IMAGE)]
    worker_image: String,

    /// imagePullPolicy of the worker container (Always, IfNotPresent, Never); Kubernetes' default if unset.
    #[arg(long, env = "SIGNET_WORKER_IMAGE_PULL_POLICY", value_parser = ["Always", "IfNotPresent", "Never"])]
    worker_image_pull_policy: Option<String>,

    /// Prometheus Pushgateway the workers push their run metrics to (http or https URL).
    #[arg(long, env = "SIGNET_WORKER_PUSHGATEWAY_URL", value_parser = pushgateway_url)]
    worker_pushgateway_url: Option<String>,
}

/// An http(s) URL, checked here so a typo fails the controller's start, not every worker run.
fn pushgateway_url(value: &str) -> Result<String, String> {
    match reqwest::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(value.to_owned()),
        Ok(url) => Err(format!("scheme {:?} is not http or https", url.scheme())),
        Err(err) => Err(err.to_string()),
    }
}

impl WorkerArgs {
    fn settings(self) -> signet::controller::build::WorkerSettings {
        signet::controller::build::WorkerSettings {
            image: self.worker_image,
            image_pull_policy: self.worker_image_pull_policy,
            pushgateway_url: self.worker_pushgateway_url,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(err) = init_logging(&cli.log_level, cli.log_format) {
        eprintln!("signet: {err}");
        return ExitCode::from(2);
    }
    match run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("signet: {}", signet::error_chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match command {
        Command::Crd => {
            commands::crd(&mut stdout)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate {
            files,
            recursive,
            output,
        } => {
            let reports = commands::validate::check_paths(&files, recursive);
            let valid = commands::validate::print(&reports, output, &mut stdout)?;
            Ok(if valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Controller(args) => {
            runtime()?.block_on(signet::controller::run(args.config()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Render {
            file,
            namespace,
            worker,
        } => {
            commands::render::render(&file, &namespace, &worker.settings(), &mut stdout)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate(args) => Ok(ExitCode::from(
            runtime()?.block_on(commands::migrate::migrate(&args, &mut stdout)),
        )),
        Command::SendReminders(args) => {
            drop(stdout);
            let env = |name: &str| std::env::var(name).ok();
            Ok(ExitCode::from(runtime()?.block_on(
                commands::worker::send_reminders(&args, &env, signet::notify::log::stdout()),
            )))
        }
        Command::CheckTimeouts(args) => {
            drop(stdout);
            let env = |name: &str| std::env::var(name).ok();
            Ok(ExitCode::from(runtime()?.block_on(
                commands::worker::check_timeouts(&args, &env, signet::notify::log::stdout()),
            )))
        }
        Command::Demo(args) => Ok(ExitCode::from(
            runtime()?.block_on(commands::demo::demo(&args, &mut stdout)),
        )),
        Command::Plan(args) => {
            let env = |name: &str| std::env::var(name).ok();
            Ok(ExitCode::from(runtime()?.block_on(commands::worker::plan(
                &args,
                &env,
                &mut stdout,
            ))))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|err| anyhow::anyhow!("--log-level {level:?} is not a level or filter: {err}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}
