//! What is due for one workflow, from its row, the policy and the current instant: pure arithmetic,
//! no I/O. The stores select candidates with the same time conditions in SQL; this module adds
//! what SQL cannot do portably: send windows in the signer's time zone, across DST.
//!
//! The arithmetic is jiff's. A [`Workflow`]'s instants are chrono's, as sqlx decodes them, so
//! [`Timing::assess`] and [`Timing::deadline`] convert at their edges ([`super::time`]).

use std::cell::OnceCell;

use chrono::{DateTime, Utc};
use jiff::civil::{self, Date};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};

use super::notice::NoticeKind;
use super::time::{self, from_chrono, to_chrono};
use super::workflow::Workflow;
use crate::crd::{SendWindow, SignaturePolicySpec, Weekday};

/// The policy's timing, converted once from the spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    /// `reminders`, when the policy has that section.
    pub reminders: Option<ReminderTiming>,
    /// `spec.timeZone`, for signers without a valid zone of their own.
    pub zone: TimeZone,
    /// `timeout.after`: the deadline of rows without `deadline_at`.
    pub timeout_after: Option<SignedDuration>,
    /// `expiryWarning.before`.
    pub expiry_warning_before: Option<SignedDuration>,
    /// `escalation.after`.
    pub escalation_after: Option<SignedDuration>,
}

/// `spec.reminders`, as durations and a parsed window.
#[derive(Clone, Debug, PartialEq)]
pub struct ReminderTiming {
    /// The first reminder this long after `requested_at`.
    pub first_after: SignedDuration,
    /// Each further reminder this long after the previous one.
    pub every: SignedDuration,
    /// Reminders per workflow at most.
    pub max_reminders: i32,
    /// When signer-facing notices may go out; `None`: any time.
    pub window: Option<Window>,
}

impl Timing {
    /// Converts a validated spec; the error names what is wrong (an unknown zone, a bad window).
    pub fn from_spec(spec: &SignaturePolicySpec) -> Result<Self, String> {
        let zone = time::zone(&spec.time_zone).ok_or_else(|| {
            format!(
                "spec.timeZone {:?} is not a known IANA time zone",
                spec.time_zone
            )
        })?;
        let reminders = match &spec.reminders {
            None => None,
            Some(r) => Some(ReminderTiming {
                first_after: span(r.first_after),
                every: span(r.every),
                max_reminders: r.max_reminders,
                window: r.send_window.as_ref().map(Window::from_spec).transpose()?,
            }),
        };
        Ok(Self {
            reminders,
            zone,
            timeout_after: spec.timeout.as_ref().map(|t| span(t.after)),
            expiry_warning_before: spec.expiry_warning.as_ref().map(|w| span(w.before)),
            escalation_after: spec.escalation.as_ref().map(|e| span(e.after)),
        })
    }

    /// The row's deadline: `deadline_at`, else `requested_at + timeout.after`, else none.
    pub fn deadline(&self, workflow: &Workflow) -> Option<DateTime<Utc>> {
        workflow
            .deadline_at
            .or_else(|| self.deadline_instant(workflow).map(to_chrono))
    }

    /// [`Timing::deadline`] as a jiff instant.
    fn deadline_instant(&self, workflow: &Workflow) -> Option<Timestamp> {
        match workflow.deadline_at {
            Some(deadline) => Some(from_chrono(deadline)),
            None => self
                .timeout_after
                .map(|after| plus(from_chrono(workflow.requested_at), after)),
        }
    }

    /// The zone send windows use for this signer: theirs when it is a valid IANA name.
    pub fn signer_zone(&self, workflow: &Workflow) -> TimeZone {
        workflow
            .signer_time_zone
            .as_deref()
            .and_then(time::zone)
            .unwrap_or_else(|| self.zone.clone())
    }

    /// Every notice due for `workflow` at `now`, sent now or held by the send window.
    pub fn assess(&self, workflow: &Workflow, now: DateTime<Utc>) -> Vec<DueNotice> {
        let mut due = Vec::new();
        if workflow.status != "pending" {
            return due;
        }
        let now = from_chrono(now);
        let deadline = self.deadline_instant(workflow);
        if deadline.is_some_and(|d| now >= d) {
            return due; // the timeout worker's business now
        }
        let Some(reminders) = &self.reminders else {
            return due;
        };
        // The same for every signer-facing notice; looked up only when one is due.
        let readiness = OnceCell::new();
        let window = |kind, sequence| DueNotice {
            kind,
            sequence,
            readiness: *readiness.get_or_init(|| match &reminders.window {
                Some(w) => w.readiness(now, &self.signer_zone(workflow)),
                None => Readiness::Now,
            }),
        };

        let sent = workflow.reminders_sent;
        let last_reminded = workflow.last_reminded_at.map(from_chrono);
        if sent < reminders.max_reminders {
            let next_at = if sent == 0 {
                plus(from_chrono(workflow.requested_at), reminders.first_after)
            } else {
                // Measured from the last reminder actually sent: after downtime one catch-up
                // reminder goes out and the next waits a full `every`, never a burst.
                let last = last_reminded.unwrap_or_else(|| from_chrono(workflow.requested_at));
                plus(last, reminders.every)
            };
            if now >= next_at {
                due.push(window(NoticeKind::Reminder, sent + 1));
            }
        }

        if let (Some(before), Some(deadline), None) = (
            self.expiry_warning_before,
            deadline,
            workflow.expiry_warned_at,
        ) && now >= plus(deadline, -before)
        {
            due.push(window(NoticeKind::ExpiryWarning, 1));
        }

        if let (Some(after), None, Some(last)) =
            (self.escalation_after, workflow.escalated_at, last_reminded)
            && sent >= reminders.max_reminders
            && now >= plus(last, after)
        {
            // Alerts go to the team, not the signer: no send window.
            due.push(DueNotice {
                kind: NoticeKind::Escalation,
                sequence: 1,
                readiness: Readiness::Now,
            });
        }
        due
    }
}

/// A spec duration as a span; one beyond jiff's (about 292 billion years) saturates.
fn span(d: crate::duration::Duration) -> SignedDuration {
    SignedDuration::try_from(d.to_std()).unwrap_or(SignedDuration::MAX)
}

/// `at + span`, saturating at the ends of jiff's range so that no row can make it panic.
fn plus(at: Timestamp, span: SignedDuration) -> Timestamp {
    at.checked_add(span).unwrap_or(if span.is_negative() {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// One notice due for a workflow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueNotice {
    /// Reminder, expiry warning or escalation.
    pub kind: NoticeKind,
    /// Reminder number (from 1); 1 for the once-only notices.
    pub sequence: i32,
    /// Whether it may go out now.
    pub readiness: Readiness,
}

/// Whether a due notice may go out now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Inside the send window (or there is none).
    Now,
    /// Outside the send window: held until it next opens (`None`: it never opens again, which
    /// only a window lying wholly in a DST gap can do).
    HeldUntil(Option<DateTime<Utc>>),
}

/// A daily window of local time on some days of the week. A window whose end is earlier than its
/// start spans midnight and belongs to the day it opens on: Fri 22:00-06:00 covers Saturday 03:00.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    start: u32,
    end: u32,
    days: [bool; 7],
}

impl Window {
    /// A window from `start` to `end` (minutes after midnight) on `days`.
    pub fn new(start: u32, end: u32, days: &[Weekday]) -> Self {
        let mut open = [false; 7];
        for day in days {
            open[index(*day)] = true;
        }
        Self {
            start,
            end,
            days: open,
        }
    }

    fn from_spec(window: &SendWindow) -> Result<Self, String> {
        let clock = |value: &str| {
            super::validate::parse_clock(value)
                .ok_or_else(|| format!("send window time {value:?} is not HH:MM"))
        };
        Ok(Self::new(
            clock(&window.start)?,
            clock(&window.end)?,
            &window.days,
        ))
    }

    /// Whether the local wall time `local` lies inside the window.
    pub fn contains(&self, local: civil::DateTime) -> bool {
        let minute = (i32::from(local.hour()) * 60 + i32::from(local.minute())).unsigned_abs();
        let day = weekday_index(local.date());
        if self.start < self.end {
            self.days[day] && self.start <= minute && minute < self.end
        } else {
            let previous = (day + 6) % 7;
            (self.days[day] && minute >= self.start) || (self.days[previous] && minute < self.end)
        }
    }

    /// `Now` when `at` lies inside the window in `zone`, else when it next opens.
    pub fn readiness(&self, at: Timestamp, zone: &TimeZone) -> Readiness {
        if self.contains(zone.to_datetime(at)) {
            Readiness::Now
        } else {
            Readiness::HeldUntil(self.next_open(at, zone).map(to_chrono))
        }
    }

    /// The first instant after `at` when the window is open in `zone`.
    pub fn next_open(&self, at: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        let today = zone.to_datetime(at).date();
        // An opening a week and a day away is the furthest one can be; a day before `today`
        // covers nothing new, since a window open now was handled by the caller.
        (0..=8i64)
            .filter_map(|offset| today.checked_add(jiff::Span::new().days(offset)).ok())
            .filter(|date| self.days[weekday_index(*date)])
            .filter_map(|date| opening(date, self.start, zone))
            .find(|open| *open > at && self.contains(zone.to_datetime(*open)))
    }
}

/// The instant the window opens on `date`: the local time `minute` after midnight, or, when a DST
/// gap swallows it, the first local minute after the gap. Ambiguous times take the earlier one.
fn opening(date: Date, minute: u32, zone: &TimeZone) -> Option<Timestamp> {
    let (hour, minute) = (
        i8::try_from(minute / 60).ok()?,
        i8::try_from(minute % 60).ok()?,
    );
    let mut local = date.at(hour, minute, 0, 0);
    for _ in 0..=180 {
        let offset = match zone.to_ambiguous_timestamp(local).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset,
            // `before` is the offset in force before the change: the earlier instant.
            AmbiguousOffset::Fold { before, .. } => before,
            AmbiguousOffset::Gap { .. } => {
                local = local.checked_add(SignedDuration::from_mins(1)).ok()?;
                continue;
            }
        };
        return offset.to_timestamp(local).ok();
    }
    None
}

/// Monday 0 to Sunday 6, as [`Window`] keeps its days.
fn weekday_index(date: Date) -> usize {
    usize::try_from(date.weekday().to_monday_zero_offset()).unwrap_or(0)
}

fn index(day: Weekday) -> usize {
    use Weekday::*;
    match day {
        Mon => 0,
        Tue => 1,
        Wed => 2,
        Thu => 3,
        Fri => 4,
        Sat => 5,
        Sun => 6,
    }
}

#[cfg(test)]
mod tests;
