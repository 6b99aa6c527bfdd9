//! `Duration`: the policy's way of writing spans of time (`90s`, `30m`, `24h`, `14d`, `2w`, `1h30m`).
//! Units go from largest to smallest, each at most once; the value is a positive whole number of
//! seconds. The same grammar is enforced by the CRD schema pattern, so admission and Signet agree.

use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Units, largest first, with their length in seconds.
const UNITS: [(char, u64); 5] = [
    ('w', 604_800),
    ('d', 86_400),
    ('h', 3_600),
    ('m', 60),
    ('s', 1),
];

/// Digits allowed per unit; keeps every value far from overflow in seconds and in CEL's int64.
const MAX_DIGITS: usize = 6;
/// The largest number of one unit, [`MAX_DIGITS`] nines.
const MAX_COUNT: u64 = 999_999;

/// Schema pattern for durations; must accept exactly what [`Duration::from_str`] accepts
/// (apart from zero, which a CEL rule refuses).
pub const DURATION_PATTERN: &str =
    "^([0-9]{1,6}w)?([0-9]{1,6}d)?([0-9]{1,6}h)?([0-9]{1,6}m)?([0-9]{1,6}s)?$";

/// Longest string the pattern accepts (five units of six digits and a letter each).
pub const DURATION_MAX_LENGTH: u64 = 35;

/// The hint appended to every parse error.
const GRAMMAR_HINT: &str = "write durations like 90s, 30m, 24h, 14d, 2w or 1h30m";

/// A positive span of time, whole seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(u64);

/// Why a string is not a [`Duration`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid duration: {reason}; {GRAMMAR_HINT}")]
pub struct DurationError {
    value: String,
    reason: String,
}

impl Duration {
    /// A duration of `secs` seconds; `None` for zero, which no policy field accepts.
    pub const fn from_secs(secs: u64) -> Option<Self> {
        if secs == 0 { None } else { Some(Self(secs)) }
    }

    /// Length in seconds.
    pub const fn as_secs(self) -> u64 {
        self.0
    }

    /// As a standard library duration.
    pub const fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.0)
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| DurationError {
            value: value.to_owned(),
            reason,
        };
        if value.is_empty() {
            return Err(fail("it is empty".into()));
        }
        if value.contains(char::is_whitespace) {
            return Err(fail("durations contain no spaces".into()));
        }
        let mut total: u64 = 0;
        // Index into UNITS of the next unit allowed, so units must descend and not repeat.
        let mut next_unit = 0;
        let mut rest = value;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                let c = rest.chars().next().unwrap_or_default();
                return Err(fail(if c == '-' {
                    "durations cannot be negative".into()
                } else {
                    format!("expected a number before {c:?}")
                }));
            }
            if digits > MAX_DIGITS {
                return Err(fail(format!("numbers have at most {MAX_DIGITS} digits")));
            }
            let number: u64 = rest[..digits]
                .parse()
                .map_err(|_| fail("number out of range".into()))?;
            let Some(unit) = rest[digits..].chars().next() else {
                return Err(fail(format!(
                    "{} has no unit (w, d, h, m or s)",
                    &rest[..digits]
                )));
            };
            let Some(index) = UNITS.iter().position(|(u, _)| *u == unit) else {
                return Err(fail(format!("unknown unit {unit:?} (use w, d, h, m or s)")));
            };
            if index < next_unit {
                return Err(fail(
                    "units must go from largest to smallest (w, d, h, m, s), each at most once"
                        .into(),
                ));
            }
            next_unit = index + 1;
            total += number * UNITS[index].1;
            rest = &rest[digits + unit.len_utf8()..];
        }
        Duration::from_secs(total).ok_or_else(|| fail("it must be greater than zero".into()))
    }
}

impl fmt::Display for Duration {
    /// Canonical form: largest units first, zero units left out (`36h` prints as `1d12h`). A unit
    /// takes at most [`MAX_DIGITS`] digits and leaves the rest to smaller units, so every value
    /// the parser gives prints in a form it reads back: `999999w999999d` is 1,142,856 weeks, which
    /// prints as `999999w999999d`, not as an unparseable `1142856w`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        for (unit, secs) in UNITS {
            // Seconds take whatever is left, so no value is lost even beyond the parser's range.
            let count = if secs == 1 {
                rest
            } else {
                (rest / secs).min(MAX_COUNT)
            };
            if count > 0 {
                write!(f, "{count}{unit}")?;
                rest -= count * secs;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A positive duration: whole numbers with units w, d, h, m, s, largest first (90s, 30m, 24h, 14d, 2w, 1h30m).",
            "pattern": DURATION_PATTERN,
            "minLength": 2,
            "maxLength": DURATION_MAX_LENGTH,
            "x-kubernetes-validations": [{
                "rule": "self.matches('[1-9]')",
                "message": "must be greater than zero",
            }],
        })
    }
}

/// A CEL expression giving the length in seconds of the duration string at `path` (e.g.
/// `self.timeout.after`), so CEL rules can compare durations the way Signet does.
pub fn cel_seconds(path: &str) -> String {
    UNITS
        .iter()
        .map(|(unit, secs)| {
            format!("({path}.matches('[0-9]+{unit}') ? int({path}.find('[0-9]+{unit}').replace('{unit}', '')) * {secs} : 0)")
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> u64 {
        text.parse::<Duration>().unwrap().as_secs()
    }

    fn error(text: &str) -> String {
        text.parse::<Duration>().unwrap_err().to_string()
    }

    #[test]
    fn parses_every_unit_and_combinations() {
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("30m"), 1_800);
        assert_eq!(secs("24h"), 86_400);
        assert_eq!(secs("14d"), 1_209_600);
        assert_eq!(secs("2w"), 1_209_600);
        assert_eq!(secs("1h30m"), 5_400);
        assert_eq!(
            secs("1w2d3h4m5s"),
            604_800 + 2 * 86_400 + 3 * 3_600 + 4 * 60 + 5
        );
        assert_eq!(secs("0h1s"), 1);
    }

    #[test]
    fn prints_canonically_and_round_trips() {
        let cases = [
            ("90s", "1m30s"),
            ("36h", "1d12h"),
            ("14d", "2w"),
            ("1h30m", "1h30m"),
            ("60m", "1h"),
        ];
        for (input, canonical) in cases {
            let d: Duration = input.parse().unwrap();
            assert_eq!(d.to_string(), canonical, "{input}");
            assert_eq!(canonical.parse::<Duration>().unwrap(), d, "{canonical}");
        }
        for n in [1, 59, 61, 3_599, 3_601, 86_399, 604_801, 999_999_999] {
            let d = Duration::from_secs(n).unwrap();
            assert_eq!(d.to_string().parse::<Duration>().unwrap(), d, "{n}");
        }
        // Past 999,999 weeks the canonical form would need seven digits, which the parser (and
        // the schema pattern) refuse: the controller printed such a duration into SIGNET_POLICY
        // and the worker could not read it back.
        for (input, printed) in [
            ("999999w999999d", "999999w999999d"),
            ("999999w7d", "999999w7d"),
            (
                "999999w999999d999999h999999m999999s",
                "999999w999999d999999h999999m999999s",
            ),
            ("1w999999d", "142858w"),
        ] {
            let d: Duration = input.parse().unwrap();
            assert_eq!(d.to_string(), printed, "{input}");
            assert_eq!(printed.parse::<Duration>().unwrap(), d, "{printed}");
        }
    }

    #[test]
    fn refuses_zero_negative_and_garbage_with_clear_messages() {
        assert!(error("0s").contains("must be greater than zero"));
        assert!(error("0h0m").contains("must be greater than zero"));
        assert!(error("-5m").contains("cannot be negative"));
        assert!(error("").contains("it is empty"));
        assert!(error("10").contains("10 has no unit"));
        assert!(error("3x").contains("unknown unit 'x'"));
        assert!(error("1.5h").contains("unknown unit '.'"));
        assert!(error("30m1h").contains("largest to smallest"));
        assert!(error("1h1h").contains("largest to smallest"));
        assert!(error("h").contains("expected a number before 'h'"));
        assert!(error("1h 30m").contains("durations contain no spaces"));
        assert!(error("1234567s").contains("at most 6 digits"));
        assert!(error("3x").ends_with("write durations like 90s, 30m, 24h, 14d, 2w or 1h30m"));
        assert_eq!(Duration::from_secs(0), None);
    }

    #[test]
    fn schema_pattern_agrees_with_the_parser() {
        let pattern = regex::Regex::new(DURATION_PATTERN).unwrap();
        let samples = [
            "90s",
            "30m",
            "24h",
            "14d",
            "2w",
            "1h30m",
            "0s",
            "30m1h",
            "1h1h",
            "3x",
            "",
            "10",
            "1.5h",
            "-1m",
            "999999w999999d999999h999999m999999s",
            "1234567s",
            "1w2d3h4m5s",
            "01m",
        ];
        for sample in samples {
            let schema_ok = pattern.is_match(sample)
                && sample.len() >= 2
                && sample.bytes().any(|b| (b'1'..=b'9').contains(&b));
            assert_eq!(schema_ok, sample.parse::<Duration>().is_ok(), "{sample:?}");
            assert!(sample.len() as u64 <= DURATION_MAX_LENGTH || !pattern.is_match(sample));
        }
    }

    #[test]
    fn serde_uses_the_text_form() {
        let d: Duration = serde_json::from_str("\"1h30m\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1h30m\"");
        let err = serde_json::from_str::<Duration>("\"soon\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"soon\" is not a valid duration"), "{err}");
    }
}
