//! Every example in `examples/` passes every check; every file in `examples/invalid/` is refused
//! with exactly the problems its `# expect:` lines state.

use std::path::{Path, PathBuf};

use signet::admission::Admission;
use signet::manifests::parse_documents;

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn problems(admission: &Admission, file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let documents = parse_documents(&text).unwrap();
    assert_eq!(
        documents.len(),
        1,
        "{}: one policy per example",
        file.display()
    );
    admission
        .check(documents.into_iter().next().unwrap())
        .errors
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn valid_examples_pass_every_check() {
    let admission = Admission::new();
    let files = yaml_files("examples");
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "demo.yaml",
            "full.yaml",
            "minimal.yaml",
            "timeouts-only.yaml"
        ]
    );
    for file in &files {
        assert_eq!(
            problems(&admission, file),
            Vec::<String>::new(),
            "{}",
            file.display()
        );
    }
}

#[test]
fn invalid_examples_fail_for_their_stated_reason_only() {
    let admission = Admission::new();
    let files = yaml_files("examples/invalid");
    assert!(
        files.len() >= 15,
        "at least 15 invalid examples, found {}",
        files.len()
    );
    let mut stages = std::collections::BTreeMap::<String, usize>::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let stage = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# Refused ("))
            .and_then(|l| l.split_once(')'));
        let stage = stage
            .unwrap_or_else(|| {
                panic!(
                    "{}: first line must be `# Refused (<stage>): why`",
                    file.display()
                )
            })
            .0;
        *stages.entry(stage.to_owned()).or_default() += 1;
        let expected: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(str::to_owned)
            .collect();
        assert!(
            !expected.is_empty(),
            "{}: no `# expect:` line",
            file.display()
        );
        assert_eq!(problems(&admission, file), expected, "{}", file.display());
    }
    for stage in ["schema", "cel", "semantic"] {
        assert!(
            stages.get(stage).copied().unwrap_or(0) >= 3,
            "at least three examples refused by {stage}: {stages:?}"
        );
    }
}

#[test]
fn defaults_are_applied_like_the_api_server_does() {
    let admission = Admission::new();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/minimal.yaml");
    let value = parse_documents(&std::fs::read_to_string(file).unwrap())
        .unwrap()
        .remove(0);
    let policy = admission.check(value).policy.expect("decoded");
    let reminders = policy.spec.reminders.expect("reminders");
    assert_eq!(policy.spec.time_zone, "UTC");
    assert_eq!(reminders.schedule, "*/30 * * * *");
    assert_eq!(reminders.first_after.as_secs(), 24 * 3600);
    assert_eq!(reminders.every.as_secs(), 48 * 3600);
    assert_eq!(reminders.max_reminders, 3);
    assert!(!policy.spec.suspend);
}
