use super::*;
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
fn send_window_holds_reminders_until_it_opens() {
    // 08:00-20:00 Berlin on weekdays; in January Berlin is UTC+1.
    let t = with_window("08:00", "20:00", &[Mon, Tue, Wed, Thu, Fri]);
    let mut w = workflow();
    w.requested_at = db(at("2026-01-04T09:00:00Z"));
    // Tuesday 06:59 UTC = 07:59 Berlin: held until 08:00 Berlin.
    assert_eq!(
        t.assess(&w, db(at("2026-01-06T06:59:00Z"))),
        vec![held(NoticeKind::Reminder, 1, "2026-01-06T07:00:00Z")]
    );
    assert_eq!(
        t.assess(&w, db(at("2026-01-06T07:00:00Z"))),
        vec![notice(NoticeKind::Reminder, 1)]
    );
    // 19:59 Berlin inside, 20:00 Berlin outside (end exclusive): next day 08:00.
    assert_eq!(
        t.assess(&w, db(at("2026-01-06T18:59:00Z"))),
        vec![notice(NoticeKind::Reminder, 1)]
    );
    assert_eq!(
        t.assess(&w, db(at("2026-01-06T19:00:00Z"))),
        vec![held(NoticeKind::Reminder, 1, "2026-01-07T07:00:00Z")]
    );
    // Friday evening: held over the weekend until Monday 08:00.
    assert_eq!(
        t.assess(&w, db(at("2026-01-09T19:30:00Z"))),
        vec![held(NoticeKind::Reminder, 1, "2026-01-12T07:00:00Z")]
    );
    assert_eq!(
        t.assess(&w, db(at("2026-01-10T12:00:00Z"))),
        vec![held(NoticeKind::Reminder, 1, "2026-01-12T07:00:00Z")]
    );
}

#[test]
fn the_window_applies_to_expiry_warnings_but_not_escalations() {
    let t = with_window("08:00", "20:00", &Weekday::all());
    let night = at("2026-01-18T02:00:00Z"); // 03:00 Berlin, a day before the deadline
    let mut w = workflow();
    w.reminders_sent = 3;
    w.last_reminded_at = Some(db(at("2026-01-13T09:00:00Z")));
    assert_eq!(
        t.assess(&w, db(night)),
        vec![
            held(NoticeKind::ExpiryWarning, 1, "2026-01-18T07:00:00Z"),
            notice(NoticeKind::Escalation, 1),
        ]
    );
}

#[test]
fn the_signer_zone_wins_when_valid() {
    let t = with_window("09:00", "17:00", &Weekday::all());
    let now = at("2026-01-06T15:00:00Z"); // 16:00 Berlin, 10:00 New York, 00:00 Tokyo (Wed)
    let mut w = workflow();
    assert_eq!(t.assess(&w, db(now)), vec![notice(NoticeKind::Reminder, 1)]);
    w.signer_time_zone = Some("America/New_York".into());
    assert_eq!(t.assess(&w, db(now)), vec![notice(NoticeKind::Reminder, 1)]);
    w.signer_time_zone = Some("Asia/Tokyo".into());
    assert_eq!(
        t.assess(&w, db(now)),
        vec![held(NoticeKind::Reminder, 1, "2026-01-07T00:00:00Z")]
    );
    assert_eq!(t.signer_zone(&w), zone("Asia/Tokyo"));
    assert_eq!(t.zone_for(&w), chrono_tz::Asia::Tokyo);
    // Unknown or empty zones fall back to spec.timeZone, and so do wrongly cased names (as
    // chrono-tz did; jiff's own lookup would take them).
    for name in [
        "Mars/Olympus",
        "",
        "asia/tokyo ",
        "asia/tokyo",
        "Etc/Unknown",
    ] {
        w.signer_time_zone = Some(name.into());
        assert_eq!(t.signer_zone(&w), zone("Europe/Berlin"), "{name:?}");
        assert_eq!(t.zone_for(&w), chrono_tz::Europe::Berlin, "{name:?}");
    }
}

#[test]
fn windows_spanning_midnight_belong_to_the_day_they_open() {
    // Fridays 22:00 to 06:00 (into Saturday), UTC to keep the arithmetic plain.
    let window = Window::new(22 * 60, 6 * 60, &[Fri]);
    let zone = &TimeZone::UTC;
    let friday_late = at("2026-01-09T23:00:00Z");
    let saturday_early = at("2026-01-10T05:59:00Z");
    assert_eq!(window.readiness(friday_late, zone), Readiness::Now);
    assert_eq!(window.readiness(saturday_early, zone), Readiness::Now);
    assert_eq!(
        window.readiness(at("2026-01-10T06:00:00Z"), zone),
        Readiness::HeldUntil(Some(db(at("2026-01-16T22:00:00Z"))))
    );
    // Friday early morning belongs to Thursday's window, which is closed.
    assert_eq!(
        window.readiness(at("2026-01-09T03:00:00Z"), zone),
        Readiness::HeldUntil(Some(db(at("2026-01-09T22:00:00Z"))))
    );
    // Saturday 23:00 is not a Friday night.
    assert_eq!(
        window.readiness(at("2026-01-10T23:00:00Z"), zone),
        Readiness::HeldUntil(Some(db(at("2026-01-16T22:00:00Z"))))
    );
    let every_night = Window::new(22 * 60, 6 * 60, &Weekday::all());
    assert_eq!(
        every_night.readiness(at("2026-01-10T12:00:00Z"), zone),
        Readiness::HeldUntil(Some(db(at("2026-01-10T22:00:00Z"))))
    );
}

#[test]
fn dst_spring_forward_in_berlin() {
    // 2026-03-29: 02:00 CET becomes 03:00 CEST. Saturday 08:00 is 07:00 UTC, Sunday 08:00 06:00 UTC.
    let berlin = &zone("Europe/Berlin");
    let day = Window::new(8 * 60, 20 * 60, &Weekday::all());
    assert_eq!(
        day.readiness(at("2026-03-28T19:30:00Z"), berlin), // Sat 20:30 CET
        Readiness::HeldUntil(Some(db(at("2026-03-29T06:00:00Z"))))
    );
    assert_eq!(
        day.readiness(at("2026-03-29T06:00:00Z"), berlin),
        Readiness::Now
    );
    assert_eq!(
        day.readiness(at("2026-03-29T05:59:00Z"), berlin),
        Readiness::HeldUntil(Some(db(at("2026-03-29T06:00:00Z"))))
    );
    // Closing moves too: 20:00 CEST is 18:00 UTC.
    assert_eq!(
        day.readiness(at("2026-03-29T18:00:00Z"), berlin),
        Readiness::HeldUntil(Some(db(at("2026-03-30T06:00:00Z"))))
    );

    // A window opening inside the gap opens when the gap ends (03:00 CEST = 01:00 UTC).
    let gap_start = Window::new(2 * 60 + 30, 3 * 60 + 30, &[Sun]);
    assert_eq!(
        gap_start.next_open(at("2026-03-28T12:00:00Z"), berlin),
        Some(at("2026-03-29T01:00:00Z"))
    );
    assert_eq!(
        gap_start.readiness(at("2026-03-29T01:15:00Z"), berlin),
        Readiness::Now
    );
    // A window lying wholly in the gap does not open that day; the next Sunday it does.
    let in_gap = Window::new(2 * 60, 3 * 60, &[Sun]);
    assert_eq!(
        in_gap.next_open(at("2026-03-28T12:00:00Z"), berlin),
        Some(at("2026-04-05T00:00:00Z"))
    );
    // Overnight window across the change: Sat 22:00 CET (21:00 UTC) to Sun 06:00 CEST (04:00 UTC).
    let night = Window::new(22 * 60, 6 * 60, &[Sat]);
    assert_eq!(
        night.readiness(at("2026-03-29T03:59:00Z"), berlin),
        Readiness::Now
    );
    assert_eq!(
        night.readiness(at("2026-03-29T04:00:00Z"), berlin),
        Readiness::HeldUntil(Some(db(at("2026-04-04T20:00:00Z"))))
    );
}

#[test]
fn dst_fall_back_in_berlin() {
    // 2026-10-25: 03:00 CEST becomes 02:00 CET. Saturday 08:00 is 06:00 UTC, Sunday 08:00 07:00 UTC.
    let berlin = &zone("Europe/Berlin");
    let day = Window::new(8 * 60, 20 * 60, &Weekday::all());
    assert_eq!(
        day.readiness(at("2026-10-24T18:30:00Z"), berlin), // Sat 20:30 CEST
        Readiness::HeldUntil(Some(db(at("2026-10-25T07:00:00Z"))))
    );
    assert_eq!(
        day.readiness(at("2026-10-25T06:30:00Z"), berlin), // 07:30 CET
        Readiness::HeldUntil(Some(db(at("2026-10-25T07:00:00Z"))))
    );
    assert_eq!(
        day.readiness(at("2026-10-25T18:59:00Z"), berlin),
        Readiness::Now
    );
    assert_eq!(
        day.readiness(at("2026-10-25T19:00:00Z"), berlin),
        Readiness::HeldUntil(Some(db(at("2026-10-26T07:00:00Z"))))
    );
    // A window opening in the repeated hour opens at its first occurrence (02:30 CEST).
    let repeated = Window::new(2 * 60 + 30, 4 * 60, &[Sun]);
    assert_eq!(
        repeated.next_open(at("2026-10-24T22:00:00Z"), berlin),
        Some(at("2026-10-25T00:30:00Z"))
    );
    // Both occurrences of 02:30 are inside it; 04:00 CET (03:00 UTC) is not.
    assert_eq!(
        repeated.readiness(at("2026-10-25T00:30:00Z"), berlin),
        Readiness::Now
    );
    assert_eq!(
        repeated.readiness(at("2026-10-25T01:30:00Z"), berlin),
        Readiness::Now
    );
    assert_eq!(
        repeated.readiness(at("2026-10-25T03:00:00Z"), berlin),
        Readiness::HeldUntil(Some(db(at("2026-11-01T01:30:00Z"))))
    );
}

#[test]
fn signer_zone_across_dst_through_assess() {
    // The policy is in UTC; the signer in Berlin, whose clock changes on 2026-03-29.
    let mut t = with_window("08:00", "09:00", &Weekday::all());
    t.zone = TimeZone::UTC;
    t.timeout_after = None;
    t.expiry_warning_before = None;
    let mut w = workflow();
    w.requested_at = db(at("2026-03-20T09:00:00Z"));
    w.signer_time_zone = Some("Europe/Berlin".into());
    // Saturday 07:30 UTC is 08:30 CET: inside.
    assert_eq!(
        t.assess(&w, db(at("2026-03-28T07:30:00Z"))),
        vec![notice(NoticeKind::Reminder, 1)]
    );
    // Sunday 07:30 UTC is 09:30 CEST: outside, held until Monday 08:00 CEST = 06:00 UTC.
    assert_eq!(
        t.assess(&w, db(at("2026-03-29T07:30:00Z"))),
        vec![held(NoticeKind::Reminder, 1, "2026-03-30T06:00:00Z")]
    );
    // For a signer without a zone, UTC decides: Sunday 07:30 UTC is held until 08:00 UTC.
    w.signer_time_zone = None;
    assert_eq!(
        t.assess(&w, db(at("2026-03-29T07:30:00Z"))),
        vec![held(NoticeKind::Reminder, 1, "2026-03-29T08:00:00Z")]
    );
}

/// Whether local wall time `wall` lies in the window from `start` to `end` (minutes after
/// midnight) on `days`, read from the policy reference rather than from [`Window`]: a window
/// whose end is earlier than its start spans midnight and belongs to the day it opens on.
fn open_by_the_docs(start: i32, end: i32, days: &[Weekday], wall: jiff::civil::DateTime) -> bool {
    let minute = i32::from(wall.hour()) * 60 + i32::from(wall.minute());
    let on = |date: jiff::civil::Date| days.contains(&Weekday::from_jiff(date.weekday()));
    if start < end {
        on(wall.date()) && start <= minute && minute < end
    } else {
        (on(wall.date()) && minute >= start)
            || (on(wall.date().yesterday().unwrap()) && minute < end)
    }
}

#[test]
fn next_open_is_always_inside_the_window_and_after_now() {
    // Every half hour over a year, in zones with and without DST, for several windows. Openings
    // are checked against a scan of the wall clock, quarter hour by quarter hour: the windows
    // start on quarter hours and these zones' offsets and transitions fall on quarter hours, so
    // a window cannot open between two steps of the scan.
    let windows: [(i32, i32, &[Weekday]); 4] = [
        (8 * 60, 20 * 60, &[Mon, Tue, Wed, Thu, Fri]),
        (22 * 60, 6 * 60, &[Sat, Sun]),
        (
            2 * 60 + 15,
            2 * 60 + 45,
            &[Mon, Tue, Wed, Thu, Fri, Sat, Sun],
        ),
        (0, 30, &[Wed]),
    ];
    let zones = [
        zone("Europe/Berlin"),
        zone("America/New_York"),
        zone("Australia/Lord_Howe"),
        TimeZone::UTC,
    ];
    let start = at("2026-01-01T00:00:00Z");
    let quarter = minutes(15);
    let mut scanned = 0;
    for zone in &zones {
        let name = time::zone_name(zone);
        for &(open, close, days_open) in &windows {
            assert_eq!((open % 15, close % 15), (0, 0));
            let window = Window::new(open as u32, close as u32, days_open);
            let is_open =
                |t: Timestamp| open_by_the_docs(open, close, days_open, zone.to_datetime(t));
            let mut now = start;
            let mut sample = 0;
            while now < start + days(366) {
                let readiness = window.readiness(now, zone);
                assert_eq!(
                    readiness == Readiness::Now,
                    is_open(now),
                    "{window:?} at {now} in {name}"
                );
                if let Readiness::HeldUntil(until) = readiness {
                    let until =
                        from_chrono(until.unwrap_or_else(|| {
                            panic!("{window:?} never opens after {now} in {name}")
                        }));
                    assert!(
                        until > now && is_open(until),
                        "{window:?} in {name}: {now} -> {until}"
                    );
                    assert!(
                        !is_open(until - minutes(1)),
                        "{window:?} in {name}: {now} -> {until}"
                    );
                    // Every 29th sample (14.5 hours apart, so every half hour of the day in turn): no
                    // quarter hour between now and the opening is open.
                    if sample % 29 == 0 {
                        let mut t = now + quarter;
                        while t < until {
                            assert!(
                                !is_open(t),
                                "{window:?} in {name}: open at {t}, before {until}"
                            );
                            t += quarter;
                            scanned += 1;
                        }
                        assert_eq!(
                            t, until,
                            "{window:?} in {name}: opens off the quarter hours"
                        );
                    }
                }
                sample += 1;
                now += minutes(30);
            }
        }
    }
    assert!(scanned > 10_000, "the scan ran ({scanned} quarter hours)");
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
