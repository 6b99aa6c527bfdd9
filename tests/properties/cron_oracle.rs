//! An independent reading of a cron schedule, written from robfig/cron's documented semantics
//! (what Kubernetes runs), to check `Schedule::next_after` against: which local wall times a
//! schedule matches, and by brute force over the minutes, which instant comes first.

use std::collections::BTreeSet;

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};

/// A schedule as sets of values per field.
pub struct Fields {
    minute: BTreeSet<i8>,
    hour: BTreeSet<i8>,
    dom: BTreeSet<i8>,
    month: BTreeSet<i8>,
    dow: BTreeSet<i8>,
    /// A day field given as `*` (or `*/1`): then both day fields must match, else either.
    day_star: bool,
    dow_star: bool,
}

/// How a schedule the property strategy makes fires.
pub enum Reading {
    /// Five fields (descriptors are shorthands for five fields).
    Fields(Fields),
    /// `@every`: from the whole second before the instant, this often.
    Every(SignedDuration),
}

/// Reads a schedule made by `valid_schedule()`; `None` for an `@every` Go truncates to zero.
pub fn read(spec: &str) -> Option<Reading> {
    if let Some(interval) = spec.strip_prefix("@every ") {
        let nanos = go_duration_nanos(interval);
        if nanos == 0 {
            return None;
        }
        let whole_seconds = (nanos / 1_000_000_000).max(1);
        return Some(Reading::Every(SignedDuration::from_secs(
            whole_seconds as i64,
        )));
    }
    let spec = match spec {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        fields => fields,
    };
    let parts: Vec<&str> = spec.split(' ').collect();
    let [minute, hour, dom, month, dow] = parts[..] else {
        panic!("five fields: {spec:?}");
    };
    let (dom, day_star) = field(dom, 1, 31);
    let (dow, dow_star) = field(dow, 0, 6);
    Some(Reading::Fields(Fields {
        minute: field(minute, 0, 59).0,
        hour: field(hour, 0, 23).0,
        dom,
        month: field(month, 1, 12).0,
        dow,
        day_star,
        dow_star,
    }))
}

/// Go's `time.ParseDuration` of `<digits>[.<digits>]<unit>`, in whole nanoseconds (truncated).
fn go_duration_nanos(text: &str) -> u128 {
    let unit_at = text
        .find(|c: char| c.is_ascii_alphabetic())
        .expect("a unit");
    let (number, unit) = text.split_at(unit_at);
    let scale: u128 = match unit {
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        other => panic!("unit {other}"),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let whole: u128 = whole.parse().unwrap();
    let mut fraction_nanos = 0;
    let mut place = scale;
    for digit in fraction.bytes() {
        place /= 10;
        fraction_nanos += u128::from(digit - b'0') * place;
    }
    whole * scale + fraction_nanos
}

/// The values a field selects, and whether it counts as `*` for the day rule.
fn field(text: &str, min: i8, max: i8) -> (BTreeSet<i8>, bool) {
    let mut values = BTreeSet::new();
    let mut star = false;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step.parse::<usize>().unwrap())),
            None => (item, None),
        };
        let (low, high, is_star) = match range {
            "*" | "?" => (min, max, true),
            _ => match range.split_once('-') {
                Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap(), false),
                // `n/step` runs from n to the end of the field.
                None => {
                    let n = range.parse().unwrap();
                    (n, if step.is_some() { max } else { n }, false)
                }
            },
        };
        let step = step.unwrap_or(1);
        star |= is_star && step <= 1;
        values.extend((low..=high).step_by(step));
    }
    (values, star)
}

impl Fields {
    /// Whether the local wall time `wall` is a firing.
    pub fn matches(&self, wall: DateTime) -> bool {
        let dom = self.dom.contains(&wall.day());
        let dow = self.dow.contains(&wall.weekday().to_sunday_zero_offset());
        let day = if self.day_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        };
        wall.second() == 0
            && wall.subsec_nanosecond() == 0
            && self.minute.contains(&wall.minute())
            && self.hour.contains(&wall.hour())
            && self.month.contains(&wall.month())
            && day
    }

    /// Whether some date matches outside leap days: when not, Kubernetes may find no firing
    /// within its five-year search.
    pub fn fires_outside_leap_days(&self) -> bool {
        if !self.dow_star || self.day_star {
            return true; // a weekday decides, and every week has one
        }
        let longest = |month: i8| match month {
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        self.month
            .iter()
            .any(|&month| self.dom.iter().any(|&day| day <= longest(month)))
    }

    /// The first firing after `at` in `zone`, scanning instant by instant up to `until`: minute
    /// by minute inside matching hours, else by the quarter hour (every zone's offsets and
    /// transitions since 1970 fall on quarter hours). A wall time the end of summer time
    /// repeats fires once, at its first instant.
    pub fn first_after(
        &self,
        at: Timestamp,
        zone: &TimeZone,
        until: Timestamp,
    ) -> Option<Timestamp> {
        let minute = SignedDuration::from_mins(1);
        let mut t = Timestamp::from_second(at.as_second().div_euclid(60) * 60).unwrap() + minute;
        while t <= until {
            let wall = zone.to_datetime(t);
            let hour_can_match = self.month.contains(&wall.month())
                && self.hour.contains(&wall.hour())
                && (self.dom.contains(&wall.day())
                    || self.dow.contains(&wall.weekday().to_sunday_zero_offset()));
            if !hour_can_match {
                let quarter = 15 * 60;
                t = Timestamp::from_second((t.as_second().div_euclid(quarter) + 1) * quarter)
                    .unwrap();
                continue;
            }
            let repeated = match zone.to_ambiguous_timestamp(wall).offset() {
                AmbiguousOffset::Fold { after, .. } => zone.to_offset(t) == after,
                _ => false,
            };
            if !repeated && self.matches(wall) {
                return Some(t);
            }
            t += minute;
        }
        None
    }
}
