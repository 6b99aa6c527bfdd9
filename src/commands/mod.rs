//! One function per subcommand; `main.rs` parses arguments and calls these.

pub mod demo;
pub mod migrate;
pub mod render;
pub mod validate;
pub mod worker;

use std::io::Write;

/// `signet crd`: print the CustomResourceDefinition generated from the Rust types.
pub fn crd(out: &mut impl Write) -> std::io::Result<()> {
    out.write_all(crate::crd::definition_yaml().as_bytes())
}
