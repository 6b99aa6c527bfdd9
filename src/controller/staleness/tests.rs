use super::*;
use crate::controller::build::{self, WorkerSettings};
use crate::crd::{ReminderRun, RemindersStatus, SignaturePolicy, SignaturePolicyStatus};

const UTC: TimeZone = TimeZone::UTC;

fn zone(name: &str) -> TimeZone {
    time::zone(name).unwrap_or_else(|| panic!("{name} is bundled"))
}

/// A UTC instant from RFC 3339.
fn t(text: &str) -> Timestamp {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn schedule(text: &str) -> Schedule {
    Schedule::parse(text).unwrap()
}

/// A clock with only `last_success` known.
fn clock<'a>(
    schedule: &'a Schedule,
    zone: TimeZone,
    run_limit: u64,
    last_success: &str,
) -> SectionClock<'a> {
    SectionClock {
        schedule,
        zone,
        run_limit: Duration::from_secs(run_limit),
        last_success: Some(t(last_success)),
        cron_job_created: None,
        policy_created: None,
        resumed: None,
    }
}

fn stale_at(verdict: Verdict) -> Timestamp {
    match verdict {
        Verdict::Fresh { stale_at, .. } | Verdict::Stale { stale_at, .. } => stale_at,
        other => panic!("no threshold in {other:?}"),
    }
}

#[test]
fn stale_exactly_when_the_third_run_and_its_deadline_have_passed() {
    let every_30 = schedule("*/30 * * * *");
    // Runs at 10:30, 11:00 and 11:30 may each take 27 minutes, plus two of slack.
    let clock = clock(&every_30, UTC, 27 * 60, "2026-11-20T10:00:05Z");
    let before = assess(&clock, false, t("2026-11-20T11:58:59Z"));
    assert_eq!(
        before,
        Verdict::Fresh {
            baseline: Baseline {
                at: t("2026-11-20T10:00:05Z"),
                since: Since::LastSuccess
            },
            stale_at: t("2026-11-20T11:59:00Z"),
        }
    );
    assert!(matches!(
        assess(&clock, false, t("2026-11-20T11:59:00Z")),
        Verdict::Stale { stale_at, .. } if stale_at == t("2026-11-20T11:59:00Z")
    ));
    assert!(matches!(
        assess(&clock, false, t("2026-11-25T00:00:00Z")),
        Verdict::Stale { .. }
    ));
}

#[test]
fn a_success_exactly_at_a_fire_time_counts_the_runs_after_it() {
    let every_30 = schedule("*/30 * * * *");
    let clock = clock(&every_30, UTC, 0, "2026-11-20T10:30:00Z");
    // 11:00, 11:30, 12:00.
    assert_eq!(
        clock.stale_at(t("2026-11-20T10:30:00Z")),
        Some(t("2026-11-20T12:02:00Z"))
    );
}

#[test]
fn weekday_schedules_count_runs_not_days() {
    let weekdays = schedule("0 9 * * 1-5");
    // Friday's run succeeded; the next three are Monday, Tuesday and Wednesday at 09:00.
    let clock = clock(&weekdays, UTC, 6 * 3_600, "2026-11-20T09:00:30Z");
    assert_eq!(
        stale_at(assess(&clock, false, t("2026-11-23T20:00:00Z"))),
        t("2026-11-25T15:02:00Z")
    );
    assert!(
        matches!(
            assess(&clock, false, t("2026-11-24T20:00:00Z")),
            Verdict::Fresh { .. }
        ),
        "a weekend is not three missed runs"
    );
    assert!(matches!(
        assess(&clock, false, t("2026-11-25T15:02:00Z")),
        Verdict::Stale { .. }
    ));
}

#[test]
fn a_fire_time_lost_to_spring_forward_is_not_a_missed_run() {
    let nightly = schedule("30 2 * * *");
    // Berlin skips 02:00-03:00 on 2026-03-29. Last success: 27 March, 02:30:40 CET.
    let clock = clock(
        &nightly,
        zone("Europe/Berlin"),
        3_600,
        "2026-03-27T01:30:40Z",
    );
    // Runs: 28 March 02:30 CET, (29 March has no 02:30), 30 and 31 March 02:30 CEST.
    assert_eq!(
        clock.stale_at(t("2026-03-27T01:30:40Z")),
        Some(t("2026-03-31T01:32:00Z"))
    );
}

#[test]
fn a_repeated_hour_at_fall_back_fires_once() {
    let hourly = schedule("0 * * * *");
    // New York repeats 01:00-02:00 on 2026-11-01. Last success 00:30 EDT.
    let clock = clock(&hourly, zone("America/New_York"), 0, "2026-11-01T04:30:00Z");
    // 01:00 EDT, 02:00 EST (01:00 EST is the same wall time and does not fire again), 03:00 EST:
    // four hours of elapsed time for three runs.
    assert_eq!(
        clock.stale_at(t("2026-11-01T04:30:00Z")),
        Some(t("2026-11-01T08:02:00Z"))
    );
}

#[test]
fn suspended_is_never_stale() {
    let every_30 = schedule("*/30 * * * *");
    let clock = clock(&every_30, UTC, 60, "2020-01-01T00:00:00Z");
    assert_eq!(
        assess(&clock, true, t("2026-11-20T00:00:00Z")),
        Verdict::Suspended
    );
}

#[test]
fn a_policy_that_never_ran_is_measured_from_its_creation() {
    let hourly = schedule("0 * * * *");
    let clock = SectionClock {
        schedule: &hourly,
        zone: UTC,
        run_limit: Duration::from_secs(600),
        last_success: None,
        cron_job_created: None,
        policy_created: Some(t("2026-11-20T10:15:00Z")),
        resumed: None,
    };
    let fresh = assess(&clock, false, t("2026-11-20T13:11:59Z"));
    assert_eq!(
        fresh,
        Verdict::Fresh {
            baseline: Baseline {
                at: t("2026-11-20T10:15:00Z"),
                since: Since::PolicyCreated
            },
            stale_at: t("2026-11-20T13:12:00Z"),
        }
    );
    assert!(matches!(
        assess(&clock, false, t("2026-11-20T13:12:00Z")),
        Verdict::Stale { .. }
    ));
}

#[test]
fn a_resumed_policy_is_measured_from_the_resume() {
    let hourly = schedule("0 * * * *");
    let clock = SectionClock {
        schedule: &hourly,
        zone: UTC,
        run_limit: Duration::from_secs(600),
        last_success: Some(t("2026-11-01T10:00:20Z")),
        cron_job_created: Some(t("2026-10-01T00:00:00Z")),
        policy_created: Some(t("2026-10-01T00:00:00Z")),
        resumed: Some(t("2026-11-20T10:15:00Z")),
    };
    let verdict = assess(&clock, false, t("2026-11-20T12:00:00Z"));
    assert_eq!(
        verdict,
        Verdict::Fresh {
            baseline: Baseline {
                at: t("2026-11-20T10:15:00Z"),
                since: Since::Resumed
            },
            stale_at: t("2026-11-20T13:12:00Z"),
        },
        "nineteen days without a success, but suspended for them"
    );
}

#[test]
fn a_section_enabled_later_is_measured_from_its_cron_job() {
    let hourly = schedule("0 * * * *");
    let clock = SectionClock {
        schedule: &hourly,
        zone: UTC,
        run_limit: Duration::from_secs(600),
        last_success: None,
        cron_job_created: Some(t("2026-11-20T10:15:00Z")),
        policy_created: Some(t("2026-01-01T00:00:00Z")),
        resumed: Some(t("2026-01-01T00:00:01Z")),
    };
    assert_eq!(
        clock.baseline(),
        Some(Baseline {
            at: t("2026-11-20T10:15:00Z"),
            since: Since::CronJobCreated
        })
    );
}

#[test]
fn on_a_tie_the_last_success_names_the_baseline() {
    let hourly = schedule("0 * * * *");
    let mut clock = clock(&hourly, UTC, 0, "2026-11-20T10:00:00Z");
    clock.resumed = Some(t("2026-11-20T10:00:00Z"));
    clock.policy_created = Some(t("2026-11-20T10:00:00Z"));
    assert_eq!(clock.baseline().map(|b| b.since), Some(Since::LastSuccess));
}

#[test]
fn nothing_to_measure_from_or_a_schedule_that_never_fires_is_never_stale() {
    let hourly = schedule("0 * * * *");
    let mut clock = clock(&hourly, UTC, 0, "2026-11-20T10:00:00Z");
    clock.last_success = None;
    assert_eq!(
        assess(&clock, false, t("2030-01-01T00:00:00Z")),
        Verdict::Unmeasured
    );
    let february_30 = schedule("0 0 30 2 *");
    let clock = SectionClock {
        schedule: &february_30,
        ..clock
    };
    let clock = SectionClock {
        last_success: Some(t("2020-01-01T00:00:00Z")),
        ..clock
    };
    assert_eq!(
        assess(&clock, false, t("2030-01-01T00:00:00Z")),
        Verdict::Unmeasured
    );
}

fn policy(status: Option<SignaturePolicyStatus>, suspend: bool) -> SignaturePolicy {
    let spec = serde_json::from_value(serde_json::json!({
        "suspend": suspend,
        "timeZone": "Europe/Berlin",
        "database": {"urlSecretRef": {"name": "db", "key": "url"}},
        "reminders": {"schedule": "*/30 * * * *", "channels": ["log"]},
        "timeout": {"after": "14d", "schedule": "0 */2 * * *", "channels": ["log"]},
        "channels": [{"name": "log", "log": {}}],
    }))
    .unwrap();
    let mut policy = SignaturePolicy::new("agreements", spec);
    policy.metadata.namespace = Some("enrollment".into());
    policy.metadata.creation_timestamp = Some(Time(t("2026-11-01T00:00:00Z")));
    policy.status = status;
    policy
}

fn report(policy: &SignaturePolicy, resumed: Option<&str>, now: &str) -> Report {
    let valid = ValidPolicy::new(policy).unwrap();
    let settings = WorkerSettings {
        image: "signet".into(),
        image_pull_policy: None,
        pushgateway_url: None,
    };
    let desired = build::desired(&valid, &settings);
    let created = BTreeMap::from([
        (Section::Reminders, Time(t("2026-11-01T00:00:03Z"))),
        (Section::Timeouts, Time(t("2026-11-01T00:00:03Z"))),
    ]);
    Report::evaluate(
        &valid,
        &desired,
        &created,
        resumed.map(|r| Time(t(r))).as_ref(),
        &Time(t(now)),
    )
}

/// Reminders failing since a success at 10:00:05 UTC; timeouts never reported.
fn failing_reminders() -> SignaturePolicyStatus {
    SignaturePolicyStatus {
        reminders: Some(RemindersStatus {
            last_run: Some(ReminderRun {
                job: "agreements-reminders-29390000".into(),
                started_at: Time(t("2026-11-20T11:30:00Z")),
                finished_at: Time(t("2026-11-20T11:30:07Z")),
                outcome: RunOutcome::Failed,
                reason: None,
                message: None,
                due: 4,
                sent: 0,
                held: 0,
                failed: 0,
                possible_duplicates: 0,
            }),
            last_successful_run_at: Some(Time(t("2026-11-20T10:00:05Z"))),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn the_report_names_what_is_stale_and_where_to_look() {
    let policy = policy(Some(failing_reminders()), false);
    let report = report(
        &policy,
        Some("2026-11-01T00:00:00Z"),
        "2026-11-20T12:00:00Z",
    );
    // The reminders Job may run 27 minutes: stale from 11:59 UTC. The timeouts CronJob, created
    // on 1 November, never reported a run: stale too, one line each, one hint at the end.
    assert!(report.is_stale());
    let summary = report.summary();
    assert_eq!(
        summary,
        StaleSummary {
            stale: true,
            reason: "NoRecentSuccess",
            message: "reminders: no successful run since the last one at 2026-11-20T10:00:05Z, and at least 3 scheduled runs (*/30 * * * * in Europe/Berlin) have passed; last run: Failed at 2026-11-20T11:30:07Z (Job agreements-reminders-29390000); timeouts: no successful run since its CronJob was created at 2026-11-01T00:00:03Z, and at least 3 scheduled runs (0 */2 * * * in Europe/Berlin) have passed; last run: none reported; see `kubectl get jobs -n enrollment -l signet.dev/policy=agreements` and the worker logs".into(),
        }
    );
    assert_eq!(
        report.sections[1].verdict,
        Verdict::Stale {
            baseline: Baseline {
                at: t("2026-11-01T00:00:03Z"),
                since: Since::CronJobCreated
            },
            stale_at: t("2026-11-01T06:50:00Z"),
        },
        "timeouts never reported a run since the CronJob was created (01:00 Berlin)"
    );
}

#[test]
fn the_report_requeues_at_the_next_threshold_and_clears_with_a_success() {
    let mut status = failing_reminders();
    status.timeouts = Some(crate::crd::TimeoutsStatus {
        last_successful_run_at: Some(Time(t("2026-11-20T11:00:09Z"))),
        ..Default::default()
    });
    let before = report(
        &policy(Some(status.clone()), false),
        Some("2026-11-01T00:00:00Z"),
        "2026-11-20T11:58:00Z",
    );
    assert!(!before.is_stale());
    assert_eq!(
        before.summary(),
        StaleSummary {
            stale: false,
            reason: "RunsSucceeding",
            message: "no section has gone 3 scheduled runs without a successful run".into(),
        }
    );
    // Reminders turn stale at 11:59:00 UTC, timeouts (Berlin 14:00, 16:00, 18:00) at 18:50.
    assert_eq!(
        before.recheck_in(&Time(t("2026-11-20T11:58:00Z"))),
        Some(Duration::from_secs(61))
    );

    // A run succeeds a minute after reminders turned stale.
    status.reminders.as_mut().unwrap().last_successful_run_at =
        Some(Time(t("2026-11-20T12:00:04Z")));
    let recovered = report(
        &policy(Some(status), false),
        Some("2026-11-01T00:00:00Z"),
        "2026-11-20T12:01:00Z",
    );
    assert!(!recovered.is_stale());
    assert_eq!(
        recovered.recovery_note(),
        "no section is stale any more; last successful runs: reminders at 2026-11-20T12:00:04Z, timeouts at 2026-11-20T11:00:09Z"
    );
}

#[test]
fn a_suspended_policy_reports_suspended() {
    let policy = policy(Some(failing_reminders()), true);
    let report = report(&policy, None, "2026-11-28T00:00:00Z");
    assert!(!report.is_stale());
    assert_eq!(report.summary().reason, "Suspended");
    assert_eq!(report.recheck_in(&Time(t("2026-11-28T00:00:00Z"))), None);
}

#[test]
fn last_runs_that_failed_are_recognised() {
    let status = failing_reminders();
    let run = LastRun::of(Some(&status), Section::Reminders).unwrap();
    assert!(run.failed());
    assert_eq!(LastRun::of(Some(&status), Section::Timeouts), None);
    for (outcome, failed) in [
        (RunOutcome::Succeeded, false),
        (RunOutcome::CompletedWithFailures, false),
        (RunOutcome::Failed, true),
        (RunOutcome::ConfigError, true),
    ] {
        assert_eq!(
            LastRun {
                outcome,
                ..run.clone()
            }
            .failed(),
            failed
        );
    }
}

#[test]
fn an_invalid_spec_still_reports_failed_last_runs() {
    let policy = policy(Some(failing_reminders()), false);
    let health = unmeasured_health(&policy);
    assert_eq!(
        health,
        [
            SectionHealth {
                section: Section::Reminders,
                stale: false,
                last_run_failed: true,
                channel_rejected: false,
            },
            SectionHealth {
                section: Section::Timeouts,
                stale: false,
                last_run_failed: false,
                channel_rejected: false,
            },
        ]
    );
}

/// `failing_reminders()` with the reason a worker gives when a channel refuses everything.
fn rejected_reminders() -> SignaturePolicyStatus {
    let mut status = failing_reminders();
    if let Some(run) = status.reminders.as_mut().and_then(|r| r.last_run.as_mut()) {
        run.reason = Some("ChannelRejected".into());
    }
    status
}

#[test]
fn a_run_a_channel_rejected_is_reported_for_its_section_only() {
    let rejecting = policy(Some(rejected_reminders()), false);
    let report = report(
        &rejecting,
        Some("2026-11-01T00:00:00Z"),
        "2026-11-20T12:00:00Z",
    );
    let rejected = |health: &[SectionHealth]| -> Vec<(Section, bool)> {
        health
            .iter()
            .map(|h| (h.section, h.channel_rejected))
            .collect()
    };
    let expected = [(Section::Reminders, true), (Section::Timeouts, false)];
    assert_eq!(rejected(&report.health()), expected);
    assert_eq!(rejected(&unmeasured_health(&rejecting)), expected);
    // Another reason is a failure, not a rejection.
    let failing = policy(Some(failing_reminders()), false);
    assert!(
        unmeasured_health(&failing)
            .iter()
            .all(|h| !h.channel_rejected)
    );
}
