//! CronJob schedules, parsed exactly the way kube-apiserver validates `CronJob.spec.schedule`
//! (robfig/cron v3 `ParseStandard`, plus Kubernetes' refusal of `TZ=`/`CRON_TZ=`; one deliberate
//! strictness is noted in `parse_field`), and the fire times and periods they give in a time zone.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone, Timelike};

/// `next_after` gives up after this many years past the starting year, as robfig does.
const SEARCH_YEARS: i32 = 5;
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
    pub fn next_after<Tz: TimeZone>(&self, after: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        if let Some(interval) = self.every {
            let nanos = TimeDelta::nanoseconds(i64::from(after.nanosecond()));
            let whole_second = after.clone().checked_sub_signed(nanos)?;
            return whole_second.checked_add_signed(TimeDelta::from_std(interval).ok()?);
        }
        if !self.can_fire() {
            return None;
        }
        let tz = after.timezone();
        // Not naive_local(), which panics for instants at the very end of chrono's range.
        let wall = after.naive_utc().checked_add_offset(after.offset().fix())?;
        let mut candidate = (wall.date().and_hms_opt(wall.hour(), wall.minute(), 0)?)
            .checked_add_signed(TimeDelta::minutes(1))?;
        let year_limit = candidate.year().saturating_add(SEARCH_YEARS);
        loop {
            let fire = self.next_wall_time(candidate, year_limit)?;
            // A gap time has no instant and is skipped. An overlap time takes its earlier instant;
            // when that is not after `after`, that wall time already fired, so the search moves on.
            if let Some(instant) = tz.from_local_datetime(&fire).earliest()
                && instant > *after
            {
                return Some(instant);
            }
            candidate = fire.checked_add_signed(TimeDelta::minutes(1))?;
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
    pub fn longest_period<Tz: TimeZone>(&self, from: &DateTime<Tz>) -> Option<Duration> {
        self.period_extremes(from).map(|(_, longest)| longest)
    }

    /// The shortest gap between consecutive fire times over the same horizon.
    pub fn shortest_period<Tz: TimeZone>(&self, from: &DateTime<Tz>) -> Option<Duration> {
        self.period_extremes(from).map(|(shortest, _)| shortest)
    }

    /// (shortest, longest) gap between consecutive fire times.
    fn period_extremes<Tz: TimeZone>(&self, from: &DateTime<Tz>) -> Option<(Duration, Duration)> {
        if let Some(interval) = self.every {
            return Some((interval, interval));
        }
        // Minutes of the day at which a matching day fires, ascending.
        let times: Vec<u32> = (0..24)
            .filter(|hour| has(self.hour, *hour))
            .flat_map(|hour| {
                (0..60)
                    .filter(|m| has(self.minute, *m))
                    .map(move |m| hour * 60 + m)
            })
            .collect();
        let (&first_time, &last_time) = (times.first()?, times.last()?);
        let minutes = |m: u32| TimeDelta::minutes(i64::from(m));
        let mut whole_day = None;
        times
            .windows(2)
            .for_each(|w| widen(&mut whole_day, minutes(w[1] - w[0])));
        let tz = from.timezone();
        let horizon = from
            .clone()
            .checked_add_signed(TimeDelta::days(PERIOD_HORIZON_DAYS))?;
        let mut extremes = None;
        let mut current = self.next_after(from)?;
        for _ in 0..PERIOD_MAX_STEPS {
            let wall = current.naive_local();
            let day = wall.date();
            let at = |m: u32| {
                tz.from_local_datetime(&day.and_hms_opt(m / 60, m % 60, 0)?)
                    .single()
            };
            let index = times
                .binary_search(&(wall.hour() * 60 + wall.minute()))
                .ok();
            let (previous, next) = match (at(first_time), at(last_time), index) {
                (Some(first), Some(last), Some(index))
                    if first.offset().fix() == last.offset().fix() =>
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
                    let next = self.next_after(&last);
                    (last, next)
                }
                _ => (current.clone(), self.next_after(&current)),
            };
            let Some(next) = next else { break };
            widen(
                &mut extremes,
                next.naive_utc().signed_duration_since(previous.naive_utc()),
            );
            if next >= horizon {
                break;
            }
            current = next;
        }
        let (shortest, longest) = extremes?;
        Some((shortest.to_std().ok()?, longest.to_std().ok()?))
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

    fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = has(self.dom, date.day());
        let dow = has(self.dow, date.weekday().num_days_from_sunday());
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first wall-clock time at or after `start` (whole minutes) that matches every field.
    fn next_wall_time(&self, mut start: NaiveDateTime, year_limit: i32) -> Option<NaiveDateTime> {
        loop {
            if start.year() > year_limit {
                return None;
            }
            let date = start.date();
            if !has(self.month, date.month()) {
                let (year, month) = if date.month() == 12 {
                    (date.year() + 1, 1)
                } else {
                    (date.year(), date.month() + 1)
                };
                start = NaiveDate::from_ymd_opt(year, month, 1)?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            let next_day = || date.succ_opt()?.and_hms_opt(0, 0, 0);
            if !self.day_matches(date) {
                start = next_day()?;
                continue;
            }
            let Some(hour) = next_bit(self.hour, start.hour()) else {
                start = next_day()?;
                continue;
            };
            let from_minute = if hour == start.hour() {
                start.minute()
            } else {
                0
            };
            match next_bit(self.minute, from_minute) {
                Some(minute) => return date.and_hms_opt(hour, minute, 0),
                None => {
                    start = date
                        .and_hms_opt(hour, 0, 0)?
                        .checked_add_signed(TimeDelta::hours(1))?
                }
            }
        }
    }
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

fn widen(extremes: &mut Option<(TimeDelta, TimeDelta)>, gap: TimeDelta) {
    *extremes = Some(match *extremes {
        None => (gap, gap),
        Some((shortest, longest)) => (shortest.min(gap), longest.max(gap)),
    });
}
