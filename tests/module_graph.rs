//! The dependency rule of CONTRIBUTING.md, checked on the source: the policy core imports none of
//! the layers above it, store and notify never reach up to the workers or the controller, nothing
//! but `commands` reaches `controller` or `commands`, the workers never run the admission
//! emulation, and no module depends on itself through others (no cycle). A module is one source
//! file; its dependencies are the `crate::` and `super::` paths it names, in `use` lines and in
//! code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`policy::notice`) to the modules it names.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn module_of(relative: &Path) -> String {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

fn source_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments and string literals, which may mention paths without using them.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut in_string = false;
        let mut previous = ' ';
        for c in code.chars() {
            if c == '"' && previous != '\\' {
                in_string = !in_string;
            } else if !in_string {
                out.push(c);
            }
            previous = c;
        }
        out.push('\n');
    }
    out
}

/// Every path a `use` tree or an expression starting at `crate::`/`super::` names, braces
/// expanded: `use crate::{a::{b, c}, d}` gives `crate::a::b`, `crate::a::c`, `crate::d`.
fn named_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for root in ["crate::", "super::"] {
        let mut at = 0;
        while let Some(offset) = code[at..].find(root) {
            let start = at + offset;
            at = start + root.len();
            let boundary = code[..start]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'));
            if boundary {
                expand(&code[start..], "", &mut paths);
            }
        }
    }
    paths
}

/// Expands the use tree at the start of `text` under `prefix`; returns the bytes it read.
fn expand(text: &str, prefix: &str, out: &mut Vec<String>) -> usize {
    let mut path = String::from(prefix);
    let mut i = 0;
    let bytes = text.as_bytes();
    while i < bytes.len() {
        let c = bytes[i] as char;
        if c.is_alphanumeric() || c == '_' || c == ':' {
            path.push(c);
            i += 1;
        } else if c == '{' {
            i += 1;
            loop {
                while i < bytes.len() && (bytes[i] as char).is_whitespace() {
                    i += 1;
                }
                if i >= bytes.len() || bytes[i] == b'}' {
                    return i + 1;
                }
                i += expand(&text[i..], &path, out);
                while i < bytes.len() && matches!(bytes[i], b',' | b' ' | b'\n') {
                    i += 1;
                }
            }
        } else {
            break;
        }
    }
    out.push(path);
    i
}

/// The longest known module `path` falls in, resolving `crate::` and `super::` from `module`.
fn resolve(path: &str, module: &str, modules: &BTreeSet<String>) -> Option<String> {
    let mut segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<&str> = if segments.first() == Some(&"crate") {
        segments.remove(0);
        Vec::new()
    } else {
        // `super` of `a::b` is `a` whether the file is `a/b.rs` or `a/b/mod.rs`.
        module.split("::").collect()
    };
    while segments.first() == Some(&"super") {
        segments.remove(0);
        base.pop()?;
    }
    base.extend(segments);
    (1..=base.len())
        .rev()
        .map(|n| base[..n].join("::"))
        .find(|candidate| modules.contains(candidate))
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let entries: Vec<(String, String)> = files
        .iter()
        .filter(|f| !f.ends_with("main.rs") && !f.ends_with("lib.rs"))
        .map(|f| {
            let relative = f.strip_prefix(&src).unwrap();
            let text = std::fs::read_to_string(f).unwrap();
            (module_of(relative), code_only(&text))
        })
        .collect();
    let modules: BTreeSet<String> = entries.iter().map(|(m, _)| m.clone()).collect();
    let mut graph = Graph::new();
    for (module, code) in &entries {
        let targets = graph.entry(module.clone()).or_default();
        for path in named_paths(code) {
            if let Some(target) = resolve(&path, module, &modules)
                && target != *module
            {
                targets.insert(target);
            }
        }
    }
    graph
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// Every edge from a module under `from` to a module under one of `to`.
fn edges_between(graph: &Graph, from: &str, to: &[&str]) -> Vec<String> {
    graph
        .iter()
        .filter(|(module, _)| top(module) == from)
        .flat_map(|(module, targets)| {
            targets
                .iter()
                .filter(|t| to.contains(&top(t)))
                .map(move |t| format!("{module} -> {t}"))
        })
        .collect()
}

/// A cycle in `graph`, as the modules along it, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

#[test]
fn the_policy_core_imports_no_layer_above_it() {
    let graph = graph();
    assert!(graph.contains_key("policy") && graph.contains_key("policy::notice"));
    let above = [
        "store",
        "notify",
        "controller",
        "worker",
        "commands",
        "admission",
        "manifests",
    ];
    let wrong = edges_between(&graph, "policy", &above);
    assert!(wrong.is_empty(), "the policy core imports: {wrong:#?}");
}

#[test]
fn store_and_notify_depend_on_the_core_never_the_reverse() {
    let graph = graph();
    for layer in ["store", "notify"] {
        let wrong = edges_between(
            &graph,
            layer,
            &["worker", "controller", "commands", "admission"],
        );
        assert!(wrong.is_empty(), "{layer} imports: {wrong:#?}");
    }
    assert!(
        !edges_between(&graph, "store", &["policy"]).is_empty(),
        "the store takes its types from the core"
    );
}

#[test]
fn only_commands_import_controller_or_commands() {
    let graph = graph();
    for layer in [
        "admission",
        "crd",
        "notify",
        "policy",
        "schedule",
        "store",
        "worker",
    ] {
        let wrong = edges_between(&graph, layer, &["controller", "commands"]);
        assert!(wrong.is_empty(), "{layer} imports: {wrong:#?}");
    }
    let wrong = edges_between(
        &graph,
        "controller",
        &["commands", "worker", "store", "notify"],
    );
    assert!(wrong.is_empty(), "the controller imports: {wrong:#?}");
}

#[test]
fn workers_trust_the_api_server() {
    let graph = graph();
    let mut wrong = edges_between(&graph, "worker", &["admission"]);
    wrong.extend(
        graph["commands::worker"]
            .iter()
            .filter(|t| top(t) == "admission")
            .map(|t| format!("commands::worker -> {t}")),
    );
    assert!(
        wrong.is_empty(),
        "the workers run the admission emulation: {wrong:#?}"
    );
}

#[test]
fn no_module_depends_on_itself() {
    let graph = graph();
    assert!(graph.len() > 40, "the walk found the sources: {graph:#?}");
    let cycles = cycles(&graph);
    assert!(
        cycles.is_empty(),
        "modules that depend on each other: {cycles:#?}"
    );
}

/// Every group of modules that reach each other (each listed once), with a cycle through it.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(node) = todo.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let mut groups: Vec<Vec<String>> = Vec::new();
    for node in graph.keys() {
        if groups.iter().any(|g| g.contains(node)) || !reach(node).contains(node) {
            continue;
        }
        let mut sub = graph.clone();
        sub.retain(|n, _| reach(n).contains(node) && reach(node).contains(n));
        groups.push(find_cycle(&sub).unwrap_or_default());
    }
    groups
}

#[test]
fn the_checker_sees_paths_in_use_trees_and_code() {
    let code = code_only(
        "use crate::{a::{b, c::D}, e};\nlet x = crate::f::g(); // crate::h\nlet s = \"crate::i\";\nuse super::super::j;\n",
    );
    let paths = named_paths(&code);
    assert_eq!(
        paths,
        [
            "crate::a::b",
            "crate::a::c::D",
            "crate::e",
            "crate::f::g",
            "super::super::j"
        ]
    );
    let modules: BTreeSet<String> = ["a", "a::c", "x", "x::y"].map(String::from).into();
    assert_eq!(
        resolve("crate::a::c::D", "x", &modules).as_deref(),
        Some("a::c")
    );
    assert_eq!(
        resolve("super::y::Z", "x::w", &modules).as_deref(),
        Some("x::y")
    );
    let cyclic: Graph = [("a", "b"), ("b", "c"), ("c", "a")]
        .map(|(f, t)| (f.to_owned(), BTreeSet::from([t.to_owned()])))
        .into();
    assert_eq!(find_cycle(&cyclic).map(|c| c.len()), Some(4));
}
