//! CronJob schedules, parsed exactly the way kube-apiserver validates `CronJob.spec.schedule`
//! (robfig/cron v3 `ParseStandard`, plus Kubernetes' refusal of `TZ=`/`CRON_TZ=`; one deliberate
//! strictness is noted in `parse_field`), and the fire times and periods they give in a time zone.

use std::str::FromStr;
use std::time::Duration;

use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, Offset, TimeZone};
use jiff::{SignedDuration, Timestamp, Zoned};

/// `next_after` gives up after this many years past the starting year, as robfig does.
const SEARCH_YEARS: i16 = 5;
/// How far ahead `longest_period`/`shortest_period` look.
const PERIOD_HORIZON_DAYS: i64 = 400;
/// Cap on the steps of the period scan. A step is a whole day of firings when no UTC-offset change
/// falls between that day's first and last fire time, and a single firing otherwise, so 400 days
/// take about 400 steps plus up to 1,440 per DST-change day: real time zones stay far below it.
const PERIOD_MAX_STEPS: usize = 10_000;

mod parse;
#[cfg(test)]
mod tests;

pub use parse::{Field, ScheduleError};
use parse::{parse_descriptor, parse_field};

/// A parsed CronJob schedule: either five cron fields or an `@every` interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Bit n set = fires at minute n (0-59).
    minute: u64,
    /// Bit n set = fires at hour n (0-23).
    hour: u64,
    /// Bit n set = fires on day-of-month n (1-31).
    dom: u64,
    /// Bit n set = fires in month n (1-12).
    month: u64,
    /// Bit n set = fires on weekday n (0 = Sunday .. 6).
    dow: u64,
    /// robfig's "star bit" of day-of-month and day-of-week: set when an item of the field is `*` or
    /// `?` without a step above 1. If either is set a day must match both fields, else either one.
    dom_star: bool,
    dow_star: bool,
    /// Set for `@every`: the bitsets are then unused.
    every: Option<Duration>,
}

/// The base of an `@every` schedule, whose bitsets are unused.
const NEVER: Schedule = Schedule {
    minute: 0,
    hour: 0,
    dom: 0,
    month: 0,
    dow: 0,
    dom_star: false,
    dow_star: false,
    every: None,
};

impl Schedule {
    /// Parse a schedule the way kube-apiserver validates CronJob.spec.schedule.
    pub fn parse(spec: &str) -> Result<Schedule, ScheduleError> {
        if spec.trim().is_empty() {
            return Err(ScheduleError::Empty);
        }
        // Kubernetes checks strings.Contains(schedule, "TZ"), wherever it appears.
        if spec.contains("TZ") {
            return Err(ScheduleError::TimeZoneInSchedule);
        }
        // robfig tests the untrimmed string: " @daily" is read as fields, "@daily " as an unknown
        // descriptor.
        if spec.starts_with('@') {
            return parse_descriptor(spec);
        }
        let fields: Vec<&str> = spec.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(ScheduleError::FieldCount(fields.len()));
        };
        let (dom, dom_star) = parse_field(dom, Field::DayOfMonth)?;
        let (dow, dow_star) = parse_field(dow, Field::DayOfWeek)?;
        Ok(Schedule {
            minute: parse_field(minute, Field::Minute)?.0,
            hour: parse_field(hour, Field::Hour)?.0,
            dom,
            month: parse_field(month, Field::Month)?.0,
            dow,
            dom_star,
            dow_star,
            every: None,
        })
    }

    /// The first fire time strictly after `after`, evaluated in `after`'s time zone (DST-correct
    /// like robfig: wall-clock matching in the zone; nonexistent local times in a spring-forward
    /// gap are skipped, and in the fall-back overlap a given wall time fires once). Returns None if
    /// no fire time exists within 5 years (e.g. "0 0 30 2 *").
    ///
    /// An overlap wall time fires at its first occurrence only: "0 * * * *" fires at 02:00 summer
    /// time and then at 03:00 winter time, not at the second 02:00 (robfig would fire twice).
    /// `@every` adds the interval to `after` truncated to the second, as robfig does.
    pub fn next_after(&self, after: &Zoned) -> Option<Zoned> {
        let next = self.next_instant(after.timestamp(), after.time_zone())?;
        Some(next.to_zoned(after.time_zone().clone()))
    }

    /// [`Schedule::next_after`] on an instant and the zone the schedule is read in.
    fn next_instant(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        if let Some(interval) = self.every {
            // Down to the whole second before `after` (jiff's sub-second part of an instant
            // before 1970 is negative).
            let floor = after.as_second() - i64::from(after.subsec_nanosecond() < 0);
            let whole_second = Timestamp::from_second(floor).ok()?;
            let interval = SignedDuration::try_from(interval).ok()?;
            return whole_second.checked_add(interval).ok();
        }
        if !self.can_fire() {
            return None;
        }
        let wall = tz.to_datetime(after);
        let mut candidate = wall
            .date()
            .at(wall.hour(), wall.minute(), 0, 0)
            .checked_add(SignedDuration::from_mins(1))
            .ok()?;
        let year_limit = candidate.year().saturating_add(SEARCH_YEARS);
        loop {
            let fire = self.next_wall_time(candidate, year_limit)?;
            // A gap time has no instant and is skipped. An overlap time takes its earlier instant;
            // when that is not after `after`, that wall time already fired, so the search moves on.
            if let Some(instant) = earliest(tz, fire)
                && instant > after
            {
                return Some(instant);
            }
            candidate = fire.checked_add(SignedDuration::from_mins(1)).ok()?;
        }
    }

    /// The longest gap between two consecutive fire times over the next ~400 days starting at
    /// `from` (used to size activeDeadlineSeconds and staleness thresholds). For @every it is the
    /// interval. None if it never fires.
    ///
    /// Gaps are elapsed time, so DST shows (a daily job's gap is 23h or 25h across a change). The
    /// gap after the horizon's last fire time counts too, so a yearly job reports a year. The scan
    /// is capped at 10,000 steps (a step is a day of firings, or one firing on a DST-change day):
    /// that covers the horizon in every real zone and keeps even "* * * * *" to a few milliseconds.
    pub fn longest_period(&self, from: &Zoned) -> Option<Duration> {
        self.period_extremes(from).map(|(_, longest)| longest)
    }

    /// The shortest gap between consecutive fire times over the same horizon.
    pub fn shortest_period(&self, from: &Zoned) -> Option<Duration> {
        self.period_extremes(from).map(|(shortest, _)| shortest)
    }

    /// (shortest, longest) gap between consecutive fire times.
    fn period_extremes(&self, from: &Zoned) -> Option<(Duration, Duration)> {
        self.period_scan(from).0
    }

    /// [`Schedule::period_extremes`], and how many steps the scan took (at most
    /// [`PERIOD_MAX_STEPS`]; a day of firings with no offset change is one step).
    fn period_scan(&self, from: &Zoned) -> (Option<(Duration, Duration)>, usize) {
        if let Some(interval) = self.every {
            return (Some((interval, interval)), 0);
        }
        let mut steps = 0;
        let extremes = self.scan_extremes(from, &mut steps);
        (extremes, steps)
    }

    fn scan_extremes(&self, from: &Zoned, steps: &mut usize) -> Option<(Duration, Duration)> {
        // Minutes of the day at which a matching day fires, ascending.
        let times: Vec<i16> = (0..24u8)
            .filter(|hour| has(self.hour, u32::from(*hour)))
            .flat_map(|hour| {
                (0..60u8)
                    .filter(|m| has(self.minute, u32::from(*m)))
                    .map(move |m| i16::from(hour) * 60 + i16::from(m))
            })
            .collect();
        let (&first_time, &last_time) = (times.first()?, times.last()?);
        let minutes = |m: i16| SignedDuration::from_mins(i64::from(m));
        let mut whole_day = None;
        times
            .windows(2)
            .for_each(|w| widen(&mut whole_day, minutes(w[1] - w[0])));
        let tz = from.time_zone();
        let horizon = from
            .timestamp()
            .checked_add(SignedDuration::from_hours(24 * PERIOD_HORIZON_DAYS))
            .ok()?;
        let mut extremes = None;
        let mut current = self.next_instant(from.timestamp(), tz)?;
        for _ in 0..PERIOD_MAX_STEPS {
            *steps += 1;
            let wall = tz.to_datetime(current);
            let day = wall.date();
            let at = |m: i16| {
                let (hour, minute) = (i8::try_from(m / 60).ok()?, i8::try_from(m % 60).ok()?);
                unambiguous(tz, day.at(hour, minute, 0, 0))
            };
            let index = times
                .binary_search(&(i16::from(wall.hour()) * 60 + i16::from(wall.minute())))
                .ok();
            let (previous, next) = match (at(first_time), at(last_time), index) {
                (Some((_, first_offset)), Some((last, last_offset)), Some(index))
                    if first_offset == last_offset =>
                {
                    // No offset change among the day's firings, so their gaps are wall-clock
                    // differences: take the day at once instead of stepping through 1,440 firings.
                    if let (0, Some((shortest, longest))) = (index, whole_day) {
                        widen(&mut extremes, shortest);
                        widen(&mut extremes, longest);
                    } else {
                        let rest = times[index..].windows(2);
                        rest.for_each(|w| widen(&mut extremes, minutes(w[1] - w[0])));
                    }
                    (last, self.next_instant(last, tz))
                }
                _ => (current, self.next_instant(current, tz)),
            };
            let Some(next) = next else { break };
            widen(&mut extremes, previous.duration_until(next));
            if next >= horizon {
                break;
            }
            current = next;
        }
        let (shortest, longest) = extremes?;
        Some((shortest.try_into().ok()?, longest.try_into().ok()?))
    }

    /// False when a field selects nothing (robfig accepts "," as a field): nothing to search for.
    fn can_fire(&self) -> bool {
        let days = if self.dom_star || self.dow_star {
            self.dom != 0 && self.dow != 0
        } else {
            self.dom != 0 || self.dow != 0
        };
        self.minute != 0 && self.hour != 0 && self.month != 0 && days
    }

    fn day_matches(&self, date: Date) -> bool {
        let dom = has(self.dom, bit_index(date.day()));
        let dow = has(self.dow, bit_index(date.weekday().to_sunday_zero_offset()));
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first wall-clock time at or after `start` (whole minutes) that matches every field.
    fn next_wall_time(&self, mut start: DateTime, year_limit: i16) -> Option<DateTime> {
        loop {
            if start.year() > year_limit {
                return None;
            }
            let date = start.date();
            if !has(self.month, bit_index(date.month())) {
                let first_of_next_month = date
                    .first_of_month()
                    .checked_add(jiff::Span::new().months(1));
                start = first_of_next_month
                    .ok()?
                    .to_datetime(jiff::civil::Time::midnight());
                continue;
            }
            let next_day = || {
                Some(
                    date.tomorrow()
                        .ok()?
                        .to_datetime(jiff::civil::Time::midnight()),
                )
            };
            if !self.day_matches(date) {
                start = next_day()?;
                continue;
            }
            let Some(hour) = next_bit(self.hour, bit_index(start.hour())) else {
                start = next_day()?;
                continue;
            };
            let from_minute = if hour == bit_index(start.hour()) {
                bit_index(start.minute())
            } else {
                0
            };
            let hour = i8::try_from(hour).ok()?;
            match next_bit(self.minute, from_minute) {
                Some(minute) => return Some(date.at(hour, i8::try_from(minute).ok()?, 0, 0)),
                None => {
                    start = date
                        .at(hour, 0, 0, 0)
                        .checked_add(SignedDuration::from_hours(1))
                        .ok()?
                }
            }
        }
    }
}

/// The earlier instant of a wall time, or none when a DST gap skips it.
fn earliest(tz: &TimeZone, wall: DateTime) -> Option<Timestamp> {
    let offset = match tz.to_ambiguous_timestamp(wall).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset,
        AmbiguousOffset::Gap { .. } => return None,
        // `before` is the offset in force before the change, so it gives the earlier instant.
        AmbiguousOffset::Fold { before, .. } => before,
    };
    offset.to_timestamp(wall).ok()
}

/// The one instant of a wall time with its offset, or none in a DST gap or overlap.
fn unambiguous(tz: &TimeZone, wall: DateTime) -> Option<(Timestamp, Offset)> {
    match tz.to_ambiguous_timestamp(wall).offset() {
        AmbiguousOffset::Unambiguous { offset } => Some((offset.to_timestamp(wall).ok()?, offset)),
        AmbiguousOffset::Gap { .. } | AmbiguousOffset::Fold { .. } => None,
    }
}

/// A small non-negative calendar number (day, month, hour, minute) as a bit index.
fn bit_index(n: i8) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(spec: &str) -> Result<Schedule, ScheduleError> {
        Schedule::parse(spec)
    }
}

fn has(bits: u64, n: u32) -> bool {
    n < 64 && bits & (1 << n) != 0
}

/// The lowest set bit at or above `from`.
fn next_bit(bits: u64, from: u32) -> Option<u32> {
    let above = bits.checked_shr(from)?;
    (above != 0).then(|| from + above.trailing_zeros())
}

fn widen(extremes: &mut Option<(SignedDuration, SignedDuration)>, gap: SignedDuration) {
    *extremes = Some(match *extremes {
        None => (gap, gap),
        Some((shortest, longest)) => (shortest.min(gap), longest.max(gap)),
    });
}
