//! `signet controller`: reconciles each SignaturePolicy into owned worker CronJobs and RBAC, as a
//! pipeline of named steps: validate (pure) → build desired objects (pure) → apply (server-side
//! apply, only what is not in place) → prune (by label) → run-now → status (only when it
//! changed) → events (on transitions).

mod apply;
pub mod build;
pub mod cache;
pub mod context;
pub mod delivering;
pub mod error;
mod events;
pub mod jobs;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod reconcile;
mod run_now;
pub mod runtime;
pub mod server;
pub mod staleness;
pub mod status;

pub use error::Error;
pub use runtime::{ControllerConfig, LeaderElection, RunError, run};
