//! The `signet` binary as a user runs it: exit codes and what it prints.

use std::process::{Command, Output};

fn signet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_signet"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("SIGNET_LOG_LEVEL")
        .output()
        .expect("signet runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn crd_prints_the_checked_in_definition() {
    let output = signet(&["crd"]);
    assert!(output.status.success());
    assert_eq!(
        stdout(&output),
        std::fs::read_to_string("crds/signaturepolicies.signet.dev.yaml").unwrap()
    );
}

#[test]
fn validate_accepts_the_examples_directory() {
    let output = signet(&["validate", "-f", "examples/"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        text.contains("examples/minimal.yaml: enrollment/enrollment-agreements valid"),
        "{text}"
    );
    assert!(
        text.ends_with("4 documents checked: 4 valid, 0 invalid\n"),
        "{text}"
    );
}

#[test]
fn validate_reports_every_problem_of_every_file_and_exits_1() {
    let output = signet(&[
        "validate",
        "-f",
        "examples/invalid/bad-cron.yaml",
        "-f",
        "examples/invalid/unknown-field.yaml",
        "-f",
        "examples/minimal.yaml",
    ]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("examples/invalid/bad-cron.yaml: enrollment/bad-cron invalid, 1 problem\n  spec.reminders.schedule: \"*/70 * * * *\" is not a valid cron schedule: minute 70 is out of range (0-59)\n"), "{text}");
    assert!(
        text.contains("  spec.reminders.frequency: unknown field \"frequency\"\n"),
        "{text}"
    );
    assert!(
        text.ends_with("3 documents checked: 1 valid, 2 invalid\n"),
        "{text}"
    );
}

#[test]
fn validate_json_output_and_multi_document_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("two.yaml");
    let minimal = std::fs::read_to_string("examples/minimal.yaml").unwrap();
    std::fs::write(
        &file,
        format!(
            "{minimal}---\n{}",
            minimal.replace("signer-email]", "nobody]")
        ),
    )
    .unwrap();
    let output = signet(&["validate", "-o", "json", "-f", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let reports: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(reports[0]["valid"], true);
    assert_eq!(reports[1]["document"], 2);
    assert_eq!(reports[1]["errors"][0]["path"], "spec.reminders.channels");
    assert_eq!(
        reports[1]["errors"][0]["message"],
        "no channel named nobody in spec.channels"
    );
}

#[test]
fn validate_reports_missing_files_and_yaml_errors() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "spec: [unclosed\n").unwrap();
    let output = signet(&[
        "validate",
        "-f",
        "does-not-exist.yaml",
        "-f",
        broken.to_str().unwrap(),
    ]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text.contains("does-not-exist.yaml: invalid, 1 problem\n  no such file or directory"),
        "{text}"
    );
    assert!(
        text.contains("broken.yaml: invalid, 1 problem\n  not valid YAML"),
        "{text}"
    );
}

#[test]
fn every_option_has_an_environment_fallback() {
    let output = Command::new(env!("CARGO_BIN_EXE_signet"))
        .args(["validate"])
        .env("SIGNET_VALIDATE_FILES", "examples/minimal.yaml")
        .env("SIGNET_VALIDATE_OUTPUT", "json")
        .env("SIGNET_LOG_FORMAT", "json")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(serde_json::from_slice::<serde_json::Value>(&output.stdout).is_ok());
    let bad = signet(&["--log-format", "xml", "crd"]);
    assert_eq!(bad.status.code(), Some(2), "usage errors exit 2");
}
