//! Where the spec configures each notice kind: its channel list and its template. The only code
//! that maps a [`NoticeKind`] to a field of [`SignaturePolicySpec`].

use crate::crd::{MessageTemplate, SignaturePolicySpec};

use super::notice::NoticeKind;

/// The channels `spec.<kind's section>.channels` names; `None` when the section is absent.
pub fn channels(spec: &SignaturePolicySpec, kind: NoticeKind) -> Option<&[String]> {
    let list = match kind {
        NoticeKind::Reminder => &spec.reminders.as_ref()?.channels,
        NoticeKind::ExpiryWarning => &spec.expiry_warning.as_ref()?.channels,
        NoticeKind::Escalation => &spec.escalation.as_ref()?.channels,
        NoticeKind::TimeoutAlert => &spec.timeout.as_ref()?.channels,
    };
    Some(list)
}

/// The policy's own template for `kind`, when its section has one.
pub fn template(spec: &SignaturePolicySpec, kind: NoticeKind) -> Option<&MessageTemplate> {
    match kind {
        NoticeKind::Reminder => spec.reminders.as_ref()?.template.as_ref(),
        NoticeKind::ExpiryWarning => spec.expiry_warning.as_ref()?.template.as_ref(),
        NoticeKind::Escalation | NoticeKind::TimeoutAlert => None,
    }
}
