use super::*;
use jiff::civil::date;
use jiff::tz::Disambiguation;

fn utc(y: i16, mo: i8, d: i8, h: i8, mi: i8) -> Zoned {
    date(y, mo, d)
        .at(h, mi, 0, 0)
        .to_zoned(TimeZone::UTC)
        .expect("valid")
}

fn berlin_zone() -> TimeZone {
    TimeZone::get("Europe/Berlin").expect("bundled")
}

/// Berlin wall time; in the fall-back overlap, the first (summer-time) instant.
fn berlin(y: i16, mo: i8, d: i8, h: i8, mi: i8) -> Zoned {
    let wall = date(y, mo, d).at(h, mi, 0, 0);
    let ambiguous = berlin_zone().into_ambiguous_zoned(wall);
    let gap = matches!(ambiguous.offset(), jiff::tz::AmbiguousOffset::Gap { .. });
    assert!(!gap, "{wall} is in a gap");
    ambiguous
        .disambiguate(Disambiguation::Earlier)
        .expect("valid")
}

fn sched(spec: &str) -> Schedule {
    Schedule::parse(spec).unwrap_or_else(|e| panic!("{spec:?} should parse: {e}"))
}

fn error(spec: &str) -> String {
    Schedule::parse(spec).map_or_else(|e| e.to_string(), |s| panic!("{spec:?} gave {s:?}"))
}

fn secs(seconds: u64) -> Option<Duration> {
    Some(Duration::from_secs(seconds))
}

fn bits(values: &[u32]) -> u64 {
    values.iter().fold(0, |acc, v| acc | 1 << v)
}

#[test]
fn valid_schedules_parse_to_the_expected_bits() {
    assert_eq!(sched("*/30 * * * *").minute, bits(&[0, 30]));
    assert_eq!(
        sched("0 */2 * * *").hour,
        bits(&[0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22])
    );
    assert_eq!(sched("0 9 * * MON-FRI").dow, bits(&[1, 2, 3, 4, 5]));
    assert_eq!(sched("0 9 * * mon,wed,fri").dow, bits(&[1, 3, 5]));
    let s = sched("15 10 1 JAN,jul *");
    assert_eq!(
        [s.minute, s.hour, s.dom, s.month],
        [1 << 15, 1 << 10, 1 << 1, bits(&[1, 7])]
    );
    assert_eq!(sched("0 0 ? * *"), sched("0 0 * * *"));
    assert_eq!(sched("0-59/15 * * * *").minute, bits(&[0, 15, 30, 45]));
    assert_eq!(sched("5/15 * * * *").minute, bits(&[5, 20, 35, 50]));
    assert_eq!(sched("0 0 * feb/5 *").month, bits(&[2, 7, 12]));
    assert_eq!(
        "0 9 * * 1".parse::<Schedule>(),
        Schedule::parse("0 9 * * mOn")
    );
    // Go's strings.ToLower turns 'İ' into 'i', so robfig reads this as Friday.
    assert_eq!(sched("0 0 * * FR\u{130}").dow, 1 << 5);
    assert!(sched("0 0 * * *").dom_star && sched("0 0 */1 * *").dom_star);
    assert!(!sched("0 0 */2 * *").dom_star && !sched("0 0 1-31 * *").dom_star);
}

#[test]
fn robfig_quirks_are_mirrored() {
    assert_eq!(sched("*-5 * * * *"), sched("* * * * *"));
    assert_eq!(sched("+5 * * * *").minute, 1 << 5);
    assert_eq!(sched("1,,2 * * * *").minute, bits(&[1, 2]));
    assert_eq!(sched("0\t0  *\n* *"), sched("@daily"));
    assert_eq!(sched(", * * * *").next_after(&utc(2026, 1, 1, 0, 0)), None);
    assert!(error(" @daily").starts_with("expected exactly 5 fields"));
    assert!(error("@daily ").starts_with("unrecognized descriptor \"@daily \""));
    assert!(error("@every").starts_with("unrecognized descriptor \"@every\""));
}

#[test]
fn descriptors_match_their_five_field_equivalents() {
    for (descriptor, fields) in [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
    ] {
        assert_eq!(sched(descriptor), sched(fields), "{descriptor}");
    }
    for (spec, seconds) in [
        ("@every 1h30m", 5400),
        ("@every 90s", 90),
        ("@every 1.5h", 5400),
        ("@every 500ms", 1),
        ("@every 2.9s", 2),
        ("@every .5m", 30),
        ("@every +1m0.5s", 60),
        ("@every 1h1us1\u{b5}s1\u{3bc}s1ns", 3600),
        ("@every 1.18446744073709551619s", 1),
    ] {
        assert_eq!(sched(spec).every, secs(seconds), "{spec}");
    }
}

#[test]
fn invalid_schedules_have_exact_messages() {
    let cases = r#"
        */70 * * * *     => minute 70 is out of range (0-59)
        */60 * * * *     => minute 60 is out of range (0-59)
        0 25 * * *       => hour 25 is out of range (0-23)
        0 0 * * 7        => day-of-week 7 is out of range (0-6; use 0 for Sunday)
        0 0 * * 5-7      => day-of-week 7 is out of range (0-6; use 0 for Sunday)
        0 0 * * 8        => day-of-week 8 is out of range (0-6)
        0 0 * * */7      => day-of-week 7 is out of range (0-6)
        0 0 * 13 *       => month 13 is out of range (1-12)
        0 0 0 * *        => day-of-month 0 is out of range (1-31)
        0 0 */32 * *     => day-of-month 32 is out of range (1-31)
        1000000000000000000000 * * * * => minute 18446744073709551615 is out of range (0-59)
        */0 * * * *      => step 0 in minute field "*/0" must be a positive number
        */x * * * *      => step "x" in minute field is not a positive number
        */-1 * * * *     => step "-1" in minute field is not a positive number
        0 5-3 * * *      => range 5-3 in hour field is backwards
        0 0 * * fri-mon  => range fri-mon in day-of-week field is backwards
        abc * * * *      => "abc" in minute field is not a number
        -5 * * * *       => "" in minute field is not a number
        0 0 * foo *      => "foo" in month field is not a number or a month name (jan-dec)
        0 0 * * sunday   => "sunday" in day-of-week field is not a number or a day name (sun-sat)
        1-2-3 * * * *    => "1-2-3" in minute field has more than one "-"
        */5/5 * * * *    => "*/5/5" in minute field has more than one "/"
        * * * *          => expected exactly 5 fields (minute hour day-of-month month day-of-week), found 4
        * * * * * *      => expected exactly 5 fields (minute hour day-of-month month day-of-week), found 6
        CRON_TZ=UTC 0 * * * * => CRON_TZ= and TZ= are not allowed in a schedule; set spec.timeZone instead
        TZ=UTC 0 * * * * => CRON_TZ= and TZ= are not allowed in a schedule; set spec.timeZone instead
        @every 1hTZ      => CRON_TZ= and TZ= are not allowed in a schedule; set spec.timeZone instead
        @every 0s        => @every interval "0s" must be positive
        @every 0         => @every interval "0" must be positive
        @every -1h       => @every interval "-1h" must be positive
        @fortnightly     => unrecognized descriptor "@fortnightly" (valid: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly, @every <duration>)
    "#;
    let cases: Vec<_> = cases
        .lines()
        .filter_map(|line| line.split_once(" => "))
        .collect();
    assert_eq!(cases.len(), 31);
    for (spec, message) in cases {
        assert_eq!(error(spec.trim()), message, "{spec:?}");
    }
    assert_eq!(error(""), "the schedule is empty");
    assert_eq!(error(" \t\n"), "the schedule is empty");
    for text in [
        "banana", "1h 30m", "10", ".s", "1d", "3000000h", "", " 1h", "1..5s", "-",
    ] {
        let message = format!(
            "invalid @every interval {text:?}: expected a Go duration such as 90s, 1h30m or 1.5h"
        );
        assert_eq!(error(&format!("@every {text}")), message);
    }
}

#[test]
fn next_after_finds_the_next_matching_minute() {
    for (spec, after, expected) in [
        (
            "*/30 * * * *",
            utc(2026, 5, 4, 10, 14),
            Some(utc(2026, 5, 4, 10, 30)),
        ),
        // Strictly after: a fire time equal to `after` is not returned again.
        (
            "*/30 * * * *",
            utc(2026, 5, 4, 10, 30),
            Some(utc(2026, 5, 4, 11, 0)),
        ),
        // 2026-05-08 is a Friday.
        (
            "0 9 * * MON-FRI",
            utc(2026, 5, 8, 10, 0),
            Some(utc(2026, 5, 11, 9, 0)),
        ),
        (
            "0 0 1 1 *",
            utc(2026, 12, 31, 23, 59),
            Some(utc(2027, 1, 1, 0, 0)),
        ),
        (
            "0 0 29 2 *",
            utc(2026, 3, 1, 0, 0),
            Some(utc(2028, 2, 29, 0, 0)),
        ),
        ("0 0 30 2 *", utc(2026, 1, 1, 0, 0), None),
        ("0 0 31 4,6 *", utc(2026, 1, 1, 0, 0), None),
    ] {
        assert_eq!(
            sched(spec).next_after(&after),
            expected,
            "{spec} after {after}"
        );
    }
    // Matching happens on the wall clock of the argument's zone, which is kept.
    let plus2 = TimeZone::fixed(jiff::tz::offset(2));
    let fire = sched("0 9 * * *").next_after(&utc(2026, 5, 4, 8, 0).with_time_zone(plus2));
    let fire = fire.map(|f| (f.offset().seconds(), f.day(), f.hour()));
    assert_eq!(fire, Some((7200, 5, 9)));
    let after = utc(2026, 5, 4, 10, 0) + SignedDuration::from_millis(1500);
    let next = sched("@every 90s").next_after(&after);
    assert_eq!(
        next,
        Some(utc(2026, 5, 4, 10, 0) + SignedDuration::from_secs(91))
    );
    // Before 1970 too, the interval counts from the whole second before `after`.
    let before_1970 = utc(1969, 12, 31, 23, 59) + SignedDuration::from_millis(500);
    let next = sched("@every 90s").next_after(&before_1970);
    assert_eq!(
        next,
        Some(utc(1969, 12, 31, 23, 59) + SignedDuration::from_secs(90))
    );
}

#[test]
fn day_of_month_and_day_of_week_combine_like_robfig() {
    let days = |spec: &str| {
        let (s, mut at) = (sched(spec), utc(2026, 2, 28, 0, 0));
        let next = std::iter::from_fn(|| s.next_after(&at).inspect(|t| at = t.clone()));
        next.map(|t| (t.month(), t.day()))
            .take(6)
            .collect::<Vec<_>>()
    };
    // Both restricted: the 13th OR Fridays (March 2026: Fridays are 6, 13, 20, 27).
    assert_eq!(
        days("0 0 13 * FRI"),
        [(3, 6), (3, 13), (3, 20), (3, 27), (4, 3), (4, 10)]
    );
    // A star in either: both must match. "*/1" keeps the star; "0-6" is a plain range (OR).
    assert_eq!(days("0 0 13 * */1")[..2], [(3, 13), (4, 13)]);
    assert_eq!(days("0 0 13 * ?"), days("0 0 13 * */1"));
    assert_eq!(days("0 0 13 * 0-6")[..2], [(3, 1), (3, 2)]);
    // "*/2" is a step, not a star: odd days OR Mondays (2026-03-02 is a Monday).
    assert_eq!(
        days("0 0 */2 * 1"),
        [(3, 1), (3, 2), (3, 3), (3, 5), (3, 7), (3, 9)]
    );
}

#[test]
fn next_after_handles_dst_in_berlin() {
    // Next fire time in Berlin, as UTC (y, mo, d, h, mi) to make the instant unambiguous.
    let next = |spec: &str, after: Zoned| {
        let fire = sched(spec).next_after(&after).expect("fires");
        let utc = fire.timestamp().to_zoned(TimeZone::UTC);
        (utc.year(), utc.month(), utc.day(), utc.hour(), utc.minute())
    };
    // Spring forward on 2026-03-29: 02:30 does not exist and is skipped (03-30 02:30 CEST).
    assert_eq!(
        next("30 2 * * *", berlin(2026, 3, 28, 3, 0)),
        (2026, 3, 30, 0, 30)
    );
    // The first minute after 01:59 CET is 03:00 CEST.
    assert_eq!(
        next("* * * * *", berlin(2026, 3, 29, 1, 59)),
        (2026, 3, 29, 1, 0)
    );
    // Fall back on 2026-10-25: 02:30 happens twice and fires once, at 02:30 CEST...
    assert_eq!(
        next("30 2 * * *", berlin(2026, 10, 25, 0, 0)),
        (2026, 10, 25, 0, 30)
    );
    // ...so after it (or from inside the second 02:xx hour) the next is 10-26 02:30 CET.
    assert_eq!(
        next("30 2 * * *", berlin(2026, 10, 25, 2, 30)),
        (2026, 10, 26, 1, 30)
    );
    let second_pass = utc(2026, 10, 25, 1, 10).with_time_zone(berlin_zone());
    assert_eq!(next("30 2 * * *", second_pass), (2026, 10, 26, 1, 30));
    // Hourly: 02:00 CEST, then 03:00 CET two hours later; no second 02:00.
    assert_eq!(
        next("0 * * * *", berlin(2026, 10, 25, 1, 30)),
        (2026, 10, 25, 0, 0)
    );
    assert_eq!(
        next("0 * * * *", berlin(2026, 10, 25, 2, 0)),
        (2026, 10, 25, 2, 0)
    );
}

#[test]
fn periods() {
    let from = utc(2026, 5, 4, 0, 0); // a Monday
    let periods = |spec: &str, from: &Zoned| {
        let s = sched(spec);
        (s.shortest_period(from), s.longest_period(from))
    };
    let days = |d: u64| secs(d * 86_400);
    assert_eq!(periods("*/30 * * * *", &from), (secs(1800), secs(1800)));
    assert_eq!(periods("0 9 * * MON-FRI", &from), (days(1), days(3)));
    assert_eq!(periods("@every 90s", &from), (secs(90), secs(90)));
    assert_eq!(periods("0 0 1 * *", &from), (days(28), days(31)));
    // Weekends are seen although each weekday has 1,440 firings.
    assert_eq!(
        periods("* * * * 1-5", &from),
        (secs(60), secs(2 * 86_400 + 60))
    );
    // Gaps within a day count as well as those between days.
    let sunday_night = &from - SignedDuration::from_mins(30);
    assert_eq!(periods("0 0,1,23 * * *", &sunday_night).1, secs(22 * 3600));
    // Started mid-day, the rest of that day counts.
    let noon = &from + SignedDuration::from_mins(12 * 60 + 5);
    assert_eq!(
        periods("0,10,40 12 * * *", &noon),
        (secs(600), secs(86_400 - 2400))
    );
    // The gap after the horizon's last fire time counts: a leap-day job reports four years.
    assert_eq!(periods("0 0 29 2 *", &from).1, days(3 * 365 + 366));
    assert_eq!(periods("0 0 30 2 *", &from), (None, None));
}

#[test]
fn periods_are_elapsed_time_across_dst() {
    let from = berlin(2026, 10, 1, 0, 0);
    let every_minute = sched("* * * * *");
    assert_eq!(every_minute.longest_period(&from), secs(61 * 60));
    assert_eq!(every_minute.shortest_period(&from), secs(60));
    let daily = sched("0 12 * * *");
    assert_eq!(daily.longest_period(&from), secs(25 * 3600));
    assert_eq!(daily.shortest_period(&from), secs(23 * 3600));
}

#[test]
fn period_scan_stays_cheap() {
    // The work is counted, not timed: a day of firings without an offset change is one step, a
    // day with one (two a year in Berlin) one step per firing, so a schedule firing every minute
    // scans its 400-day horizon in about 400 + 2 x 1,440 steps, well below the 10,000-step cap
    // that stepping firing by firing would hit. (Speed is for benches/.)
    let from = berlin(2026, 1, 1, 0, 0);
    let minutes = |m: u64| Duration::from_secs(60 * m);
    let days = |d: u64| minutes(24 * 60 * d);
    type Periods = Option<(Duration, Duration)>;
    let cases: [(&str, Periods, usize); 5] = [
        // The repeated hour at the end of October fires once: 02:59 CEST to 03:00 CET.
        ("* * * * *", Some((minutes(1), minutes(61))), 3_300),
        // January 2026, then January 2027 inside the horizon.
        (
            "*/5 * * 1 *",
            Some((minutes(5), days(334) + minutes(5))),
            70,
        ),
        // The 13th or a Friday: at most Friday 23:59 to the next Friday, plus the hour the end
        // of summer time adds.
        ("* * 13 * 5", Some((minutes(1), days(6) + minutes(61))), 80),
        // Leap days only: the first is past the horizon, so one gap of four years.
        ("0 0 29 2 *", Some((days(1461), days(1461))), 1),
        ("0 0 30 2 *", None, 0),
    ];
    for (spec, periods, most_steps) in cases {
        let (found, steps) = sched(spec).period_scan(&from);
        assert_eq!(found, periods, "{spec}");
        assert!(
            steps <= most_steps,
            "{spec}: {steps} steps, expected at most {most_steps}"
        );
    }
}

#[test]
fn odd_input_never_panics() {
    let tokens: Vec<&str> = "* ? / - , 0 7 59 60 + . mon JAN @ @every @daily 1h µs İ TZ 1.5 s \
                             -1 é 99999999999999999999"
        .split(' ')
        .chain([" ", "\t", "\u{a0}", "@every "])
        .collect();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut random = |bound: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        usize::try_from(state % 64).unwrap_or(0) % bound
    };
    let after = berlin(2026, 3, 29, 1, 0);
    let mut accepted = 0;
    for _ in 0..600 {
        let text: String = (0..random(14))
            .map(|_| tokens[random(tokens.len())])
            .collect();
        if let Ok(schedule) = Schedule::parse(&text) {
            accepted += 1;
            if let Some(next) = schedule.next_after(&after) {
                assert!(next > after, "{text:?}");
            }
        }
    }
    assert!(
        accepted > 0,
        "the generator should produce some valid schedules"
    );
}
