//! `signet plan`: what a reminders run would do right now, changing nothing. The same selection
//! and the same due arithmetic as a run, per channel: sent now, or held and until when.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::Error;
use crate::policy::timing::Readiness;
use crate::policy::{NoticeKind, Policy};
use crate::store::{DueCursor, Store};

/// One delivery a run would make or hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedDelivery {
    /// The workflow.
    pub workflow_id: Uuid,
    /// The signer's address.
    pub signer_email: String,
    /// What would be sent.
    pub kind: NoticeKind,
    /// Reminder number, 1 for the others.
    pub sequence: i32,
    /// Through which channel.
    pub channel: String,
    /// `send` or `hold`.
    pub action: &'static str,
    /// When a held delivery may go out (absent: sent now, or the window never opens again).
    pub held_until: Option<DateTime<Utc>>,
}

/// The plan of a run at one instant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The database clock the plan was made at.
    pub now: DateTime<Utc>,
    /// Deliveries sent now, per channel.
    pub send: u64,
    /// Deliveries held by the send window.
    pub held: u64,
    /// Every delivery, workflow by workflow.
    pub deliveries: Vec<PlannedDelivery>,
}

/// Computes the plan of `policy` against `store`, reading only.
pub async fn plan(store: &Store, policy: &Policy, page: i64) -> Result<Plan, Error> {
    let timing = policy.timing();
    let now = store.now().await?;
    let mut plan = Plan {
        now,
        send: 0,
        held: 0,
        deliveries: Vec::new(),
    };
    let Some(query) = policy.due_query() else {
        return Ok(plan);
    };
    let mut cursor = DueCursor::default();
    loop {
        let rows = store.due_page(&query, &mut cursor, page).await?;
        if rows.is_empty() {
            break;
        }
        for workflow in &rows {
            for notice in timing.assess(workflow, now) {
                let (action, held_until) = match notice.readiness {
                    Readiness::Now => ("send", None),
                    Readiness::HeldUntil(until) => ("hold", until),
                };
                for channel in policy.channels(notice.kind) {
                    if action == "send" {
                        plan.send += 1;
                    } else {
                        plan.held += 1;
                    }
                    plan.deliveries.push(PlannedDelivery {
                        workflow_id: workflow.id,
                        signer_email: workflow.signer_email.clone(),
                        kind: notice.kind,
                        sequence: notice.sequence,
                        channel: channel.clone(),
                        action,
                        held_until,
                    });
                }
            }
        }
    }
    // The walk goes by time; the plan lists workflows in id order (stable: each workflow's
    // notices keep their order).
    plan.deliveries.sort_by_key(|d| d.workflow_id);
    Ok(plan)
}

impl Plan {
    /// One JSON document.
    pub fn write_json(&self, out: &mut impl Write) -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self)?;
        writeln!(out)
    }

    /// A table, one delivery per line, then the totals per channel.
    pub fn write_table(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "{:<36}  {:<15}  {:>3}  {:<16}  {:<6}  HELD UNTIL",
            "WORKFLOW", "KIND", "#", "CHANNEL", "ACTION"
        )?;
        for d in &self.deliveries {
            writeln!(
                out,
                "{:<36}  {:<15}  {:>3}  {:<16}  {:<6}  {}",
                d.workflow_id,
                d.kind.as_str(),
                d.sequence,
                d.channel,
                d.action,
                d.held_until
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default()
            )?;
        }
        let mut per_channel: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
        for d in &self.deliveries {
            let entry = per_channel.entry(&d.channel).or_default();
            if d.action == "send" {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
        writeln!(
            out,
            "\nat {}: {} to send, {} held",
            self.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            self.send,
            self.held
        )?;
        for (channel, (send, held)) in per_channel {
            writeln!(out, "  {channel}: {send} to send, {held} held")?;
        }
        Ok(())
    }
}
