//! Names of the objects the controller creates. Kubernetes limits CronJob names to 52 characters
//! (it appends an 11-character suffix to name Jobs) and Job names to 63; longer names are
//! truncated and made unique again with a short hash of the full name.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use crate::crd::SignaturePolicySpec;

/// Longest CronJob name Kubernetes accepts.
pub const MAX_CRONJOB_NAME: usize = 52;
/// Longest Job name whose pods can still carry it as a label.
pub const MAX_JOB_NAME: usize = 63;

/// Which worker a CronJob runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Section {
    /// `signet send-reminders`: reminders, expiry warnings, escalations.
    Reminders,
    /// `signet check-timeouts`.
    Timeouts,
}

impl Section {
    /// Both sections.
    pub const ALL: [Section; 2] = [Section::Reminders, Section::Timeouts];

    /// `reminders` or `timeouts`: the CronJob suffix, the component label and the run-now value.
    pub fn as_str(self) -> &'static str {
        match self {
            Section::Reminders => "reminders",
            Section::Timeouts => "timeouts",
        }
    }

    /// The channels this section's worker sends through (their secrets are all it gets).
    pub fn channels(self, spec: &SignaturePolicySpec) -> BTreeSet<&str> {
        match self {
            Section::Reminders => spec
                .reminders
                .iter()
                .flat_map(|r| &r.channels)
                .chain(spec.expiry_warning.iter().flat_map(|w| &w.channels))
                .chain(spec.escalation.iter().flat_map(|e| &e.channels))
                .map(String::as_str)
                .collect(),
            Section::Timeouts => spec
                .timeout
                .iter()
                .flat_map(|t| &t.channels)
                .map(String::as_str)
                .collect(),
        }
    }

    /// The worker subcommand.
    pub fn subcommand(self) -> &'static str {
        match self {
            Section::Reminders => "send-reminders",
            Section::Timeouts => "check-timeouts",
        }
    }

    /// Parses a run-now annotation value.
    pub fn parse(value: &str) -> Option<Section> {
        Section::ALL
            .into_iter()
            .find(|s| s.as_str() == value.trim())
    }
}

/// `<base>-<suffix>` within `max` characters: `base` is cut and followed by a 6-character hash of
/// the whole base when the full name would not fit.
pub fn bounded(base: &str, suffix: &str, max: usize) -> String {
    let full = format!("{base}-{suffix}");
    if full.len() <= max {
        return full;
    }
    let hash = hex::encode(Sha256::digest(base.as_bytes()));
    let keep = max.saturating_sub(suffix.len() + 8);
    let cut = base[..keep.min(base.len())].trim_end_matches(['-', '.']);
    format!("{cut}-{}-{suffix}", &hash[..6])
}

/// The CronJob running `section` for `policy`.
pub fn cronjob(policy: &str, section: Section) -> String {
    bounded(policy, section.as_str(), MAX_CRONJOB_NAME)
}

/// The ServiceAccount, Role and RoleBinding of a policy's workers.
pub fn worker_account(policy: &str) -> String {
    format!("{policy}-signet-worker")
}

/// A manual run of `cronjob`, recognisable as such; `stamp` makes it unique (the policy's
/// resourceVersion or the time).
pub fn manual_job(cronjob: &str, stamp: &str) -> String {
    bounded(cronjob, &format!("manual-{stamp}"), MAX_JOB_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept() {
        assert_eq!(
            cronjob("enrollment-agreements", Section::Reminders),
            "enrollment-agreements-reminders"
        );
        assert_eq!(cronjob("p", Section::Timeouts), "p-timeouts");
    }

    #[test]
    fn names_at_the_boundary() {
        // 42 + "-reminders" = 52: fits exactly.
        let base = "a".repeat(42);
        assert_eq!(
            cronjob(&base, Section::Reminders),
            format!("{base}-reminders")
        );
        // One more: truncated, hashed, exactly 52.
        let long = "a".repeat(43);
        let name = cronjob(&long, Section::Reminders);
        assert_eq!(name.len(), MAX_CRONJOB_NAME);
        assert!(
            name.ends_with("-reminders") && name.starts_with("aaaa"),
            "{name}"
        );
        // The longest policy name (63) still gives a valid, distinct name.
        let a = cronjob(&format!("{}x", "b".repeat(62)), Section::Timeouts);
        let b = cronjob(&format!("{}y", "b".repeat(62)), Section::Timeouts);
        assert!(a.len() <= MAX_CRONJOB_NAME && b.len() <= MAX_CRONJOB_NAME);
        assert_ne!(a, b, "names that share a prefix stay distinct");
        assert_eq!(
            a,
            cronjob(&format!("{}x", "b".repeat(62)), Section::Timeouts),
            "stable"
        );
    }

    #[test]
    fn truncation_never_leaves_a_dangling_separator() {
        let name = cronjob(
            &format!("{}-{}", "a".repeat(33), "b".repeat(20)),
            Section::Reminders,
        );
        assert!(!name.contains("--"), "{name}");
        assert!(name.len() <= MAX_CRONJOB_NAME);
    }

    #[test]
    fn manual_jobs_fit_a_label_value() {
        let cron = cronjob(&"c".repeat(63), Section::Reminders);
        let job = manual_job(&cron, "12345678");
        assert!(job.len() <= MAX_JOB_NAME, "{job}");
        assert!(job.ends_with("-manual-12345678"), "{job}");
        assert_eq!(manual_job("p-reminders", "9"), "p-reminders-manual-9");
    }

    #[test]
    fn sections_round_trip() {
        for section in Section::ALL {
            assert_eq!(Section::parse(section.as_str()), Some(section));
        }
        assert_eq!(Section::parse("everything"), None);
    }
}
