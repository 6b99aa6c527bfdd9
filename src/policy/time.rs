//! Signet's one time type is jiff (`Timestamp`, `tz::TimeZone`, `civil`, `SignedDuration`). This
//! module holds the IANA zone lookup every part uses and the one pair of conversions to chrono,
//! which only the database boundary still needs (sqlx decodes `DateTime<Utc>`, not jiff).

use chrono::{DateTime, Utc};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, Zoned, civil};

/// The zone named exactly `name` in the IANA database bundled into the binary. The name must match
/// in case, as it must for the CronJob's `timeZone` (Go's `time.LoadLocation`): jiff's own lookup
/// ignores case and knows `Etc/Unknown`, which is not an IANA zone. `Factory`, the database's
/// placeholder for "no zone set yet", is refused as chrono-tz refused it.
pub fn zone(name: &str) -> Option<TimeZone> {
    if name == "Factory" {
        return None;
    }
    let tz = jiff::tz::db().get(name).ok()?;
    (tz.iana_name() == Some(name)).then_some(tz)
}

/// The IANA name `name` would be with its case corrected, when that is the only thing wrong.
pub fn zone_name_ignoring_case(name: &str) -> Option<String> {
    let tz = jiff::tz::db().get(name).ok()?;
    tz.iana_name().map(str::to_owned)
}

/// A zone's IANA name, for messages; a zone from [`zone`] always has one.
pub fn zone_name(zone: &TimeZone) -> &str {
    zone.iana_name().unwrap_or("UTC")
}

/// The earlier instant of the wall time `wall` in `zone`, or none when a DST gap skips it.
pub fn earliest(zone: &TimeZone, wall: civil::DateTime) -> Option<Zoned> {
    let ambiguous = zone.to_ambiguous_zoned(wall);
    if let AmbiguousOffset::Gap { .. } = ambiguous.offset() {
        return None;
    }
    ambiguous.earlier().ok()
}

/// A chrono instant from the store as a jiff one. chrono reaches further than jiff's years
/// -9999..=9999; an instant beyond that is clamped to jiff's nearest end, which keeps every
/// comparison with a real instant the same.
pub fn from_chrono(at: DateTime<Utc>) -> Timestamp {
    // `timestamp_subsec_nanos` counts forward from the (floored) second, as `Timestamp::new` wants.
    let nanos = i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0);
    Timestamp::new(at.timestamp(), nanos).unwrap_or(if at.timestamp() < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// A jiff instant as chrono's, for the store and the types it shares with the workers. Every
/// jiff instant is within chrono's range.
pub fn to_chrono(at: Timestamp) -> DateTime<Utc> {
    // jiff's sub-second part has the sign of the instant; chrono's counts forward from the floor.
    let (mut seconds, mut nanos) = (at.as_second(), at.subsec_nanosecond());
    if nanos < 0 {
        seconds -= 1;
        nanos += 1_000_000_000;
    }
    DateTime::from_timestamp(seconds, nanos.unsigned_abs()).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Template times (`worker::deliver`) print as chrono-tz printed them: the zone's
    /// abbreviation, or its numeric one where the database has no letters for it.
    #[test]
    fn template_times_print_with_the_zone_abbreviation() {
        use chrono::TimeZone as _;
        let at: Timestamp = "2026-04-10T07:00:00Z".parse().unwrap();
        for name in [
            "Europe/Berlin",
            "Asia/Kathmandu",
            "America/Sao_Paulo",
            "UTC",
        ] {
            let ours = at
                .to_zoned(zone(name).unwrap())
                .strftime("%Y-%m-%d %H:%M %Z")
                .to_string();
            let tz: chrono_tz::Tz = name.parse().unwrap();
            let chrono = tz
                .from_utc_datetime(&to_chrono(at).naive_utc())
                .format("%Y-%m-%d %H:%M %Z");
            assert_eq!(ours, chrono.to_string(), "{name}");
        }
    }

    #[test]
    fn instants_survive_the_round_trip_through_chrono() {
        for text in [
            "1970-01-01T00:00:00Z",
            "2026-01-05T09:00:00Z",
            "2026-03-29T01:00:00.999999999Z",
            "1969-12-31T23:59:59.5Z",
            "1914-01-05T09:00:00.000000001Z",
            "9999-12-30T22:00:00.999999999Z",
            "-009999-01-02T01:59:59Z",
        ] {
            let chrono = DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc));
            let jiff: Timestamp = text.parse().unwrap();
            if let Ok(chrono) = chrono {
                assert_eq!(from_chrono(chrono), jiff, "{text}");
            }
            assert_eq!(from_chrono(to_chrono(jiff)), jiff, "{text}");
            assert_eq!(
                to_chrono(jiff).timestamp(),
                jiff.as_second() - i64::from(jiff.subsec_nanosecond() < 0),
                "{text}"
            );
        }
        assert_eq!(from_chrono(to_chrono(Timestamp::MAX)), Timestamp::MAX);
        assert_eq!(from_chrono(to_chrono(Timestamp::MIN)), Timestamp::MIN);
        // Beyond jiff's range: clamped, so it still compares the same with any real instant.
        assert_eq!(from_chrono(DateTime::<Utc>::MAX_UTC), Timestamp::MAX);
        assert_eq!(from_chrono(DateTime::<Utc>::MIN_UTC), Timestamp::MIN);
    }

    #[test]
    fn zones_are_looked_up_by_their_exact_iana_name() {
        for name in [
            "Europe/Berlin",
            "America/New_York",
            "UTC",
            "Etc/UTC",
            "US/Eastern",
            "Etc/GMT+5",
            "EST5EDT",
        ] {
            assert_eq!(zone(name).as_ref().map(zone_name), Some(name));
        }
        for name in [
            "europe/berlin",
            "utc",
            "Etc/Unknown",
            "Mars/Olympus",
            "",
            "Europe/Berlin ",
            "+02:00",
            "Factory",
        ] {
            assert_eq!(zone(name), None, "{name:?}");
        }
        assert_eq!(
            zone_name_ignoring_case("europe/BERLIN").as_deref(),
            Some("Europe/Berlin")
        );
        assert_eq!(zone_name_ignoring_case("Mars/Olympus"), None);
    }

    #[test]
    fn a_wall_time_takes_its_earlier_instant_and_none_in_a_gap() {
        let berlin = zone("Europe/Berlin").unwrap();
        let at = |text: &str| text.parse::<Timestamp>().unwrap();
        let earliest = |wall: &str| earliest(&berlin, wall.parse().unwrap()).map(|z| z.timestamp());
        assert_eq!(
            earliest("2026-01-05T00:00"),
            Some(at("2026-01-04T23:00:00Z"))
        );
        assert_eq!(earliest("2026-03-29T02:30"), None);
        assert_eq!(
            earliest("2026-10-25T02:30"),
            Some(at("2026-10-25T00:30:00Z"))
        );
    }

    /// The zones accepted are the ones chrono-tz (the zone data before jiff's) accepted.
    #[test]
    fn the_same_zones_as_chrono_tz_are_known() {
        let missing: Vec<&str> = chrono_tz::TZ_VARIANTS
            .iter()
            .map(|tz| tz.name())
            .filter(|name| zone(name).is_none())
            .collect();
        assert_eq!(missing, Vec::<&str>::new());
        let names: Vec<String> = jiff::tz::db()
            .available()
            .map(|name| name.as_str().to_owned())
            .collect();
        let extra: Vec<&String> = names
            .iter()
            .filter(|name| zone(name).is_some() && name.parse::<chrono_tz::Tz>().is_err())
            .collect();
        assert_eq!(extra, Vec::<&String>::new());
    }
}
