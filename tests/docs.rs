//! The documentation holds together: every relative link in README.md, CONTRIBUTING.md and
//! docs/*.md names a file that exists, and every `#anchor` a heading of its target (GitHub's
//! slugs); the README stays a short front page linking every page of docs/; the module map's
//! diagram in CONTRIBUTING.md keeps the dependency rule `tests/module_graph.rs` enforces on the code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The documents whose links are checked, relative to the repository root.
fn documents() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("README.md"), PathBuf::from("CONTRIBUTING.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .expect("a docs/ directory")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .map(|path| Path::new("docs").join(path.file_name().unwrap()))
        .collect();
    pages.sort();
    assert!(pages.len() >= 8, "docs/ holds the pages: {pages:?}");
    files.extend(pages);
    files
}

fn read(relative: &Path) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(relative))
        .unwrap_or_else(|err| panic!("{}: {err}", relative.display()))
}

/// The lines outside fenced code blocks, with their 1-based numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match fence {
            Some(marker) if trimmed.starts_with(marker) => fence = None,
            Some(_) => {}
            None if trimmed.starts_with("```") => fence = Some("```"),
            None if trimmed.starts_with("~~~") => fence = Some("~~~"),
            None => lines.push((index + 1, line)),
        }
    }
    lines
}

/// A line without its inline code spans (a link written inside backticks is not a link).
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

/// The targets of the inline links `[text](target)` (and images) on the prose lines.
fn link_targets(text: &str) -> Vec<(usize, String)> {
    let mut targets = Vec::new();
    for (number, line) in prose_lines(text) {
        let line = without_code_spans(line);
        let mut rest = line.as_str();
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let end = after.find(')').unwrap_or_else(|| {
                panic!("line {number}: a link without its closing parenthesis: {line}")
            });
            // A title (`[t](path "title")`) is not part of the target.
            let target = after[..end].split_whitespace().next().unwrap_or("");
            targets.push((number, target.to_owned()));
            rest = &after[end..];
        }
    }
    targets
}

/// GitHub's anchor for a heading: lower case, markup and punctuation dropped (hyphens and
/// underscores kept), spaces turned into hyphens.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    // `[text](target)` shows as `text`.
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        match rest[open..].find("](") {
            Some(mid) => {
                let close = rest[open + mid..].find(')').map(|c| open + mid + c);
                let Some(close) = close else { break };
                text.push_str(&rest[..open]);
                text.push_str(&rest[open + 1..open + mid]);
                rest = &rest[close + 1..];
            }
            None => break,
        }
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown document's headings, numbered as GitHub numbers repeats.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(line[hashes..].trim().trim_end_matches('#'));
        let count = seen.entry(base.clone()).or_insert(0);
        anchors.insert(if *count == 0 {
            base.clone()
        } else {
            format!("{base}-{count}")
        });
        *count += 1;
    }
    anchors
}

/// `base/relative` with `.` and `..` resolved; `None` when it leaves the repository.
fn resolve(base: &Path, relative: &str) -> Option<PathBuf> {
    let mut parts: Vec<Component> = base.components().collect();
    for part in Path::new(relative).components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Normal(_) => parts.push(part),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
}

/// Every broken relative link or anchor of one document, as `file:line: why`.
fn broken_links(document: &Path, text: &str) -> (usize, Vec<String>) {
    let dir = document.parent().unwrap_or(Path::new(""));
    let mut checked = 0;
    let mut broken = Vec::new();
    for (line, target) in link_targets(text) {
        let here = format!("{}:{line}: ({target})", document.display());
        if target.is_empty() {
            broken.push(format!("{here} an empty link"));
            continue;
        }
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        checked += 1;
        let (path, anchor) = match target.split_once('#') {
            Some((path, anchor)) => (path, Some(anchor)),
            None => (target.as_str(), None),
        };
        let (file, headings) = if path.is_empty() {
            (document.to_path_buf(), anchors(text))
        } else {
            let Some(file) = resolve(dir, path) else {
                broken.push(format!("{here} leaves the repository"));
                continue;
            };
            if !Path::new(ROOT).join(&file).exists() {
                broken.push(format!("{here} {} does not exist", file.display()));
                continue;
            }
            if anchor.is_none() {
                continue;
            }
            if file.extension().is_none_or(|ext| ext != "md") {
                broken.push(format!("{here} an anchor into a file that is not Markdown"));
                continue;
            }
            let headings = anchors(&read(&file));
            (file, headings)
        };
        let Some(anchor) = anchor else { continue };
        if !headings.contains(anchor) {
            broken.push(format!(
                "{here} {} has no heading #{anchor}; it has {headings:?}",
                file.display()
            ));
        }
    }
    (checked, broken)
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut checked = 0;
    let mut broken = Vec::new();
    for document in documents() {
        let (count, problems) = broken_links(&document, &read(&document));
        checked += count;
        broken.extend(problems);
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked > 60, "checked only {checked} relative links");
}

#[test]
fn the_link_checker_sees_what_github_sees() {
    assert_eq!(
        slug("A run's result in the policy's status"),
        "a-runs-result-in-the-policys-status"
    );
    assert_eq!(
        slug("Worker metrics (Pushgateway)"),
        "worker-metrics-pushgateway"
    );
    assert_eq!(
        slug("`make e2e` and [kind](https://kind.sigs.k8s.io)"),
        "make-e2e-and-kind"
    );
    let text = "# Title\n```sh\n# not a heading\n[x](nowhere.md)\n```\n## Title\nSee `[y](nowhere.md)` and [z](b.md#c) and [t](c.md \"title\").\n";
    assert_eq!(
        anchors(text),
        BTreeSet::from(["title".to_owned(), "title-1".to_owned()])
    );
    assert_eq!(
        link_targets(text),
        vec![(7, "b.md#c".to_owned()), (7, "c.md".to_owned())]
    );
    let page =
        "[a](../README.md#nope) [b](missing.md) [c](#title) [d](#nope) [e](../Makefile)\n# Title\n";
    let (checked, broken) = broken_links(Path::new("docs/x.md"), page);
    assert_eq!(checked, 5);
    let found: Vec<&str> = broken
        .iter()
        .map(|b| b.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(
        found,
        ["(../README.md#nope)", "(missing.md)", "(#nope)"],
        "{broken:?}"
    );
    assert_eq!(resolve(Path::new("docs"), "../../etc/passwd"), None);
}

#[test]
fn the_readme_is_a_short_front_page() {
    let readme = read(Path::new("README.md"));
    let lines = readme.lines().count();
    assert!(lines <= 200, "README.md has {lines} lines; at most 200");

    // The quickstart is exactly two commands: the demo and the tests.
    let quickstart = readme
        .split("\n## Quickstart\n")
        .nth(1)
        .expect("a Quickstart section");
    let block = quickstart
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("a sh block in the Quickstart");
    let commands: Vec<&str> = block
        .lines()
        .map(|line| line.split('#').next().unwrap().trim())
        .filter(|command| !command.is_empty())
        .collect();
    assert_eq!(commands, ["cargo run -- demo", "make test"]);

    // Every page of docs/ is reachable from the front page.
    for document in documents().iter().filter(|d| d.starts_with("docs")) {
        let link = format!("]({})", document.display());
        assert!(readme.contains(&link), "README.md does not link {link}");
    }
}

/// The edges `a --> b` of the first Mermaid diagram in `text`, by node id.
fn mermaid_edges(text: &str) -> Vec<(String, String)> {
    let diagram = text
        .split("```mermaid\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("a mermaid block");
    let id = |node: &str| -> String {
        node.trim()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    diagram
        .lines()
        .filter_map(|line| line.split_once("-->"))
        .map(|(from, to)| {
            // `a -->|label| b`
            let to = match to.trim_start().strip_prefix('|') {
                Some(labelled) => labelled.split_once('|').unwrap().1,
                None => to,
            };
            (id(from), id(to))
        })
        .collect()
}

/// The nodes the module map must show (`notice` is `policy::notice`, `main` is `main.rs`).
const MODULES: [&str; 10] = [
    "main",
    "commands",
    "controller",
    "admission",
    "worker",
    "store",
    "notify",
    "policy",
    "notice",
    "crd",
];

/// What the policy core never imports.
const OUTSIDE_THE_CORE: [&str; 6] = [
    "store",
    "notify",
    "controller",
    "worker",
    "commands",
    "admission",
];

#[test]
fn the_module_map_keeps_the_dependency_rule() {
    let edges = mermaid_edges(&read(Path::new("CONTRIBUTING.md")));
    let nodes: BTreeSet<&str> = edges
        .iter()
        .flat_map(|(a, b)| [a.as_str(), b.as_str()])
        .collect();
    for module in MODULES {
        assert!(nodes.contains(module), "the diagram does not show {module}");
    }
    for (from, to) in &edges {
        assert_ne!(from, to, "a module pointing at itself");
        if to == "controller" || to == "commands" {
            assert!(
                from == "commands" || from == "main",
                "only commands and main.rs import {to}, not {from}"
            );
        }
        if from == "policy" || from == "notice" {
            assert!(
                !OUTSIDE_THE_CORE.contains(&to.as_str()),
                "the policy core imports {to}"
            );
        }
        if from == "crd" {
            assert_eq!(to, "notice", "crd imports only the leaves and the notices");
        }
    }
    // No cycles: remove nodes without outgoing edges until none are left.
    let mut remaining = edges.clone();
    let mut left: BTreeSet<String> = nodes.iter().map(|n| n.to_string()).collect();
    loop {
        let sinks: Vec<String> = left
            .iter()
            .filter(|n| !remaining.iter().any(|(a, _)| a == *n))
            .cloned()
            .collect();
        if sinks.is_empty() {
            break;
        }
        for sink in &sinks {
            left.remove(sink);
        }
        remaining.retain(|(_, b)| !sinks.contains(b));
    }
    assert!(left.is_empty(), "the diagram has a cycle through {left:?}");
}
