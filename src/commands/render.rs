//! `signet render`: print, offline, the objects the controller would apply for a policy file.

use std::io::Write;
use std::path::Path;

use crate::admission::Admission;
use crate::controller::build::{WorkerSettings, desired};
use crate::manifests::read_documents;
use crate::policy::ValidPolicy;

/// Why a file could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A document failed validation; every problem is listed.
    #[error("{file}: the policy is invalid:\n{problems}")]
    Invalid {
        /// The file.
        file: String,
        /// One problem per line.
        problems: String,
    },
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Io(#[from] std::io::Error),
}

/// Renders every policy in `file`, namespaced in `default_namespace` when it names none.
pub fn render(
    file: &Path,
    default_namespace: &str,
    settings: &WorkerSettings,
    out: &mut impl Write,
) -> Result<(), RenderError> {
    let admission = Admission::new();
    let invalid = |problems: Vec<String>| RenderError::Invalid {
        file: file.display().to_string(),
        problems: problems
            .iter()
            .map(|p| format!("  {p}"))
            .collect::<Vec<_>>()
            .join("\n"),
    };
    for document in read_documents(file) {
        let value = document.content.map_err(|e| invalid(vec![e]))?;
        let verdict = admission.check(value);
        if !verdict.is_valid() {
            return Err(invalid(
                verdict.errors.iter().map(ToString::to_string).collect(),
            ));
        }
        let (Some(mut policy), Some(core)) = (verdict.policy, verdict.parsed) else {
            return Err(invalid(vec!["the policy could not be decoded".to_owned()]));
        };
        policy
            .metadata
            .namespace
            .get_or_insert_with(|| default_namespace.to_owned());
        let valid = ValidPolicy::with_core(&policy, core)
            .map_err(|e| invalid(e.iter().map(ToString::to_string).collect()))?;
        let objects = desired(&valid, settings);
        writeln!(
            out,
            "# Objects Signet's controller applies for {}/{}.",
            valid.namespace, valid.name
        )?;
        writeln!(
            out,
            "# In a cluster each also carries an ownerReference to the policy (it needs the policy's uid)."
        )?;
        write_yaml(out, &objects.service_account)?;
        write_yaml(out, &objects.role)?;
        write_yaml(out, &objects.role_binding)?;
        for (_, cron_job) in &objects.cron_jobs {
            write_yaml(out, cron_job)?;
        }
    }
    Ok(())
}

fn write_yaml(out: &mut impl Write, object: &impl serde::Serialize) -> std::io::Result<()> {
    let yaml = serde_saphyr::to_string(object).map_err(std::io::Error::other)?;
    write!(out, "---\n{yaml}")
}
