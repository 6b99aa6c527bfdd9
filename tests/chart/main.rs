//! The Helm chart against the code: its CRD is the generated one and its version the crate's;
//! the controller and the migration Job it renders start with flags the binary accepts; its RBAC
//! is exactly the table below, derived from the API calls in src/controller/.
//!
//! Rendering needs the real helm: `SIGNET_HELM`, else target/tools/helm (`make tools` fetches
//! it; `make test` runs it first). Without it the rendering tests fail, unless
//! `SIGNET_TEST_SKIP_HELM=1` asks to skip them, which CI (`CI=true`) never honours.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use signet::manifests::parse_documents;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const RELEASE: &str = "signet";
const NAMESPACE: &str = "signet-system";
const ALL_OPTIONS: &str = "charts/signet/ci/all-options-values.yaml";

fn chart_dir() -> PathBuf {
    Path::new(ROOT).join("charts/signet")
}

/// The helm binary, or `None` (with the reason printed) where the tests were asked to skip.
fn helm() -> Option<PathBuf> {
    let path = std::env::var_os("SIGNET_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join("target/tools/helm"));
    if path.is_file() {
        return Some(path);
    }
    let reason = format!(
        "no helm at {} (run `make tools`, or point SIGNET_HELM at one)",
        path.display()
    );
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let skip = std::env::var("SIGNET_TEST_SKIP_HELM").is_ok_and(|v| v == "1");
    if skip && !ci {
        eprintln!("SKIPPED: {reason}");
        return None;
    }
    panic!("{reason}; outside CI, SIGNET_TEST_SKIP_HELM=1 skips the chart tests");
}

/// `helm template` of the chart with default values plus `values` (a file under the repo).
fn render(helm: &Path, values: Option<&str>) -> Vec<Value> {
    let mut command = Command::new(helm);
    command
        .args(["template", RELEASE])
        .arg(chart_dir())
        .args(["--namespace", NAMESPACE]);
    if let Some(values) = values {
        command.arg("--values").arg(Path::new(ROOT).join(values));
    }
    let output = command.output().expect("helm runs");
    assert!(
        output.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_documents(&String::from_utf8(output.stdout).unwrap()).unwrap()
}

/// The renders the tests look at: (label, documents).
fn renders(helm: &Path) -> Vec<(&'static str, Vec<Value>)> {
    vec![
        ("default values", render(helm, None)),
        ("all options", render(helm, Some(ALL_OPTIONS))),
    ]
}

fn objects<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn only<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = objects(docs, kind);
    assert_eq!(found.len(), 1, "exactly one {kind}");
    found[0]
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|s| s.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The value of `--name=value` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("--{name}=");
    args.iter().find_map(|a| a.strip_prefix(&prefix))
}

/// Runs the image's entrypoint (the signet binary) with a container's args and environment,
/// as the kubelet would: nothing else from this process's environment leaks in. Values from
/// the downward API or a Secret come from `resolve`.
fn run_container(
    container: &Value,
    extra_args: &[&str],
    resolve: impl Fn(&str, &Value) -> String,
) -> Output {
    assert!(
        container.get("command").is_none(),
        "the chart relies on the image's ENTRYPOINT (the signet binary), so it sets no command"
    );
    let mut command = Command::new(env!("CARGO_BIN_EXE_signet"));
    command
        .args(strings(&container["args"]))
        .args(extra_args)
        .env_clear()
        // Outside a cluster: no kubeconfig, no in-cluster service address.
        .env("KUBECONFIG", "/nonexistent/kubeconfig");
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap();
        let value = match var.get("value") {
            Some(value) => value.as_str().unwrap().to_owned(),
            None => resolve(name, &var["valueFrom"]),
        };
        command.env(name, value);
    }
    command.output().expect("signet runs")
}

fn is_usage_error(output: &Output) -> bool {
    let stderr = String::from_utf8_lossy(&output.stderr);
    output.status.code() == Some(2) && (stderr.contains("error:") || stderr.contains("Usage:"))
}

#[test]
fn the_chart_crd_is_the_generated_one() {
    let chart_crd =
        std::fs::read_to_string(chart_dir().join("crds/signaturepolicies.signet.dev.yaml"))
            .unwrap();
    assert!(
        chart_crd == signet::crd::definition_yaml(),
        "charts/signet/crds/signaturepolicies.signet.dev.yaml is stale: run `make crds` and commit the result"
    );
}

#[test]
fn the_chart_and_its_app_version_are_the_crate_version() {
    let chart: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(
        chart["version"],
        env!("CARGO_PKG_VERSION"),
        "Chart.yaml version"
    );
    assert_eq!(
        chart["appVersion"],
        env!("CARGO_PKG_VERSION"),
        "Chart.yaml appVersion: the default image tag, and the controller's own default worker image"
    );
}

#[test]
fn the_image_runs_the_binary_as_the_user_the_chart_and_workers_expect() {
    let dockerfile = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    let lines: Vec<&str> = dockerfile.lines().map(str::trim).collect();
    assert!(lines.contains(&r#"ENTRYPOINT ["/signet"]"#), "{dockerfile}");
    let uid = signet::controller::build::defaults::RUN_AS_USER;
    assert!(
        lines.contains(&format!("USER {uid}:{uid}").as_str()),
        "the image's user is the worker pods' runAsUser {uid}"
    );
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap())
            .unwrap();
    assert_eq!(values["podSecurityContext"]["runAsUser"], uid);
}

#[test]
fn the_controller_starts_with_the_flags_the_chart_renders() {
    let Some(helm) = helm() else { return };
    for (label, docs) in renders(&helm) {
        let deployment = only(&docs, "Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let args = strings(&container["args"]);
        assert_eq!(args[0], "controller", "{label}: {args:?}");

        // The parts of the render that must agree with the flags.
        let image = container["image"].as_str().unwrap();
        assert_eq!(
            flag(&args, "worker-image"),
            Some(image),
            "{label}: workers run the controller's image"
        );
        assert_eq!(
            flag(&args, "worker-image-pull-policy"),
            container["imagePullPolicy"].as_str(),
            "{label}"
        );
        let port = &container["ports"][0];
        assert_eq!(port["name"], "metrics");
        assert_eq!(
            flag(&args, "metrics-bind-address"),
            Some(format!("0.0.0.0:{}", port["containerPort"]).as_str()),
            "{label}: the probes and the Service use the port the controller listens on"
        );
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(container["readinessProbe"]["httpGet"]["port"], "metrics");
        for (name, what) in [
            ("SIGNET_LEADER_ELECTION_IDENTITY", "the Lease identity"),
            ("POD_NAME", "the instance in the Events"),
        ] {
            let variable = container["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == name)
                .unwrap_or_else(|| panic!("{name}, {what}"));
            assert_eq!(
                variable["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name",
                "{name}"
            );
        }
        assert_eq!(flag(&args, "leader-election"), Some("true"), "{label}");
        assert_eq!(flag(&args, "leader-election-namespace"), Some(NAMESPACE));
        let lease_role = objects(&docs, "Role")
            .into_iter()
            .find(|r| {
                r["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .ends_with("-leader-election")
            })
            .expect("the leader-election Role");
        let lease = flag(&args, "leader-election-lease-name").expect("a lease name");
        assert_eq!(
            strings(&lease_role["rules"][1]["resourceNames"]),
            [lease],
            "{label}: the Role names the Lease the controller uses"
        );

        // The binary takes every flag: it gets past parsing into `run`, which then fails for
        // want of a cluster (exit 1), not with a usage error (exit 2).
        let output = run_container(container, &[], |name, source| {
            assert!(source["fieldRef"]["fieldPath"].is_string(), "{name}");
            format!("{name}-from-the-downward-api")
        });
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !is_usage_error(&output),
            "{label}: {args:?} refused: {stderr}"
        );
        assert_eq!(output.status.code(), Some(1), "{label}: {stderr}");
        assert!(
            stderr.contains("cannot configure a Kubernetes client"),
            "{label}: {stderr}"
        );

        // The same harness does see a flag the binary lacks.
        let output = run_container(container, &["--no-such-flag"], |name, _| name.to_owned());
        assert!(is_usage_error(&output), "{output:?}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("unexpected argument"));
    }
}

#[test]
fn watched_namespaces_reach_the_controller() {
    let Some(helm) = helm() else { return };
    let docs = render(&helm, None);
    let args =
        strings(&only(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert_eq!(flag(&args, "namespace"), None, "default: every namespace");
    let docs = render(&helm, Some(ALL_OPTIONS));
    let args =
        strings(&only(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert_eq!(flag(&args, "namespace"), Some("enrollment,sales"));
}

#[tokio::test]
async fn the_migration_job_migrates_with_what_the_chart_renders() {
    let Some(helm) = helm() else { return };
    assert!(
        objects(&render(&helm, None), "Job").is_empty(),
        "no migration Job unless enabled"
    );
    let docs = render(&helm, Some(ALL_OPTIONS));
    let job = only(&docs, "Job");
    assert_eq!(
        job["metadata"]["annotations"]["helm.sh/hook"],
        "pre-install,pre-upgrade"
    );
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(
        pod["automountServiceAccountToken"], false,
        "it needs no API access"
    );
    let container = &pod["containers"][0];
    assert_eq!(strings(&container["args"])[0], "migrate");
    let Some(db) = signet::store::testing::TestDatabase::postgres().await else {
        return;
    };
    let output = run_container(container, &[], |name, source| {
        assert_eq!(name, "SIGNET_DATABASE_URL");
        assert_eq!(source["secretKeyRef"]["name"], "enrollment-db");
        assert_eq!(source["secretKeyRef"]["key"], "url");
        db.url.clone()
    });
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "migrations applied (PostgreSQL, schema signet)"
    );
}

#[test]
fn pods_run_restricted() {
    let Some(helm) = helm() else { return };
    for (label, docs) in renders(&helm) {
        let pods: Vec<&Value> = ["Deployment", "Job"]
            .into_iter()
            .flat_map(|kind| objects(&docs, kind))
            .map(|o| &o["spec"]["template"]["spec"])
            .collect();
        let kinds: BTreeSet<&str> = ["Deployment", "Job"]
            .into_iter()
            .filter(|kind| !objects(&docs, kind).is_empty())
            .collect();
        // Both renders have the controller; the one with every option has the migration Job.
        assert!(
            kinds.contains("Deployment"),
            "{label}: no controller pod found"
        );
        if label.contains("option") {
            assert!(kinds.contains("Job"), "{label}: no migration Job pod found");
        }
        for pod in &pods {
            assert!(pod.is_object(), "{label}: a pod template without a spec");
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{label}");
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"],
                "RuntimeDefault"
            );
            for container in pod["containers"].as_array().unwrap() {
                let sc = &container["securityContext"];
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{label}");
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{label}");
                assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{label}");
            }
        }
    }
}

/// Values whose defaults are Kubernetes objects, documented as a whole.
const OPAQUE_VALUES: [&str; 4] = [
    "podSecurityContext",
    "securityContext",
    "resources",
    "migration.resources",
];

fn value_paths(value: &Value, path: &str, out: &mut Vec<String>) {
    match value.as_object() {
        Some(map) if !map.is_empty() && !OPAQUE_VALUES.contains(&path) => {
            for (key, child) in map {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                value_paths(child, &child_path, out);
            }
        }
        _ => out.push(path.to_owned()),
    }
}

#[test]
fn the_helm_page_documents_every_value() {
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap())
            .unwrap();
    let page = std::fs::read_to_string(Path::new(ROOT).join("docs/helm-chart.md")).unwrap();
    // The "## Values" section (its "### Alerts" included), up to the next heading of its level.
    let values_section = page
        .split("\n## Values\n")
        .nth(1)
        .expect("docs/helm-chart.md has a \"## Values\" section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut paths = Vec::new();
    value_paths(&values, "", &mut paths);
    assert!(paths.len() > 40, "walked values.yaml: {paths:?}");
    let alerts = "metrics.prometheusRule.alerts.";
    let missing: Vec<&String> = paths
        .iter()
        .filter(|path| match path.strip_prefix(alerts) {
            // One row documents the fields of every alert; the alerts table names each.
            Some(rest) => {
                let alert = rest.split('.').next().unwrap();
                !values_section.contains(&format!("`{alerts}<alert>.enabled`"))
                    || !values_section.contains(&format!("| `{alert}` |"))
            }
            None => !values_section.contains(&format!("`{path}`")),
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/helm-chart.md's \"Values\" does not document: {missing:#?}"
    );
}

mod rbac;
