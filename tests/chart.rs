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

/// One granted permission: (API group, resource, verb, resource name or "" for any).
type Grant = (String, String, String, String);

/// What the controller calls, in the policies' namespaces. Each line names the code.
const CONTROLLER_RULES: &[(&str, &[&str], &[&str])] = &[
    // runtime.rs: watcher::<SignaturePolicy> lists and watches, check_crd lists one;
    // reconcile.rs run_now: merge patch clearing the signet.dev/run-now annotation.
    (
        "signet.dev",
        &["signaturepolicies"],
        &["list", "watch", "patch"],
    ),
    // reconcile.rs patch_status. Also needed because build.rs's worker Role grants it: RBAC
    // lets the controller create that Role only while it holds the permission itself.
    ("signet.dev", &["signaturepolicies/status"], &["patch"]),
    // runtime.rs owned_watch (list, watch); reconcile.rs apply: get_opt (get), then server-side
    // apply (patch, and create when the object is new); prune: delete.
    (
        "batch",
        &["cronjobs"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    // reconcile.rs run_now: the Job's ownerReference sets blockOwnerDeletion on its CronJob,
    // which the OwnerReferencesPermissionEnforcement admission plugin allows only with this.
    ("batch", &["cronjobs/finalizers"], &["update"]),
    // reconcile.rs run_now: jobs.create.
    ("batch", &["jobs"], &["create"]),
    // runtime.rs owned_watch; reconcile.rs apply (get, patch, create), never deleted (owner GC).
    (
        "",
        &["serviceaccounts"],
        &["get", "list", "watch", "create", "patch"],
    ),
    (
        "rbac.authorization.k8s.io",
        &["roles", "rolebindings"],
        &["get", "list", "watch", "create", "patch"],
    ),
    // reconcile.rs publish: kube's Recorder::publish creates an events.k8s.io/v1 Event; it
    // patches only a series from its own cache, and a Recorder here publishes one Event.
    ("events.k8s.io", &["events"], &["create"]),
];

fn controller_grants() -> BTreeSet<Grant> {
    CONTROLLER_RULES
        .iter()
        .flat_map(|(group, resources, verbs)| {
            resources.iter().flat_map(move |resource| {
                verbs.iter().map(move |verb| {
                    (
                        group.to_string(),
                        resource.to_string(),
                        verb.to_string(),
                        String::new(),
                    )
                })
            })
        })
        .collect()
}

/// leader.rs: the Lease is created when missing, then read (get_opt) and replaced (update) by
/// name, also to release it.
fn lease_grants(lease: &str) -> BTreeSet<Grant> {
    let grant = |verb: &str, name: &str| {
        (
            "coordination.k8s.io".into(),
            "leases".into(),
            verb.into(),
            name.into(),
        )
    };
    BTreeSet::from([
        grant("create", ""),
        grant("get", lease),
        grant("update", lease),
    ])
}

fn grants(role: &Value) -> BTreeSet<Grant> {
    let mut grants = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        let names = strings(&rule["resourceNames"]);
        let names = if names.is_empty() {
            vec![String::new()]
        } else {
            names
        };
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    for name in &names {
                        grants.insert((
                            group.clone(),
                            resource.clone(),
                            verb.clone(),
                            name.clone(),
                        ));
                    }
                }
            }
        }
    }
    grants
}

/// Asserts `binding` gives `role` to the controller's ServiceAccount.
fn assert_binds(binding: &Value, role: &Value, account: &str) {
    assert_eq!(binding["roleRef"]["kind"], role["kind"]);
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(
        binding["metadata"]["namespace"],
        role["metadata"]["namespace"]
    );
    let subjects = binding["subjects"].as_array().unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0]["kind"], "ServiceAccount");
    assert_eq!(subjects[0]["name"], account);
    assert_eq!(subjects[0]["namespace"], NAMESPACE);
}

fn binding_for<'a>(docs: &'a [Value], role: &Value) -> &'a Value {
    let kind = format!("{}Binding", role["kind"].as_str().unwrap());
    objects(docs, &kind)
        .into_iter()
        .find(|b| {
            b["roleRef"]["name"] == role["metadata"]["name"]
                && b["metadata"]["namespace"] == role["metadata"]["namespace"]
        })
        .unwrap_or_else(|| panic!("no {kind} for {}", role["metadata"]["name"]))
}

#[test]
fn rbac_grants_exactly_what_the_controller_calls() {
    let Some(helm) = helm() else { return };
    for (label, docs, watched) in [
        ("default values", render(&helm, None), vec![]),
        (
            "all options",
            render(&helm, Some(ALL_OPTIONS)),
            vec!["enrollment", "sales"],
        ),
    ] {
        let deployment = only(&docs, "Deployment");
        let account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
            .as_str()
            .unwrap();
        assert_eq!(only(&docs, "ServiceAccount")["metadata"]["name"], account);
        let args = strings(&deployment["spec"]["template"]["spec"]["containers"][0]["args"]);
        let lease = flag(&args, "leader-election-lease-name").unwrap();

        let mut seen_roles = 0;
        for role in objects(&docs, "Role") {
            let namespace = role["metadata"]["namespace"].as_str().unwrap();
            let expected = if role["metadata"]["name"]
                .as_str()
                .unwrap()
                .ends_with("-leader-election")
            {
                assert_eq!(
                    namespace, NAMESPACE,
                    "{label}: the Lease lives in the release namespace"
                );
                lease_grants(lease)
            } else {
                assert!(
                    watched.contains(&namespace),
                    "{label}: a Role in {namespace}"
                );
                controller_grants()
            };
            assert_eq!(
                grants(role),
                expected,
                "{label}: Role {namespace}/{}",
                role["metadata"]["name"]
            );
            assert_binds(binding_for(&docs, role), role, account);
            seen_roles += 1;
        }
        assert_eq!(
            seen_roles,
            watched.len() + 1,
            "{label}: a Role per watched namespace and the Lease's"
        );

        let cluster_roles = objects(&docs, "ClusterRole");
        if watched.is_empty() {
            assert_eq!(cluster_roles.len(), 1, "{label}");
            assert_eq!(
                grants(cluster_roles[0]),
                controller_grants(),
                "{label}: ClusterRole"
            );
            assert_binds(
                binding_for(&docs, cluster_roles[0]),
                cluster_roles[0],
                account,
            );
        } else {
            assert!(cluster_roles.is_empty(), "{label}: nothing cluster-wide");
            assert!(objects(&docs, "ClusterRoleBinding").is_empty(), "{label}");
        }
    }
}

/// Kubernetes refuses to let the controller create a Role granting what it does not hold.
#[test]
fn the_controller_holds_everything_the_worker_role_grants() {
    let settings = signet::controller::build::WorkerSettings {
        image: "signet:test".into(),
        image_pull_policy: None,
        pushgateway_url: None,
    };
    let mut out = Vec::new();
    signet::commands::render::render(
        &Path::new(ROOT).join("examples/full.yaml"),
        "default",
        &settings,
        &mut out,
    )
    .unwrap();
    let docs = parse_documents(&String::from_utf8(out).unwrap()).unwrap();
    let worker_role = only(&docs, "Role");
    let held = controller_grants();
    let granted = grants(worker_role);
    assert!(!granted.is_empty());
    for (group, resource, verb, _name) in granted {
        assert!(
            held.contains(&(group.clone(), resource.clone(), verb.clone(), String::new())),
            "the worker Role grants {verb} on {group}/{resource}, which the controller's rules lack"
        );
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
