//! `signet migrate`: apply the embedded migrations (PostgreSQL or SQLite). Idempotent, and safe
//! when two pods run it at once (PostgreSQL advisory lock). Exit 0 done, 1 database failure,
//! 2 configuration error.

use std::io::Write;

use crate::store::{ConnectOptions, Store};

/// `signet migrate` options.
#[derive(Clone, Debug, clap::Args)]
pub struct MigrateArgs {
    /// Database URL: postgres://... or sqlite://FILE (created if missing).
    #[arg(long, env = "SIGNET_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// PostgreSQL schema for the tables (created if missing; used as the search path).
    #[arg(long, env = "SIGNET_DATABASE_SCHEMA")]
    pub schema: Option<String>,
}

/// Applies the migrations; returns the exit code.
pub async fn migrate(args: &MigrateArgs, out: &mut impl Write) -> u8 {
    let result = async {
        let store = Store::connect(
            &args.database_url,
            &ConnectOptions {
                schema: args.schema.clone(),
                create_sqlite_file: true,
                max_connections: 1,
            },
        )
        .await?;
        let migrated = store.migrate().await;
        store.close().await;
        migrated
    }
    .await;
    match result {
        Ok(()) => {
            let backend = if args.database_url.starts_with("sqlite:") {
                "SQLite"
            } else {
                "PostgreSQL"
            };
            let schema = args
                .schema
                .as_ref()
                .map(|s| format!(", schema {s}"))
                .unwrap_or_default();
            let _ = writeln!(out, "migrations applied ({backend}{schema})");
            0
        }
        Err(err) => {
            eprintln!("signet: {err}");
            if err.is_configuration() { 2 } else { 1 }
        }
    }
}
