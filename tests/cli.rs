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

/// The subcommands `signet --help` lists (not `help` itself).
fn subcommands() -> Vec<String> {
    let help = String::from_utf8(signet(&["--help"]).stdout).unwrap();
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(String::from)
        .collect()
}

/// Every option and argument a `--help` page lists, with the text that describes it.
fn described_options(help: &str) -> Vec<(String, String)> {
    let mut options: Vec<(String, String)> = Vec::new();
    let mut in_list = false;
    for line in help.lines() {
        if line == "Options:" || line == "Arguments:" {
            in_list = true;
            continue;
        }
        if !in_list {
            continue;
        }
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        // Entries start at a two-space indent (`  -f, --file`, `      --flag`, `  [FILES]...`);
        // their descriptions are indented further.
        let entry = (2..=6).contains(&indent)
            && (trimmed.starts_with('-') || trimmed.starts_with('[') || trimmed.starts_with('<'));
        if entry {
            options.push((trimmed.to_owned(), String::new()));
        } else if let Some((_, text)) = options.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    options
}

#[test]
fn every_option_has_an_environment_fallback() {
    let commands = subcommands();
    assert!(commands.len() >= 9, "{commands:?}");
    let mut pages = vec![("signet".to_owned(), signet(&["--help"]))];
    for command in &commands {
        pages.push((format!("signet {command}"), signet(&[command, "--help"])));
    }
    let mut checked = 0;
    let mut missing = Vec::new();
    for (page, output) in pages {
        assert_eq!(output.status.code(), Some(0), "{page} --help");
        let help = String::from_utf8(output.stdout).unwrap();
        for (option, text) in described_options(&help) {
            if option.contains("--help") || option.contains("--version") {
                continue;
            }
            checked += 1;
            if !text.contains("[env: SIGNET_") {
                missing.push(format!("{page}: {option}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "options without a SIGNET_ variable: {missing:#?}"
    );
    assert!(
        checked > 40,
        "only {checked} options were found on the help pages"
    );

    // And the fallback is read: settings given only as variables take effect.
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
