//! `signet validate`: check policy files offline with every check a cluster and the controller
//! would apply, and report every problem of every document with its field path.

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use crate::admission::Admission;
use crate::manifests::{manifest_files, read_documents};
use crate::policy::validate::FieldError;

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One line per document and one per problem.
    Text,
    /// One JSON array with an entry per document.
    Json,
}

/// The verdict on one document, as reported.
#[derive(Debug, Serialize)]
pub struct DocumentReport {
    /// File the document came from.
    pub file: String,
    /// Position of the document in its file, from 1.
    pub document: usize,
    /// `namespace/name` or `name`, when the document has one.
    pub name: Option<String>,
    /// Whether every check passed.
    pub valid: bool,
    /// Every problem found.
    pub errors: Vec<ReportedError>,
}

/// One problem, as reported.
#[derive(Debug, Serialize)]
pub struct ReportedError {
    /// Field path, empty for the document as a whole.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl From<FieldError> for ReportedError {
    fn from(e: FieldError) -> Self {
        Self {
            path: e.path,
            message: e.message,
        }
    }
}

/// Checks every document of every file under `paths`.
pub fn check_paths(paths: &[PathBuf], recursive: bool) -> Vec<DocumentReport> {
    let admission = Admission::new();
    let mut reports = Vec::new();
    for file in manifest_files(paths, recursive) {
        let file = match file {
            Ok(file) => file,
            Err((path, message)) => {
                reports.push(failure(path.display().to_string(), 1, None, message));
                continue;
            }
        };
        for document in read_documents(&file) {
            let file_name = document.file.display().to_string();
            let value = match document.content {
                Ok(value) => value,
                Err(message) => {
                    reports.push(failure(file_name, document.index, None, message));
                    continue;
                }
            };
            let name = object_name(&value);
            let verdict = admission.check(value);
            reports.push(DocumentReport {
                file: file_name,
                document: document.index,
                name,
                valid: verdict.is_valid(),
                errors: verdict
                    .errors
                    .into_iter()
                    .map(ReportedError::from)
                    .collect(),
            });
        }
    }
    reports
}

fn failure(file: String, document: usize, name: Option<String>, message: String) -> DocumentReport {
    DocumentReport {
        file,
        document,
        name,
        valid: false,
        errors: vec![ReportedError {
            path: String::new(),
            message,
        }],
    }
}

fn object_name(value: &serde_json::Value) -> Option<String> {
    let metadata = value.get("metadata")?;
    let name = metadata
        .get("name")
        .or_else(|| metadata.get("generateName"))?
        .as_str()?;
    Some(match metadata.get("namespace").and_then(|n| n.as_str()) {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.to_owned(),
    })
}

/// Writes the reports; returns whether every document was valid.
pub fn print(
    reports: &[DocumentReport],
    format: OutputFormat,
    out: &mut impl Write,
) -> std::io::Result<bool> {
    let all_valid = !reports.is_empty() && reports.iter().all(|r| r.valid);
    match format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, reports)?;
            writeln!(out)?;
        }
        OutputFormat::Text => {
            for report in reports {
                let multi = reports.iter().filter(|r| r.file == report.file).count() > 1;
                let location = if multi {
                    format!("{} (document {})", report.file, report.document)
                } else {
                    report.file.clone()
                };
                let name = report
                    .name
                    .as_deref()
                    .map(|n| format!(" {n}"))
                    .unwrap_or_default();
                if report.valid {
                    writeln!(out, "{location}:{name} valid")?;
                    continue;
                }
                let count = report.errors.len();
                writeln!(
                    out,
                    "{location}:{name} invalid, {count} problem{}",
                    if count == 1 { "" } else { "s" }
                )?;
                for error in &report.errors {
                    if error.path.is_empty() {
                        writeln!(out, "  {}", error.message)?;
                    } else {
                        writeln!(out, "  {}: {}", error.path, error.message)?;
                    }
                }
            }
            let invalid = reports.iter().filter(|r| !r.valid).count();
            if reports.is_empty() {
                writeln!(out, "no policy files found")?;
            } else {
                writeln!(
                    out,
                    "{} document{} checked: {} valid, {invalid} invalid",
                    reports.len(),
                    if reports.len() == 1 { "" } else { "s" },
                    reports.len() - invalid
                )?;
            }
        }
    }
    Ok(all_valid)
}
