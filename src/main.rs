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
    /// Apply the embedded SQL migrations (PostgreSQL or SQLite); idempotent.
    Migrate(commands::migrate::MigrateArgs),
    /// One reminders run: remind due signers, expiry warnings, escalations; then exit.
    SendReminders(commands::reminders::SendRemindersArgs),
    /// Show what a reminders run would do right now, changing nothing.
    Plan(commands::reminders::PlanArgs),
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
            eprintln!("signet: {err:#}");
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
        Command::Migrate(args) => Ok(ExitCode::from(
            runtime()?.block_on(commands::migrate::migrate(&args, &mut stdout)),
        )),
        Command::SendReminders(args) => {
            drop(stdout);
            let env = |name: &str| std::env::var(name).ok();
            Ok(ExitCode::from(runtime()?.block_on(
                commands::reminders::send_reminders(&args, &env, signet::notify::log::stdout()),
            )))
        }
        Command::Plan(args) => {
            let env = |name: &str| std::env::var(name).ok();
            Ok(ExitCode::from(runtime()?.block_on(
                commands::reminders::plan(&args, &env, &mut stdout),
            )))
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
