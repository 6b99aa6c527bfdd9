//! What is due for one workflow, from its row, the policy and the current instant: pure arithmetic,
//! no I/O. The stores select candidates with the same time conditions in SQL; this module adds
//! what SQL cannot do portably: send windows in the signer's time zone, across DST.

use chrono::{
    DateTime, Datelike, Days, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

use super::notice::NoticeKind;
use super::workflow::Workflow;
use crate::crd::{SendWindow, SignaturePolicySpec, Weekday};

/// The policy's timing, converted once from the spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    /// `reminders`, when the policy has that section.
    pub reminders: Option<ReminderTiming>,
    /// `spec.timeZone`, for signers without a valid zone of their own.
    pub zone: Tz,
    /// `timeout.after`: the deadline of rows without `deadline_at`.
    pub timeout_after: Option<chrono::Duration>,
    /// `expiryWarning.before`.
    pub expiry_warning_before: Option<chrono::Duration>,
    /// `escalation.after`.
    pub escalation_after: Option<chrono::Duration>,
}

/// `spec.reminders`, as durations and a parsed window.
#[derive(Clone, Debug, PartialEq)]
pub struct ReminderTiming {
    /// The first reminder this long after `requested_at`.
    pub first_after: chrono::Duration,
    /// Each further reminder this long after the previous one.
    pub every: chrono::Duration,
    /// Reminders per workflow at most.
    pub max_reminders: i32,
    /// When signer-facing notices may go out; `None`: any time.
    pub window: Option<Window>,
}

impl Timing {
    /// Converts a validated spec; the error names what is wrong (an unknown zone, a bad window).
    pub fn from_spec(spec: &SignaturePolicySpec) -> Result<Self, String> {
        let zone: Tz = spec.time_zone.parse().map_err(|_| {
            format!(
                "spec.timeZone {:?} is not a known IANA time zone",
                spec.time_zone
            )
        })?;
        let reminders = match &spec.reminders {
            None => None,
            Some(r) => Some(ReminderTiming {
                first_after: seconds(r.first_after),
                every: seconds(r.every),
                max_reminders: r.max_reminders,
                window: r.send_window.as_ref().map(Window::from_spec).transpose()?,
            }),
        };
        Ok(Self {
            reminders,
            zone,
            timeout_after: spec.timeout.as_ref().map(|t| seconds(t.after)),
            expiry_warning_before: spec.expiry_warning.as_ref().map(|w| seconds(w.before)),
            escalation_after: spec.escalation.as_ref().map(|e| seconds(e.after)),
        })
    }

    /// The row's deadline: `deadline_at`, else `requested_at + timeout.after`, else none.
    pub fn deadline(&self, workflow: &Workflow) -> Option<DateTime<Utc>> {
        workflow.deadline_at.or_else(|| {
            self.timeout_after
                .map(|after| workflow.requested_at + after)
        })
    }

    /// The zone send windows use for this signer: theirs when it is a valid IANA name.
    pub fn zone_for(&self, workflow: &Workflow) -> Tz {
        workflow
            .signer_time_zone
            .as_deref()
            .and_then(|z| z.parse().ok())
            .unwrap_or(self.zone)
    }

    /// Every notice due for `workflow` at `now`, sent now or held by the send window.
    pub fn assess(&self, workflow: &Workflow, now: DateTime<Utc>) -> Vec<DueNotice> {
        let mut due = Vec::new();
        if workflow.status != "pending" {
            return due;
        }
        let deadline = self.deadline(workflow);
        if deadline.is_some_and(|d| now >= d) {
            return due; // the timeout worker's business now
        }
        let Some(reminders) = &self.reminders else {
            return due;
        };
        let window = |kind, sequence| DueNotice {
            kind,
            sequence,
            readiness: match &reminders.window {
                Some(w) => w.readiness(now, self.zone_for(workflow)),
                None => Readiness::Now,
            },
        };

        let sent = workflow.reminders_sent;
        if sent < reminders.max_reminders {
            let next_at = if sent == 0 {
                workflow.requested_at + reminders.first_after
            } else {
                // Measured from the last reminder actually sent: after downtime one catch-up
                // reminder goes out and the next waits a full `every`, never a burst.
                workflow.last_reminded_at.unwrap_or(workflow.requested_at) + reminders.every
            };
            if now >= next_at {
                due.push(window(NoticeKind::Reminder, sent + 1));
            }
        }

        if let (Some(before), Some(deadline), None) = (
            self.expiry_warning_before,
            deadline,
            workflow.expiry_warned_at,
        ) && now >= deadline - before
        {
            due.push(window(NoticeKind::ExpiryWarning, 1));
        }

        if let (Some(after), None, Some(last)) = (
            self.escalation_after,
            workflow.escalated_at,
            workflow.last_reminded_at,
        ) && sent >= reminders.max_reminders
            && now >= last + after
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

fn seconds(d: crate::duration::Duration) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 1000))
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
    pub fn contains(&self, local: NaiveDateTime) -> bool {
        let minute = local.hour() * 60 + local.minute();
        let day = local.weekday().num_days_from_monday() as usize;
        if self.start < self.end {
            self.days[day] && self.start <= minute && minute < self.end
        } else {
            let previous = (day + 6) % 7;
            (self.days[day] && minute >= self.start) || (self.days[previous] && minute < self.end)
        }
    }

    /// `Now` when `at` lies inside the window in `zone`, else when it next opens.
    pub fn readiness(&self, at: DateTime<Utc>, zone: Tz) -> Readiness {
        if self.contains(at.with_timezone(&zone).naive_local()) {
            Readiness::Now
        } else {
            Readiness::HeldUntil(self.next_open(at, zone))
        }
    }

    /// The first instant after `at` when the window is open in `zone`.
    pub fn next_open(&self, at: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
        let today = at.with_timezone(&zone).date_naive();
        // An opening a week and a day away is the furthest one can be; a day before `today`
        // covers nothing new, since a window open now was handled by the caller.
        (0..=8u64)
            .filter_map(|offset| today.checked_add_days(Days::new(offset)))
            .filter(|date| self.days[date.weekday().num_days_from_monday() as usize])
            .filter_map(|date| opening(date, self.start, zone))
            .find(|open| *open > at && self.contains(open.with_timezone(&zone).naive_local()))
    }
}

/// The instant the window opens on `date`: the local time `minute` after midnight, or, when a DST
/// gap swallows it, the first local minute after the gap. Ambiguous times take the earlier one.
fn opening(date: NaiveDate, minute: u32, zone: Tz) -> Option<DateTime<Utc>> {
    let mut local = date.and_hms_opt(minute / 60, minute % 60, 0)?;
    for _ in 0..=180 {
        match zone.from_local_datetime(&local) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                return Some(t.with_timezone(&Utc));
            }
            LocalResult::None => local += chrono::Duration::minutes(1),
        }
    }
    None
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
