//! The chart's RBAC against the code: the controller's rules are exactly the table below, which
//! names the code behind each line, and it holds everything the worker Role grants.

use super::*;

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
    // reconcile.rs run_now: jobs.create; runtime.rs jobs::triggers watches the worker Jobs by
    // label (list, watch) for the runs Kubernetes failed (jobs/reflect.rs).
    ("batch", &["jobs"], &["list", "watch", "create"]),
    // runtime.rs jobs::triggers: the worker pods that are not running, by label and status.phase!=Running,
    // for runs that cannot start.
    ("", &["pods"], &["list", "watch"]),
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
