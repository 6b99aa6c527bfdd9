//! Names of the objects the controller creates. Kubernetes limits CronJob names to 52 characters
//! (it appends an 11-character suffix to name Jobs) and Job names to 63; longer names are
//! truncated and made unique again with a short hash of the full name.

use sha2::{Digest, Sha256};

use crate::policy::Section;

/// Longest CronJob name Kubernetes accepts.
pub const MAX_CRONJOB_NAME: usize = 52;
/// Longest Job name whose pods can still carry it as a label.
pub const MAX_JOB_NAME: usize = 63;

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
}
