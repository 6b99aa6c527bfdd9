//! Send windows: held notices, windows spanning midnight, the signer's zone, DST in Berlin,
//! and the next opening checked against an independent reading of a window.

use super::*;

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
