//! Parsing of the five cron fields and the `@` descriptors, with the error messages people read.

use std::fmt;

use std::time::Duration;

use super::{NEVER, Schedule};

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

/// Parses `@hourly` and friends (as their five-field equivalents) and `@every <interval>`.
pub(super) fn parse_descriptor(spec: &str) -> Result<Schedule, ScheduleError> {
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
pub(super) fn parse_field(text: &str, field: Field) -> Result<(u64, bool), ScheduleError> {
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
