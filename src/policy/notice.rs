//! The notice-kind table, defined once: each kind of notice, the spec section that configures it,
//! the worker (CronJob section) that sends it, and who receives it. Everything that used to spell
//! this table out (CEL rules, channel lists, template sources, claim statements, due arithmetic)
//! derives from [`NoticeKind::ALL`] and its methods. A leaf: it imports nothing from the crate.

/// The kinds of notification, as stored in `signature_reminder_log.kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// Reminder *k* to the signer.
    Reminder,
    /// The one warning before the deadline, to the signer.
    ExpiryWarning,
    /// The alert once reminders are exhausted, to the team.
    Escalation,
    /// The alert about a timed-out workflow, to the team.
    TimeoutAlert,
}

/// Who receives a notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Audience {
    /// The workflow's signer, at `signer_email`; subject to the send window.
    Signer,
    /// The team: email channels send to their own `to` list.
    Team,
}

/// Which worker, and so which CronJob, handles a notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Section {
    /// `signet send-reminders`: reminders, expiry warnings, escalations.
    Reminders,
    /// `signet check-timeouts`.
    Timeouts,
}

impl NoticeKind {
    /// Every kind, in the order the reminders worker claims them.
    pub const ALL: [NoticeKind; 4] = [
        NoticeKind::Reminder,
        NoticeKind::ExpiryWarning,
        NoticeKind::Escalation,
        NoticeKind::TimeoutAlert,
    ];

    /// The worker that sends it.
    pub const fn section(self) -> Section {
        match self {
            NoticeKind::Reminder | NoticeKind::ExpiryWarning | NoticeKind::Escalation => {
                Section::Reminders
            }
            NoticeKind::TimeoutAlert => Section::Timeouts,
        }
    }

    /// Who receives it.
    pub const fn audience(self) -> Audience {
        match self {
            NoticeKind::Reminder | NoticeKind::ExpiryWarning => Audience::Signer,
            NoticeKind::Escalation | NoticeKind::TimeoutAlert => Audience::Team,
        }
    }

    /// The field of `spec` that configures it (`reminders`, `expiryWarning`, ...): the CEL
    /// rules' `self.<field>`.
    pub const fn spec_field(self) -> &'static str {
        match self {
            NoticeKind::Reminder => "reminders",
            NoticeKind::ExpiryWarning => "expiryWarning",
            NoticeKind::Escalation => "escalation",
            NoticeKind::TimeoutAlert => "timeout",
        }
    }

    /// The path of that field in a policy, for messages: `spec.reminders`.
    pub fn spec_path(self) -> String {
        format!("spec.{}", self.spec_field())
    }

    /// Whether it goes to the signer (and so is subject to the send window).
    pub fn is_for_signer(self) -> bool {
        self.audience() == Audience::Signer
    }

    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Reminder => "reminder",
            NoticeKind::ExpiryWarning => "expiry_warning",
            NoticeKind::Escalation => "escalation",
            NoticeKind::TimeoutAlert => "timeout_alert",
        }
    }

    /// The kind of a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl Section {
    /// Both sections.
    pub const ALL: [Section; 2] = [Section::Reminders, Section::Timeouts];

    /// `reminders` or `timeouts`: the CronJob suffix, the component label and the run-now value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Section::Reminders => "reminders",
            Section::Timeouts => "timeouts",
        }
    }

    /// The worker subcommand.
    pub const fn subcommand(self) -> &'static str {
        match self {
            Section::Reminders => "send-reminders",
            Section::Timeouts => "check-timeouts",
        }
    }

    /// The kinds this section's worker sends, in [`NoticeKind::ALL`]'s order.
    pub fn kinds(self) -> impl Iterator<Item = NoticeKind> {
        NoticeKind::ALL
            .into_iter()
            .filter(move |kind| kind.section() == self)
    }

    /// Parses a run-now annotation value.
    pub fn parse(value: &str) -> Option<Section> {
        Section::ALL
            .into_iter()
            .find(|s| s.as_str() == value.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for kind in NoticeKind::ALL {
            assert_eq!(NoticeKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(NoticeKind::parse("nudge"), None);
    }

    #[test]
    fn sections_round_trip() {
        for section in Section::ALL {
            assert_eq!(Section::parse(section.as_str()), Some(section));
        }
        assert_eq!(Section::parse("everything"), None);
    }

    #[test]
    fn the_table() {
        let rows: Vec<_> = NoticeKind::ALL
            .into_iter()
            .map(|k| (k.as_str(), k.section(), k.audience(), k.spec_path()))
            .collect();
        assert_eq!(
            rows,
            [
                (
                    "reminder",
                    Section::Reminders,
                    Audience::Signer,
                    "spec.reminders".to_owned()
                ),
                (
                    "expiry_warning",
                    Section::Reminders,
                    Audience::Signer,
                    "spec.expiryWarning".into()
                ),
                (
                    "escalation",
                    Section::Reminders,
                    Audience::Team,
                    "spec.escalation".into()
                ),
                (
                    "timeout_alert",
                    Section::Timeouts,
                    Audience::Team,
                    "spec.timeout".into()
                ),
            ]
        );
        let reminders: Vec<_> = Section::Reminders.kinds().collect();
        assert_eq!(
            reminders,
            [
                NoticeKind::Reminder,
                NoticeKind::ExpiryWarning,
                NoticeKind::Escalation
            ]
        );
        assert_eq!(
            Section::Timeouts.kinds().collect::<Vec<_>>(),
            [NoticeKind::TimeoutAlert]
        );
    }
}
