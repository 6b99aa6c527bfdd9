//! [`Digest`]: what a digest channel sends for a run, held compactly (counts by kind and the
//! first few messages in full) however many notifications the run holds.

use std::collections::BTreeMap;

use super::{Message, slack};
use crate::policy::NoticeKind;

/// What a digest channel sends for a run: how many notifications by kind, and the first few in
/// full. Kept compact so a run with 100,000 alerts does not hold 100,000 rendered messages.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Digest {
    /// Notifications in the digest.
    pub total: usize,
    /// Notifications by kind.
    pub by_kind: BTreeMap<NoticeKind, usize>,
    /// The first [`slack::DIGEST_ITEMS`] notifications.
    pub sample: Vec<Message>,
}

impl Digest {
    /// Whether the next notification added is listed (it needs a rendered [`Message`]) or only
    /// counted.
    pub fn wants_sample(&self) -> bool {
        self.sample.len() < slack::DIGEST_ITEMS
    }

    /// Counts a notification of `kind`, listing `message` while the sample has room.
    pub fn add(&mut self, kind: NoticeKind, message: Option<Message>) {
        self.total += 1;
        *self.by_kind.entry(kind).or_default() += 1;
        if let Some(message) = message.filter(|_| self.wants_sample()) {
            self.sample.push(message);
        }
    }

    /// Takes back a notification of `kind` counted earlier (and listed, if its log row is
    /// `log_id`).
    pub fn remove(&mut self, kind: NoticeKind, log_id: i64) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.by_kind.get_mut(&kind) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_kind.remove(&kind);
            }
        }
        self.sample.retain(|m| m.log_id != log_id);
    }

    /// The digest of `messages`.
    pub fn from_messages(messages: &[Message]) -> Self {
        let mut digest = Self::default();
        for m in messages {
            digest.add(m.kind, Some(m.clone()));
        }
        digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_lists_the_first_items_counts_all_and_takes_items_back() {
        let mut digest = Digest::default();
        for id in 0..12 {
            let kind = if id % 2 == 0 {
                NoticeKind::TimeoutAlert
            } else {
                NoticeKind::Escalation
            };
            let listed = digest.wants_sample().then(|| Message::for_test(id, kind));
            digest.add(kind, listed);
        }
        assert_eq!(digest.total, 12);
        assert_eq!(digest.sample.len(), slack::DIGEST_ITEMS);
        digest.remove(NoticeKind::TimeoutAlert, 0);
        digest.remove(NoticeKind::TimeoutAlert, 10);
        assert_eq!(digest.total, 10);
        assert_eq!(
            digest.by_kind,
            BTreeMap::from([(NoticeKind::Escalation, 6), (NoticeKind::TimeoutAlert, 4)])
        );
        let listed: Vec<i64> = digest.sample.iter().map(|m| m.log_id).collect();
        assert_eq!(listed, (1..10).collect::<Vec<_>>());
        for id in [2, 4, 6, 8] {
            digest.remove(NoticeKind::TimeoutAlert, id);
        }
        assert_eq!(
            digest.by_kind,
            BTreeMap::from([(NoticeKind::Escalation, 6)]),
            "a kind with nothing left is not listed"
        );
    }
}
