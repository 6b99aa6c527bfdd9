//! Signet: a Kubernetes operator that makes sure e-signature workflows get signed or get closed.
//!
//! A `SignaturePolicy` ([`crd`]) becomes CronJobs that run Signet's own worker subcommands against
//! the application's database. This crate holds the policy types, their validation, and the CLI's
//! building blocks; `src/main.rs` only parses arguments and dispatches.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
pub mod commands;
pub mod constants;
pub mod controller;
pub mod crd;
pub mod duration;
pub mod manifests;
pub mod notify;
pub mod policy;
pub mod schedule;
pub mod store;
pub mod worker;

/// An error and its causes as one line, leaving out causes whose text it already shows.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
