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
pub mod due;
pub mod duration;
pub mod notify;
pub mod schedule;
pub mod store;
pub mod templates;
pub mod validation;
pub mod worker;
