//! Cron schedules: anything parses or is refused with a message, and what parses fires when an
//! independent reading of the schedule says it should.

use super::*;

/// One item of a cron field within `min..=max`: `*`, `n`, `a-b`, with or without a step.
fn cron_item(min: u64, max: u64) -> impl Strategy<Value = String> {
    let range = (min..=max, min..=max).prop_map(|(a, b)| {
        let (a, b) = (a.min(b), a.max(b));
        format!("{a}-{b}")
    });
    let base = prop_oneof![
        Just("*".to_owned()),
        (min..=max).prop_map(|n| n.to_string()),
        range,
    ];
    (base, proptest::option::of(1..=max.max(1)))
        .prop_map(|(base, step)| step.map_or(base.clone(), |s| format!("{base}/{s}")))
}

/// A field: a comma-separated list of one to three items.
fn cron_field(min: u64, max: u64) -> impl Strategy<Value = String> {
    proptest::collection::vec(cron_item(min, max), 1..=3).prop_map(|items| items.join(","))
}

/// Five valid fields, or one of the descriptors.
pub(crate) fn valid_schedule() -> impl Strategy<Value = String> {
    let fields = (
        cron_field(0, 59),
        cron_field(0, 23),
        cron_field(1, 31),
        cron_field(1, 12),
        cron_field(0, 6),
    )
        .prop_map(|(m, h, dom, mon, dow)| format!("{m} {h} {dom} {mon} {dow}"));
    prop_oneof![
        4 => fields,
        1 => prop::sample::select(vec!["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"]).prop_map(str::to_owned),
        1 => "[0-9]{1,4}(\\.[0-9]{1,3})?(ns|us|ms|s|m|h)".prop_map(|d| format!("@every {d}")),
    ]
}

/// Text from the cron alphabet, names and descriptors, mostly invalid.
pub(crate) fn cron_like() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        "[0-9*/,? -]{1,6}",
        prop::sample::select(vec![
            "jan",
            "DEC",
            "sun",
            "Sat",
            "@daily",
            "@every",
            "@every ",
            "TZ=",
            "CRON_TZ=UTC ",
            "1.5h",
            "-1s",
            " ",
            "\t",
            "İ"
        ])
        .prop_map(str::to_owned),
    ];
    proptest::collection::vec(token, 0..8).prop_map(|tokens| tokens.concat())
}

/// Instants between 1970 and 2200.
fn instant() -> impl Strategy<Value = Timestamp> {
    (0i64..7_258_118_400, 0i32..1_000_000_000)
        .prop_map(|(secs, nanos)| Timestamp::new(secs, nanos).expect("in range"))
}

/// Zones with and without DST, and with odd offsets.
fn zone() -> impl Strategy<Value = TimeZone> {
    prop::sample::select(vec![
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "Asia/Kathmandu",
        "Pacific/Apia",
        "America/Santiago",
    ])
    .prop_map(|name| signet::policy::time::zone(name).expect("bundled"))
}

/// Checks what an accepted schedule must give: a next fire time after `t`, periods in order.
fn check_fire_times(schedule: &Schedule, at: Timestamp, tz: TimeZone) -> Result<(), TestCaseError> {
    let schedule_copy = schedule.clone();
    let local: Zoned = at.to_zoned(tz);
    let (next, periods) = within(StdDuration::from_secs(20), move || {
        let next = schedule_copy.next_after(&local);
        let periods = (
            schedule_copy.shortest_period(&local),
            schedule_copy.longest_period(&local),
        );
        (next, periods)
    });
    if let Some(next) = next {
        prop_assert!(
            next.timestamp() > at,
            "{:?} after {} gave {}",
            schedule,
            at,
            next
        );
    }
    if let (Some(shortest), Some(longest)) = periods {
        prop_assert!(
            shortest > StdDuration::ZERO && shortest <= longest,
            "{:?}: {:?}",
            schedule,
            periods
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn cron_parser_never_panics(spec in prop_oneof![any::<String>(), cron_like(), valid_schedule()], at in instant(), tz in zone()) {
        match Schedule::parse(&spec) {
            Ok(schedule) => check_fire_times(&schedule, at, tz)?,
            Err(err) => prop_assert!(!err.to_string().is_empty()),
        }
    }

    #[test]
    fn valid_schedules_parse_and_fire_after_any_instant(spec in valid_schedule(), at in instant(), tz in zone()) {
        let schedule = Schedule::parse(&spec);
        // An interval that Go truncates to zero nanoseconds ("@every 0s", "@every 0.5ns") is refused
        // as a mistake; everything else the strategy makes is valid.
        if let Err(ScheduleError::NonPositiveInterval(_)) = schedule {
            prop_assert!(spec.starts_with("@every "), "{:?}", spec);
            return Ok(());
        }
        let schedule = schedule.map_err(|e| TestCaseError::fail(format!("{spec:?}: {e}")))?;
        check_fire_times(&schedule, at, tz.clone())?;

        // The fire time is the one an independent reading of the schedule gives.
        let reading = super::cron_oracle::read(&spec).expect("accepted, so Go's interval is not zero");
        let local = at.to_zoned(tz.clone());
        let next = within(StdDuration::from_secs(20), move || schedule.next_after(&local))
            .map(|z| z.timestamp());
        match reading {
            super::cron_oracle::Reading::Every(interval) => {
                let from = Timestamp::from_second(at.as_second()).unwrap();
                prop_assert_eq!(next, Some(from + interval), "{:?} after {}", spec, at);
            }
            super::cron_oracle::Reading::Fields(fields) => match next {
                None => prop_assert!(
                    !fields.fires_outside_leap_days(),
                    "{:?} never fires after {} in {:?}", spec, at, tz.iana_name()
                ),
                Some(next) => {
                    let wall = tz.to_datetime(next);
                    prop_assert!(fields.matches(wall), "{:?} fired at {} ({})", spec, next, wall);
                    // The first match: every instant in between, brute force (bounded).
                    if next.duration_since(at) <= jiff::SignedDuration::from_hours(400 * 24) {
                        prop_assert_eq!(
                            fields.first_after(at, &tz, next), Some(next),
                            "{:?} after {} in {:?}", spec, at, tz.iana_name()
                        );
                    }
                }
            },
        }
    }
}
