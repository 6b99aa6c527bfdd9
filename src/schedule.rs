//! CronJob schedules, parsed exactly the way kube-apiserver validates `CronJob.spec.schedule`
//! (robfig/cron v3 `ParseStandard`, plus Kubernetes' refusal of `TZ=`/`CRON_TZ=`; one deliberate
//! strictness is noted in `parse_field`), and the fire times and periods they give in a time zone.

use std::fmt;
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

/// One of the five fields of a cron schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// 0-59.
    Minute,
    /// 0-23.
    Hour,
    /// 1-31.
    DayOfMonth,
    /// 1-12, or jan-dec.
    Month,
    /// 0-6 (0 is Sunday), or sun-sat.
    DayOfWeek,
}

impl Field {
    const fn bounds(self) -> (u64, u64) {
        match self {
            Field::Minute => (0, 59),
            Field::Hour => (0, 23),
            Field::DayOfMonth => (1, 31),
            Field::Month => (1, 12),
            Field::DayOfWeek => (0, 6),
        }
    }

    /// The value of a month or day name (case-insensitive, as robfig), if `text` is one.
    fn named_value(self, text: &str) -> Option<u64> {
        const MONTHS: [&str; 12] = [
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ];
        const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
        let (names, first): (&[&str], u64) = match self {
            Field::Month => (&MONTHS, 1),
            Field::DayOfWeek => (&DAYS, 0),
            _ => return None,
        };
        // Go's strings.ToLower maps 'İ' (U+0130) to a plain 'i' (Rust gives "i\u{307}"): mirror Go.
        let lower: String = text
            .chars()
            .flat_map(|c| if c == '\u{130}' { 'i' } else { c }.to_lowercase())
            .collect();
        let index = names.iter().position(|name| *name == lower)?;
        u64::try_from(index).ok().map(|index| index + first)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day-of-month",
            Field::Month => "month",
            Field::DayOfWeek => "day-of-week",
        })
    }
}

/// Bounds for an out-of-range message.
fn range_hint(field: &Field, value: &u64) -> String {
    let (min, max) = field.bounds();
    // Many crons accept 7 for Sunday; robfig v3 (and so Kubernetes) does not.
    let sunday = if *field == Field::DayOfWeek && *value == 7 {
        "; use 0 for Sunday"
    } else {
        ""
    };
    format!("{min}-{max}{sunday}")
}

/// What else a field accepts besides numbers.
fn name_hint(field: &Field) -> &'static str {
    match field {
        Field::Month => " or a month name (jan-dec)",
        Field::DayOfWeek => " or a day name (sun-sat)",
        _ => "",
    }
}

/// Why a schedule was refused. The Display text is meant for the user who wrote the schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Nothing but whitespace.
    #[error("the schedule is empty")]
    Empty,
    /// "TZ" appears anywhere in the schedule; Kubernetes wants spec.timeZone instead.
    #[error("CRON_TZ= and TZ= are not allowed in a schedule; set spec.timeZone instead")]
    TimeZoneInSchedule,
    /// An `@` word that is not one of robfig's descriptors.
    #[error(
        "unrecognized descriptor {0:?} (valid: @yearly, @annually, @monthly, @weekly, @daily, \
         @midnight, @hourly, @every <duration>)"
    )]
    UnknownDescriptor(String),
    /// `@every` followed by something Go's `time.ParseDuration` refuses.
    #[error("invalid @every interval {0:?}: expected a Go duration such as 90s, 1h30m or 1.5h")]
    InvalidInterval(String),
    /// `@every` with a zero or negative interval.
    #[error("@every interval {0:?} must be positive")]
    NonPositiveInterval(String),
    /// Not five whitespace-separated fields.
    #[error("expected exactly 5 fields (minute hour day-of-month month day-of-week), found {0}")]
    FieldCount(usize),
    /// A value outside the field's bounds.
    #[error("{0} {1} is out of range ({bounds})", bounds = range_hint(.0, .1))]
    OutOfRange(Field, u64),
    /// A step above the field's maximum (robfig accepts it; see `parse_field` for why we do not).
    #[error("{0} {1} is out of range ({bounds})", bounds = range_hint(.0, &0))]
    StepTooLarge(Field, u64),
    /// A step of zero; the string is the list item holding it.
    #[error("step 0 in {0} field {1:?} must be a positive number")]
    StepZero(Field, String),
    /// A step that is not a non-negative integer; the string is the step.
    #[error("step {1:?} in {0} field is not a positive number")]
    InvalidStep(Field, String),
    /// A range whose start is after its end; the string is the range as written.
    #[error("range {1} in {0} field is backwards")]
    Backwards(Field, String),
    /// A value that is neither a number nor, where the field has them, a name.
    #[error("{1:?} in {0} field is not a number{names}", names = name_hint(.0))]
    NotANumber(Field, String),
    /// A list item such as "1-2-3"; the string is the item.
    #[error("{1:?} in {0} field has more than one \"-\"")]
    TooManyHyphens(Field, String),
    /// A list item such as "*/5/5"; the string is the item.
    #[error("{1:?} in {0} field has more than one \"/\"")]
    TooManySlashes(Field, String),
}

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

fn parse_descriptor(spec: &str) -> Result<Schedule, ScheduleError> {
    let equivalent = match spec {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => {
            let Some(text) = spec.strip_prefix("@every ") else {
                return Err(ScheduleError::UnknownDescriptor(spec.to_owned()));
            };
            let nanos = parse_go_duration(text)
                .ok_or_else(|| ScheduleError::InvalidInterval(text.to_owned()))?;
            // robfig turns zero and negative intervals into 1s; they are surely mistakes: refuse.
            if nanos <= 0 {
                return Err(ScheduleError::NonPositiveInterval(text.to_owned()));
            }
            // robfig rounds intervals under a second up to one, and truncates others to seconds.
            let seconds = u64::try_from(nanos / 1_000_000_000)
                .unwrap_or(u64::MAX)
                .max(1);
            let every = Some(Duration::from_secs(seconds));
            return Ok(Schedule { every, ..NEVER });
        }
    };
    Schedule::parse(equivalent)
}

/// Go's `time.ParseDuration`, in nanoseconds; None where Go returns an error.
fn parse_go_duration(text: &str) -> Option<i128> {
    const LIMIT: u64 = 1 << 63;
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let mut value: u64 = 0;
        for digit in rest[..digits].bytes() {
            value = value
                .checked_mul(10)?
                .checked_add(u64::from(digit - b'0'))?;
            if value > LIMIT {
                return None;
            }
        }
        rest = &rest[digits..];
        // Go keeps fraction digits only while they fit, and scales them with floating point.
        let (mut fraction, mut scale, mut fraction_digits) = (0u64, 1f64, 0);
        if let Some(after_dot) = rest.strip_prefix('.') {
            fraction_digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            for digit in after_dot[..fraction_digits].bytes() {
                if fraction > (LIMIT - 1) / 10 {
                    break;
                }
                let next = fraction * 10 + u64::from(digit - b'0');
                if next > LIMIT {
                    break;
                }
                fraction = next;
                scale *= 10.0;
            }
            rest = &after_dot[fraction_digits..];
        }
        if digits == 0 && fraction_digits == 0 {
            return None;
        }
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit: u64 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        if value > LIMIT / unit {
            return None;
        }
        value *= unit;
        if fraction > 0 {
            value += (fraction as f64 * (unit as f64 / scale)) as u64;
        }
        total = total.checked_add(value)?;
        if value > LIMIT || total > LIMIT {
            return None;
        }
    }
    if !negative && total == LIMIT {
        return None;
    }
    Some(if negative {
        -i128::from(total)
    } else {
        i128::from(total)
    })
}

/// Parses one field (robfig `getField`) into its bitset and star bit.
fn parse_field(text: &str, field: Field) -> Result<(u64, bool), ScheduleError> {
    let (min, max) = field.bounds();
    let (mut bits, mut star) = (0u64, false);
    // Go's strings.FieldsFunc drops empty items, so robfig accepts "1,,2" and even ",".
    for part in text.split(',').filter(|part| !part.is_empty()) {
        let mut slashes = part.split('/');
        let range = slashes.next().unwrap_or_default();
        let step_text = slashes.next();
        if slashes.next().is_some() {
            return Err(ScheduleError::TooManySlashes(field, part.to_owned()));
        }
        let mut hyphens = range.split('-');
        let low = hyphens.next().unwrap_or_default();
        let (start, mut end, mut part_star) = if low == "*" || low == "?" {
            // robfig ignores whatever follows "*-", so "*-5" means "*": Kubernetes accepts it.
            (min, max, true)
        } else {
            let start = parse_value(low, field)?;
            let end = match (hyphens.next(), hyphens.next()) {
                (None, _) => start,
                (Some(high), None) => parse_value(high, field)?,
                _ => {
                    return Err(ScheduleError::TooManyHyphens(field, part.to_owned()));
                }
            };
            (start, end, false)
        };
        let step = match step_text {
            None => 1,
            Some(step_text) => {
                let invalid = || ScheduleError::InvalidStep(field, step_text.to_owned());
                let step = parse_number(step_text).ok_or_else(invalid)?;
                // "N/step" runs from N to the end of the field.
                if !range.contains('-') {
                    end = max;
                }
                part_star &= step <= 1;
                step
            }
        };
        for value in [start, end] {
            if !(min..=max).contains(&value) {
                return Err(ScheduleError::OutOfRange(field, value));
            }
        }
        if start > end {
            return Err(ScheduleError::Backwards(field, range.to_owned()));
        }
        if step == 0 {
            return Err(ScheduleError::StepZero(field, part.to_owned()));
        }
        // Deliberately stricter than robfig, which reads "*/70" in the minute field as "0": a
        // step beyond the field's maximum fires once a cycle, never what "every 70 minutes" means.
        if step > max {
            return Err(ScheduleError::StepTooLarge(field, step));
        }
        bits |= (start..=end)
            .step_by(usize::try_from(step).unwrap_or(1))
            .fold(0, |acc, v| acc | 1 << v);
        star |= part_star;
    }
    Ok((bits, star))
}

/// A single value: a month/day name where the field has them, else a number.
fn parse_value(text: &str, field: Field) -> Result<u64, ScheduleError> {
    field
        .named_value(text)
        .or_else(|| parse_number(text))
        .ok_or_else(|| ScheduleError::NotANumber(field, text.to_owned()))
}

/// Go's `strconv.Atoi` limited to non-negative results, as robfig's `mustParseInt`: ASCII digits
/// with an optional '+'. Values too large for u64 saturate; they are out of range anyway.
fn parse_number(text: &str) -> Option<u64> {
    let digits = text.strip_prefix('+').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.bytes().fold(0u64, |acc, b| {
        acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use chrono_tz::{Europe::Berlin, Tz};

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("valid")
    }

    /// Berlin wall time; in the fall-back overlap, the first (summer-time) instant.
    fn berlin(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Tz> {
        Berlin
            .with_ymd_and_hms(y, mo, d, h, mi, 0)
            .earliest()
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
        let plus2 = chrono::FixedOffset::east_opt(2 * 3600).expect("valid offset");
        let fire = sched("0 9 * * *").next_after(&utc(2026, 5, 4, 8, 0).with_timezone(&plus2));
        let fire = fire.map(|f| (f.offset().local_minus_utc(), f.day(), f.hour()));
        assert_eq!(fire, Some((7200, 5, 9)));
        let after = utc(2026, 5, 4, 10, 0) + TimeDelta::milliseconds(1500);
        let next = sched("@every 90s").next_after(&after);
        assert_eq!(next, Some(utc(2026, 5, 4, 10, 0) + TimeDelta::seconds(91)));
    }

    #[test]
    fn day_of_month_and_day_of_week_combine_like_robfig() {
        let days = |spec: &str| {
            let (s, mut at) = (sched(spec), utc(2026, 2, 28, 0, 0));
            let next = std::iter::from_fn(|| s.next_after(&at).inspect(|t| at = *t));
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
        let next = |spec: &str, after: DateTime<Tz>| {
            let fire = sched(spec).next_after(&after).expect("fires");
            let utc = fire.naive_utc();
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
        let second_pass = utc(2026, 10, 25, 1, 10).with_timezone(&Berlin);
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
        let periods = |spec: &str, from: &DateTime<Utc>| {
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
        let sunday_night = from - TimeDelta::minutes(30);
        assert_eq!(periods("0 0,1,23 * * *", &sunday_night).1, secs(22 * 3600));
        // Started mid-day, the rest of that day counts.
        let noon = from + TimeDelta::minutes(12 * 60 + 5);
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
        let from = berlin(2026, 1, 1, 0, 0);
        let started = std::time::Instant::now();
        for spec in [
            "* * * * *",
            "*/5 * * 1 *",
            "* * 13 * 5",
            "0 0 29 2 *",
            "0 0 30 2 *",
        ] {
            let s = sched(spec);
            assert!(
                s.longest_period(&from) >= s.shortest_period(&from),
                "{spec}"
            );
        }
        // A few milliseconds per call in debug builds; the bound leaves room for a busy machine.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
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
}
