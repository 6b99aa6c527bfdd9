use super::*;

mod windows;
use crate::crd::Weekday::*;

fn at(text: &str) -> Timestamp {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// An instant as a [`Workflow`] holds it (and `assess` takes it).
fn db(at: Timestamp) -> DateTime<Utc> {
    to_chrono(at)
}

fn hours(h: i64) -> SignedDuration {
    SignedDuration::from_hours(h)
}

fn days(d: i64) -> SignedDuration {
    hours(24 * d)
}

fn seconds(s: i64) -> SignedDuration {
    SignedDuration::from_secs(s)
}

fn minutes(m: i64) -> SignedDuration {
    SignedDuration::from_mins(m)
}

fn zone(name: &str) -> TimeZone {
    time::zone(name).unwrap_or_else(|| panic!("{name} is bundled"))
}

/// 24h first, every 48h, 3 at most, timeout 14d, warning 48h before, escalation 24h after,
/// policy zone Europe/Berlin, no window.
fn timing() -> Timing {
    Timing {
        reminders: Some(ReminderTiming {
            first_after: hours(24),
            every: hours(48),
            max_reminders: 3,
            window: None,
        }),
        zone: zone("Europe/Berlin"),
        timeout_after: Some(days(14)),
        expiry_warning_before: Some(hours(48)),
        escalation_after: Some(hours(24)),
    }
}

fn with_window(start: &str, end: &str, days: &[crate::crd::Weekday]) -> Timing {
    let mut t = timing();
    t.reminders.as_mut().unwrap().window = Some(Window::new(
        crate::policy::validate::parse_clock(start).unwrap(),
        crate::policy::validate::parse_clock(end).unwrap(),
        days,
    ));
    t
}

const REQUESTED: &str = "2026-01-05T09:00:00Z"; // a Monday

fn workflow() -> Workflow {
    Workflow {
        id: uuid::Uuid::nil(),
        workflow_type: "enrollment-agreement".into(),
        signer_email: "ada@example.com".into(),
        signer_name: Some("Ada".into()),
        document_title: Some("Agreement".into()),
        signing_url: Some("https://sign.example.com/1".into()),
        signer_time_zone: None,
        status: "pending".into(),
        requested_at: db(at(REQUESTED)),
        deadline_at: None,
        reminders_sent: 0,
        last_reminded_at: None,
        expiry_warned_at: None,
        escalated_at: None,
    }
}

fn notice(kind: NoticeKind, sequence: i32) -> DueNotice {
    DueNotice {
        kind,
        sequence,
        readiness: Readiness::Now,
    }
}

fn held(kind: NoticeKind, sequence: i32, until: &str) -> DueNotice {
    DueNotice {
        kind,
        sequence,
        readiness: Readiness::HeldUntil(Some(db(at(until)))),
    }
}

#[test]
fn first_reminder_exactly_first_after_the_request() {
    let t = timing();
    let w = workflow();
    let requested = at(REQUESTED);
    assert_eq!(t.assess(&w, db(requested)), vec![]);
    assert_eq!(t.assess(&w, db(requested + hours(24) - seconds(1))), vec![]);
    assert_eq!(
        t.assess(&w, db(requested + hours(24))),
        vec![notice(NoticeKind::Reminder, 1)]
    );
}

#[test]
fn later_reminders_are_measured_from_the_last_one() {
    let t = timing();
    let mut w = workflow();
    let last = at("2026-01-06T15:30:00Z");
    w.reminders_sent = 1;
    w.last_reminded_at = Some(db(last));
    assert_eq!(t.assess(&w, db(last + hours(48) - seconds(1))), vec![]);
    assert_eq!(
        t.assess(&w, db(last + hours(48))),
        vec![notice(NoticeKind::Reminder, 2)]
    );
    w.reminders_sent = 2;
    assert_eq!(
        t.assess(&w, db(last + hours(48))),
        vec![notice(NoticeKind::Reminder, 3)]
    );
}

#[test]
fn no_reminder_past_the_cap() {
    let mut t = timing();
    t.escalation_after = None;
    let mut w = workflow();
    w.reminders_sent = 3;
    w.last_reminded_at = Some(db(at("2026-01-09T09:00:00Z")));
    assert_eq!(t.assess(&w, db(at("2026-01-15T09:00:00Z"))), vec![]);
    t.reminders.as_mut().unwrap().max_reminders = 4;
    assert_eq!(
        t.assess(&w, db(at("2026-01-15T09:00:00Z"))),
        vec![notice(NoticeKind::Reminder, 4)]
    );
}

#[test]
fn only_pending_workflows_are_reminded() {
    let t = timing();
    let now = at("2026-01-10T09:00:00Z");
    for status in [
        "signed",
        "declined",
        "cancelled",
        "timed_out",
        "Pending",
        "",
    ] {
        let mut w = workflow();
        w.status = status.into();
        assert_eq!(t.assess(&w, db(now)), vec![], "{status}");
    }
    assert_eq!(
        t.assess(&workflow(), db(now)),
        vec![notice(NoticeKind::Reminder, 1)]
    );
}

#[test]
fn the_deadline_stops_everything() {
    let mut t = timing();
    t.expiry_warning_before = None;
    let w = workflow();
    let deadline = at(REQUESTED) + days(14);
    assert_eq!(
        t.assess(&w, db(deadline - seconds(1))),
        vec![notice(NoticeKind::Reminder, 1)]
    );
    assert_eq!(t.assess(&w, db(deadline)), vec![]);

    // The row's own deadline wins over timeout.after, earlier or later.
    let mut early = workflow();
    early.deadline_at = Some(db(at("2026-01-06T12:00:00Z")));
    assert_eq!(t.assess(&early, db(at("2026-01-06T11:59:59Z"))).len(), 1);
    assert_eq!(t.assess(&early, db(at("2026-01-06T12:00:00Z"))), vec![]);
    let mut late = workflow();
    late.deadline_at = Some(db(at("2026-03-01T00:00:00Z")));
    assert_eq!(t.assess(&late, db(deadline + hours(1))).len(), 1);

    // Without a timeout section and without deadline_at there is no deadline.
    t.timeout_after = None;
    assert_eq!(t.deadline(&w), None);
    assert_eq!(
        t.assess(&w, db(at("2027-01-01T00:00:00Z"))),
        vec![notice(NoticeKind::Reminder, 1)]
    );
}

#[test]
fn downtime_yields_one_catch_up_reminder_not_a_burst() {
    let mut t = timing();
    t.timeout_after = None;
    t.expiry_warning_before = None;
    let mut w = workflow();
    // Down for three weeks: reminders 1, 2 and 3 were all "due" by now.
    let back = at(REQUESTED) + days(21);
    assert_eq!(
        t.assess(&w, db(back)),
        vec![notice(NoticeKind::Reminder, 1)]
    );
    // The worker claims it: the next one waits a full `every` from now.
    w.reminders_sent = 1;
    w.last_reminded_at = Some(db(back));
    assert_eq!(t.assess(&w, db(back + minutes(30))), vec![]);
    assert_eq!(t.assess(&w, db(back + hours(47))), vec![]);
    assert_eq!(
        t.assess(&w, db(back + hours(48))),
        vec![notice(NoticeKind::Reminder, 2)]
    );
}

#[test]
fn expiry_warning_once_before_the_deadline() {
    let mut t = timing();
    t.reminders.as_mut().unwrap().max_reminders = 1;
    t.escalation_after = None;
    let mut w = workflow();
    w.reminders_sent = 1;
    w.last_reminded_at = Some(db(at("2026-01-06T09:00:00Z")));
    let deadline = at(REQUESTED) + days(14);
    assert_eq!(t.assess(&w, db(deadline - hours(48) - seconds(1))), vec![]);
    assert_eq!(
        t.assess(&w, db(deadline - hours(48))),
        vec![notice(NoticeKind::ExpiryWarning, 1)]
    );
    assert_eq!(
        t.assess(&w, db(deadline - seconds(1))),
        vec![notice(NoticeKind::ExpiryWarning, 1)]
    );
    assert_eq!(t.assess(&w, db(deadline)), vec![]);
    w.expiry_warned_at = Some(db(deadline - hours(40)));
    assert_eq!(t.assess(&w, db(deadline - hours(30))), vec![]);
    // No deadline, no warning.
    t.timeout_after = None;
    w.expiry_warned_at = None;
    assert_eq!(t.assess(&w, db(deadline)), vec![]);
}

#[test]
fn escalation_once_after_the_last_reminder_when_exhausted() {
    let mut t = timing();
    t.expiry_warning_before = None;
    let mut w = workflow();
    let last = at("2026-01-10T09:00:00Z");
    w.reminders_sent = 2;
    w.last_reminded_at = Some(db(last));
    // Not exhausted: reminder 3, no escalation.
    assert_eq!(
        t.assess(&w, db(last + hours(48))),
        vec![notice(NoticeKind::Reminder, 3)]
    );
    w.reminders_sent = 3;
    assert_eq!(t.assess(&w, db(last + hours(24) - seconds(1))), vec![]);
    assert_eq!(
        t.assess(&w, db(last + hours(24))),
        vec![notice(NoticeKind::Escalation, 1)]
    );
    w.escalated_at = Some(db(last + hours(24)));
    assert_eq!(t.assess(&w, db(last + hours(30))), vec![]);
    t.escalation_after = None;
    w.escalated_at = None;
    assert_eq!(t.assess(&w, db(last + hours(30))), vec![]);
}

#[test]
fn several_notices_can_be_due_at_once() {
    let t = timing();
    let mut w = workflow();
    w.deadline_at = Some(db(at("2026-01-07T09:00:00Z")));
    assert_eq!(
        t.assess(&w, db(at("2026-01-06T10:00:00Z"))),
        vec![
            notice(NoticeKind::Reminder, 1),
            notice(NoticeKind::ExpiryWarning, 1)
        ]
    );
}

#[test]
fn without_reminders_nothing_is_due() {
    let mut t = timing();
    t.reminders = None;
    assert_eq!(
        t.assess(&workflow(), db(at("2026-01-18T08:00:00Z"))),
        vec![]
    );
}

#[test]
fn timing_from_the_example_policy() {
    let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/full.yaml"))
        .unwrap();
    let policy: crate::crd::SignaturePolicy = serde_saphyr::from_str(&yaml).unwrap();
    let t = Timing::from_spec(&policy.spec).unwrap();
    assert_eq!(t.zone, zone("Europe/Berlin"));
    let r = t.reminders.unwrap();
    assert_eq!(
        (r.first_after, r.every, r.max_reminders),
        (hours(24), hours(48), 3)
    );
    assert_eq!(
        r.window,
        Some(Window::new(8 * 60, 20 * 60, &[Mon, Tue, Wed, Thu, Fri]))
    );
    assert_eq!(t.timeout_after, Some(days(14)));
    assert_eq!(t.expiry_warning_before, Some(hours(48)));
    assert_eq!(t.escalation_after, Some(hours(24)));
}
