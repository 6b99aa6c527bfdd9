//! The desired objects built from a policy (pure): defaults, overrides, secrets by reference,
//! names, suspend and time zone, disabled sections.

use k8s_openapi::api::batch::v1::CronJob;
use signet::admission::Admission;
use signet::controller::build::{Desired, WorkerSettings, desired};
use signet::crd::SignaturePolicy;
use signet::manifests::parse_documents;
use signet::policy::Section;
use signet::policy::ValidPolicy;

fn settings() -> WorkerSettings {
    WorkerSettings {
        image: "registry.example/signet:1.2.3".into(),
        image_pull_policy: Some("IfNotPresent".into()),
        pushgateway_url: None,
    }
}

fn policy_from(yaml: &str) -> SignaturePolicy {
    let verdict = Admission::new().check(parse_documents(yaml).unwrap().remove(0));
    assert!(verdict.is_valid(), "{:?}", verdict.errors);
    let mut policy = verdict.policy.unwrap();
    policy.metadata.uid = Some("0b7c1f6e-0000-4000-8000-000000000001".into());
    policy.metadata.generation = Some(4);
    policy
}

fn build(yaml: &str) -> Desired {
    desired(&ValidPolicy::new(&policy_from(yaml)).unwrap(), &settings())
}

fn example(name: &str) -> String {
    std::fs::read_to_string(format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn json(cron_job: &CronJob) -> serde_json::Value {
    serde_json::to_value(cron_job).unwrap()
}

fn env_of(cron_job: &serde_json::Value) -> Vec<serde_json::Value> {
    cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn minimal_policy_gets_every_default() {
    let built = build(&example("minimal.yaml"));
    assert_eq!(
        built.cron_jobs.len(),
        1,
        "no timeout section, no timeouts CronJob"
    );
    let (section, cron_job) = &built.cron_jobs[0];
    assert_eq!(*section, Section::Reminders);
    let cj = json(cron_job);
    assert_eq!(cj["metadata"]["name"], "enrollment-agreements-reminders");
    assert_eq!(cj["metadata"]["namespace"], "enrollment");
    assert_eq!(
        cj["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "signet"
    );
    assert_eq!(
        cj["metadata"]["labels"]["signet.dev/policy"],
        "enrollment-agreements"
    );
    let owner = &cj["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["controller"].as_bool()),
        (Some("SignaturePolicy"), Some(true))
    );
    let spec = &cj["spec"];
    assert_eq!(spec["schedule"], "*/30 * * * *");
    assert_eq!(spec["timeZone"], "UTC");
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["concurrencyPolicy"], "Forbid");
    assert_eq!(
        spec["startingDeadlineSeconds"], 1800,
        "one period, at most an hour"
    );
    assert_eq!(spec["successfulJobsHistoryLimit"], 3);
    assert_eq!(spec["failedJobsHistoryLimit"], 3);
    let job = &spec["jobTemplate"]["spec"];
    assert_eq!(job["backoffLimit"], 2);
    assert_eq!(
        job["activeDeadlineSeconds"], 1620,
        "90% of the 30-minute period"
    );
    assert_eq!(job["ttlSecondsAfterFinished"], 86400);
    let rule = &job["podFailurePolicy"]["rules"][0];
    assert_eq!(rule["action"], "FailJob");
    assert_eq!(rule["onExitCodes"]["values"], serde_json::json!([2]));
    let pod = &job["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(
        pod["serviceAccountName"],
        "enrollment-agreements-signet-worker"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "registry.example/signet:1.2.3");
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    assert_eq!(container["args"], serde_json::json!(["send-reminders"]));
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert_eq!(container["resources"]["requests"]["memory"], "32Mi");
}

#[test]
fn every_job_template_override_wins() {
    let built = build(&example("full.yaml"));
    let cj = json(&built.cron_jobs[0].1);
    let spec = &cj["spec"];
    assert_eq!(spec["timeZone"], "Europe/Berlin");
    assert_eq!(spec["startingDeadlineSeconds"], 600);
    assert_eq!(spec["failedJobsHistoryLimit"], 5);
    let job = &spec["jobTemplate"]["spec"];
    assert_eq!(job["activeDeadlineSeconds"], 1500);
    let pod = &job["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "enrollment-signet-worker");
    assert_eq!(pod["priorityClassName"], "batch-low");
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"],
        50
    );
    assert_eq!(pod["imagePullSecrets"][0]["name"], "registry-credentials");
    assert_eq!(pod["containers"][0]["resources"]["requests"]["cpu"], "50m");
    assert_eq!(job["template"]["metadata"]["labels"]["team"], "enrollment");
    assert_eq!(
        job["template"]["metadata"]["annotations"]["example.com/owner"],
        "enrollment-team"
    );
    let policy = example("full.yaml")
        .replace("concurrencyPolicy: Forbid", "concurrencyPolicy: Replace")
        .replace("backoffLimit: 2", "backoffLimit: 0")
        .replace(
            "ttlSecondsAfterFinished: 86400",
            "ttlSecondsAfterFinished: 60",
        )
        .replace(
            "successfulJobsHistoryLimit: 3",
            "successfulJobsHistoryLimit: 1",
        );
    let cj = json(&build(&policy).cron_jobs[1].1);
    assert_eq!(cj["spec"]["concurrencyPolicy"], "Replace");
    assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 1);
    assert_eq!(cj["spec"]["jobTemplate"]["spec"]["backoffLimit"], 0);
    assert_eq!(
        cj["spec"]["jobTemplate"]["spec"]["ttlSecondsAfterFinished"],
        60
    );
}

#[test]
fn secrets_travel_only_by_reference_and_only_where_needed() {
    let built = build(&example("full.yaml"));
    let reminders = env_of(&json(&built.cron_jobs[0].1));
    let timeouts = env_of(&json(&built.cron_jobs[1].1));
    let secret_vars = |env: &[serde_json::Value]| -> Vec<(String, String, String)> {
        env.iter()
            .filter_map(|e| {
                let r = e["valueFrom"]["secretKeyRef"].as_object()?;
                assert!(e.get("value").is_none(), "secret {e} has a literal value");
                Some((
                    e["name"].as_str()?.to_owned(),
                    r["name"].as_str()?.to_owned(),
                    r["key"].as_str()?.to_owned(),
                ))
            })
            .collect()
    };
    let names = |env: &[serde_json::Value]| {
        secret_vars(env)
            .into_iter()
            .map(|(n, _, _)| n)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        secret_vars(&reminders)[0],
        (
            "SIGNET_SECRET_ENROLLMENT_DB_URL".into(),
            "enrollment-db".into(),
            "url".into()
        )
    );
    // Reminders use signer-email (sendgrid), audit-hook (webhook + hmac), escalation: ops-slack, ops-email.
    assert_eq!(
        names(&reminders),
        [
            "SIGNET_SECRET_ENROLLMENT_DB_URL",
            "SIGNET_SECRET_SENDGRID_API_KEY",
            "SIGNET_SECRET_SLACK_URL",
            "SIGNET_SECRET_AUDIT_URL",
            "SIGNET_SECRET_AUDIT_HMAC"
        ]
    );
    // smtp-mail is used by no section: its credentials reach no worker.
    assert!(
        !names(&reminders)
            .iter()
            .chain(&names(&timeouts))
            .any(|n| n.contains("SMTP"))
    );
    assert_eq!(
        names(&timeouts),
        [
            "SIGNET_SECRET_ENROLLMENT_DB_URL",
            "SIGNET_SECRET_SENDGRID_API_KEY",
            "SIGNET_SECRET_SLACK_URL",
            "SIGNET_SECRET_AUDIT_URL",
            "SIGNET_SECRET_AUDIT_HMAC"
        ]
    );
    let value = |env: &[serde_json::Value], name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        value(&reminders, "SIGNET_POLICY_REF"),
        "enrollment/enrollment-agreements"
    );
    assert_eq!(value(&reminders, "SIGNET_POLICY_GENERATION"), "4");
    let spec: serde_json::Value =
        serde_json::from_str(&value(&reminders, "SIGNET_POLICY")).unwrap();
    assert_eq!(spec["reminders"]["maxReminders"], 3);
    assert!(
        spec.get("jobTemplate").is_none(),
        "pod overrides stay with the controller"
    );
    let job_name = reminders
        .iter()
        .find(|e| e["name"] == "SIGNET_JOB_NAME")
        .unwrap();
    assert_eq!(
        job_name["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.labels['batch.kubernetes.io/job-name']"
    );
}

#[test]
fn suspend_time_zone_and_disabled_sections() {
    let built = build(&example("timeouts-only.yaml").replace(
        "  timeZone: America/New_York",
        "  timeZone: America/New_York\n  suspend: true",
    ));
    assert_eq!(built.cron_jobs.len(), 1);
    let (section, cron_job) = &built.cron_jobs[0];
    assert_eq!(*section, Section::Timeouts);
    let cj = json(cron_job);
    assert_eq!(cj["metadata"]["name"], "contract-expiry-timeouts");
    assert_eq!(cj["spec"]["suspend"], true);
    assert_eq!(cj["spec"]["timeZone"], "America/New_York");
    assert_eq!(cj["spec"]["schedule"], "0 */2 * * *");
    assert_eq!(
        cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"],
        serde_json::json!(["check-timeouts"])
    );
    assert_eq!(
        cj["spec"]["startingDeadlineSeconds"], 3600,
        "capped at an hour"
    );
    assert_eq!(
        cj["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"], 6480,
        "90% of two hours"
    );
}

#[test]
fn rbac_lets_workers_patch_only_their_own_policy_status() {
    let built = build(&example("minimal.yaml"));
    let role = serde_json::to_value(&built.role).unwrap();
    assert_eq!(
        role["rules"],
        serde_json::json!([{"apiGroups": ["signet.dev"], "resources": ["signaturepolicies/status"], "resourceNames": ["enrollment-agreements"], "verbs": ["patch"]}])
    );
    let binding = serde_json::to_value(&built.role_binding).unwrap();
    assert_eq!(
        binding["roleRef"]["name"],
        "enrollment-agreements-signet-worker"
    );
    assert_eq!(
        binding["subjects"][0]["name"],
        "enrollment-agreements-signet-worker"
    );
    assert_eq!(binding["subjects"][0]["namespace"], "enrollment");
    for meta in [
        &built.service_account.metadata,
        &built.role.metadata,
        &built.role_binding.metadata,
    ] {
        assert_eq!(meta.owner_references.as_ref().map(Vec::len), Some(1));
        assert_eq!(
            meta.labels.as_ref().unwrap()["signet.dev/policy"],
            "enrollment-agreements"
        );
    }
}

/// The ServiceAccount each CronJob's pods run as, and the one the worker Role is bound to.
fn accounts(built: &Desired) -> (Vec<String>, serde_json::Value) {
    let pods = built
        .cron_jobs
        .iter()
        .map(|(_, cj)| {
            json(cj)["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let binding = serde_json::to_value(&built.role_binding).unwrap();
    (pods, binding["subjects"].clone())
}

#[test]
fn the_worker_role_is_bound_to_the_account_the_pods_run_as() {
    // Signet's own account by default.
    let (pods, subjects) = accounts(&build(&example("minimal.yaml")));
    assert_eq!(pods, ["enrollment-agreements-signet-worker"]);
    assert_eq!(
        subjects,
        serde_json::json!([{"kind": "ServiceAccount", "name": "enrollment-agreements-signet-worker", "namespace": "enrollment"}])
    );
    // The policy's own account when it names one: the pods run as it, so the Role must be bound
    // to it, or every status write of the workers gets 403.
    let built = build(&example("full.yaml"));
    let (pods, subjects) = accounts(&built);
    assert_eq!(
        pods,
        ["enrollment-signet-worker", "enrollment-signet-worker"]
    );
    assert_eq!(
        subjects,
        serde_json::json!([{"kind": "ServiceAccount", "name": "enrollment-signet-worker", "namespace": "enrollment"}])
    );
    let binding = serde_json::to_value(&built.role_binding).unwrap();
    assert_eq!(
        binding["roleRef"]["name"],
        "enrollment-agreements-signet-worker"
    );
    // Signet's account is still created (holding nothing), so dropping the override falls
    // back at once.
    assert_eq!(
        built.service_account.metadata.name.as_deref(),
        Some("enrollment-agreements-signet-worker")
    );
    let dropped =
        example("full.yaml").replace("    serviceAccountName: enrollment-signet-worker\n", "");
    assert_ne!(dropped, example("full.yaml"));
    let (pods, subjects) = accounts(&build(&dropped));
    assert_eq!(pods, ["enrollment-agreements-signet-worker"; 2]);
    assert_eq!(subjects[0]["name"], "enrollment-agreements-signet-worker");
}

#[test]
fn render_binds_the_worker_role_to_the_account_of_full_yaml() {
    let mut out = Vec::new();
    signet::commands::render::render(
        std::path::Path::new(&format!(
            "{}/examples/full.yaml",
            env!("CARGO_MANIFEST_DIR")
        )),
        "default",
        &settings(),
        &mut out,
    )
    .unwrap();
    let documents = parse_documents(&String::from_utf8(out).unwrap()).unwrap();
    let of_kind = |kind: &str| -> Vec<&serde_json::Value> {
        documents.iter().filter(|d| d["kind"] == kind).collect()
    };
    let binding = of_kind("RoleBinding");
    assert_eq!(binding.len(), 1);
    assert_eq!(
        binding[0]["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "enrollment-signet-worker", "namespace": "enrollment"}])
    );
    assert_eq!(
        binding[0]["roleRef"]["name"],
        of_kind("Role")[0]["metadata"]["name"]
    );
    let cron_jobs = of_kind("CronJob");
    assert_eq!(cron_jobs.len(), 2);
    for cron_job in cron_jobs {
        assert_eq!(
            cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"],
            "enrollment-signet-worker"
        );
    }
    let accounts = of_kind("ServiceAccount");
    assert_eq!(accounts.len(), 1);
    assert_eq!(
        accounts[0]["metadata"]["name"], "enrollment-agreements-signet-worker",
        "Signet's own account is still rendered"
    );
}

#[test]
fn long_policy_names_give_bounded_cron_job_names() {
    let name = "a-very-long-policy-name-for-the-enrollment-office-of-the-north";
    let built = build(
        &example("full.yaml").replace("name: enrollment-agreements\n", &format!("name: {name}\n")),
    );
    for (_, cron_job) in &built.cron_jobs {
        let cj_name = cron_job.metadata.name.as_deref().unwrap();
        assert!(cj_name.len() <= 52, "{cj_name}");
    }
    assert_ne!(
        built.cron_jobs[0].1.metadata.name,
        built.cron_jobs[1].1.metadata.name
    );
}

#[test]
fn the_pushgateway_reaches_the_workers_only_when_configured() {
    let policy = ValidPolicy::new(&policy_from(&example("full.yaml"))).unwrap();
    let names = |desired: &Desired| -> Vec<Vec<(String, Option<String>)>> {
        desired
            .cron_jobs
            .iter()
            .map(|(_, c)| {
                env_of(&json(c))
                    .iter()
                    .filter(|e| e["name"] == "SIGNET_PUSHGATEWAY_URL")
                    .map(|e| {
                        (
                            e["name"].as_str().unwrap().to_owned(),
                            e["value"].as_str().map(str::to_owned),
                        )
                    })
                    .collect()
            })
            .collect()
    };
    let without = desired(&policy, &settings());
    assert_eq!(names(&without), vec![vec![], vec![]]);
    let with = desired(
        &policy,
        &WorkerSettings {
            pushgateway_url: Some("http://pushgateway.monitoring:9091".into()),
            ..settings()
        },
    );
    let expected = vec![(
        "SIGNET_PUSHGATEWAY_URL".to_owned(),
        Some("http://pushgateway.monitoring:9091".to_owned()),
    )];
    assert_eq!(names(&with), vec![expected.clone(), expected]);
}
