//! Sending what a run holds: claimed deliveries are rendered, sent with bounded concurrency and
//! retries, and their outcomes recorded; digest channels (Slack) collect everything and send one
//! message at the end of the run. Shared by both workers; per-delivery failures are counted in
//! [`DeliveryCounts`], never returned.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;

use super::{Error, RunOptions, Stop};
use crate::notify::{self, Channel, Channels, Digest, DigestChannel, Message};
use crate::policy::NoticeKind;
use crate::policy::templates::TemplateContext;
use crate::policy::{Policy, Timing, time};
use crate::store::{ClaimedDelivery, Failure, Outcome, Store};

/// What happened to the deliveries a run held. Serialized flat into the run's summary line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryCounts {
    /// Accepted by the provider.
    pub sent: u64,
    /// Failed for good (the log row says why).
    pub failed: u64,
    /// Sends repeating an attempt that left no outcome (the worker died mid-send, or the
    /// provider did not answer in time): they may have gone out twice.
    pub possible_duplicates: u64,
    /// Failed for now; a later run retries them.
    pub retrying: u64,
    /// Deliveries taken over from earlier runs.
    pub recovered: u64,
    /// Recovered deliveries not sent because the workflow moved on (signed, say).
    pub skipped: u64,
    /// Not sent because their channel rejected the run or the worker was asked to stop: given
    /// back, due for the next run ([`Store::release`]).
    pub released: u64,
    /// The channels that rejected the run as a whole (a revoked key, a wrong URL, a failed
    /// SMTP login): the run stopped sending through them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejected_channels: Vec<ChannelRejection>,
    /// The worker was asked to stop (SIGTERM) before the run finished.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// A channel that rejected the run as a whole, as the summary line and the status report it:
/// the channel's name in the policy and what the provider answered, never the secret or the URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelRejection {
    /// The channel's name in the policy.
    pub channel: String,
    /// `notify::Error::reason()`: `ProviderRejected`, `ProviderUnreachable`, ...
    pub reason: &'static str,
    /// The provider's HTTP status or SMTP code, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// What happened, for a person.
    pub error: String,
}

impl ChannelRejection {
    fn new(channel: &str, err: &notify::Error) -> Self {
        Self {
            channel: channel.to_owned(),
            reason: err.reason(),
            status: err.status(),
            error: err.to_string(),
        }
    }
}

/// What a run has learnt about its channels and what it gives back at the end: shared by the
/// concurrent sends of a run.
#[derive(Default)]
struct RunState {
    /// The channels that rejected the run (the breaker is open: nothing more is sent through
    /// them), by name.
    rejected: Mutex<BTreeMap<String, ChannelRejection>>,
    /// Claimed deliveries not sent, given back at the end of the run ([`Store::release`]).
    unsent: Mutex<Vec<(i64, Failure)>>,
}

impl RunState {
    fn is_rejected(&self, channel: &str) -> bool {
        lock(&self.rejected).contains_key(channel)
    }

    /// Opens the breaker of `channel` (the first rejection is the one reported).
    fn reject(&self, channel: &str, err: &notify::Error) {
        let mut rejected = lock(&self.rejected);
        if !rejected.contains_key(channel) {
            tracing::error!(channel, reason = err.reason(), status = err.status(), error = %err, "the channel rejected the run; nothing more is sent through it, its deliveries stay due for the next run");
            rejected.insert(channel.to_owned(), ChannelRejection::new(channel, err));
        }
    }

    /// Keeps `log_id` to be given back at the end of the run.
    fn give_back(&self, log_id: i64, failure: Failure, counts: &mut DeliveryCounts) {
        counts.released += 1;
        lock(&self.unsent).push((log_id, failure));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a run holds for its digest channels until the end of the run: per channel, each
/// delivery in a few words (a run may time out 100,000 workflows) and the first few messages.
#[derive(Default)]
pub(super) struct Digests {
    by_channel: BTreeMap<String, HeldDigest>,
}

struct HeldDigest {
    channel: Arc<dyn DigestChannel>,
    items: Vec<Held>,
    digest: Digest,
}

impl Digests {
    /// Keeps `delivery` for `channel`'s digest, listing it (`fields`) while the sample has room.
    fn hold(
        &mut self,
        channel: &Arc<dyn DigestChannel>,
        delivery: &ClaimedDelivery,
        claimed_at: Instant,
        fields: impl FnOnce(&ClaimedDelivery) -> Message,
    ) {
        let held = self
            .by_channel
            .entry(delivery.channel.clone())
            .or_insert_with(|| HeldDigest {
                channel: channel.clone(),
                items: Vec::new(),
                digest: Digest::default(),
            });
        let listed = held.digest.wants_sample().then(|| fields(delivery));
        held.digest.add(delivery.kind, listed);
        held.items.push(Held {
            log_id: delivery.log_id,
            kind: delivery.kind,
            attempt: Attempt::from(delivery),
            claimed_at,
        });
    }
}

/// A claimed delivery kept for a digest.
struct Held {
    log_id: i64,
    kind: NoticeKind,
    attempt: Attempt,
    claimed_at: Instant,
}

/// Which try of which delivery a send was, for its outcome.
#[derive(Clone)]
struct Attempt {
    workflow: uuid::Uuid,
    channel: String,
    attempts: i32,
}

impl From<&ClaimedDelivery> for Attempt {
    fn from(delivery: &ClaimedDelivery) -> Self {
        Self {
            workflow: delivery.workflow.id,
            channel: delivery.channel.clone(),
            attempts: delivery.attempts,
        }
    }
}

/// Renders and sends claimed deliveries for one policy, for one run.
pub(super) struct Deliverer<'a> {
    policy: &'a Policy,
    channels: &'a Channels,
    options: RunOptions,
    stop: Stop,
    state: RunState,
}

impl<'a> Deliverer<'a> {
    /// Checks that the options leave time to send and that every channel in `routes` exists.
    pub(super) fn new<'r>(
        policy: &'a Policy,
        channels: &'a Channels,
        routes: impl IntoIterator<Item = &'r String>,
        options: RunOptions,
    ) -> Result<Self, Error> {
        if options.send_window().is_zero() {
            return Err(Error::Config(format!(
                "the lease ({}s) must be longer than a send with all its retries ({}s)",
                options.lease.as_secs(),
                options.worst_send().as_secs()
            )));
        }
        for name in routes {
            if !channels.contains_key(name) {
                return Err(Error::Config(format!("channel {name} is not configured")));
            }
        }
        Ok(Self {
            policy,
            channels,
            options,
            stop: Stop::default(),
            state: RunState::default(),
        })
    }

    /// Makes the run heed `stop`.
    pub(super) fn set_stop(&mut self, stop: Stop) {
        self.stop = stop;
    }

    /// Whether the run was asked to stop: claim nothing more.
    pub(super) fn stopping(&self) -> bool {
        self.stop.is_requested()
    }

    /// Whether every channel of `route` rejected the run, so claiming for it is pointless.
    pub(super) fn route_rejected(&self, route: &[String]) -> bool {
        !route.is_empty() && route.iter().all(|c| self.state.is_rejected(c))
    }

    /// Ends the run's deliveries: gives back what was claimed and not sent, and reports the
    /// rejected channels and an interruption in `counts`.
    pub(super) async fn finish(
        &self,
        store: &Store,
        counts: &mut DeliveryCounts,
    ) -> Result<(), Error> {
        let unsent = std::mem::take(&mut *lock(&self.state.unsent));
        let released = store.release(&unsent).await?;
        if !unsent.is_empty() {
            tracing::info!(
                given_back = unsent.len(),
                undone = released.undone,
                "deliveries not sent are due again for the next run"
            );
        }
        counts.rejected_channels = lock(&self.state.rejected).values().cloned().collect();
        counts.interrupted = self.stopping();
        Ok(())
    }

    pub(super) fn timing(&self) -> &'a Timing {
        self.policy.timing()
    }

    pub(super) fn options(&self) -> &RunOptions {
        &self.options
    }

    /// Takes over every delivery of `kinds` an earlier run left pending past its lease and sends
    /// it; returns how many were taken over.
    pub(super) async fn recover(
        &self,
        store: &Store,
        kinds: &[NoticeKind],
        workflow_types: &[String],
        digests: &mut Digests,
        counts: &mut DeliveryCounts,
        mut progress: impl FnMut(&DeliveryCounts),
    ) -> Result<u64, Error> {
        let mut total = 0;
        loop {
            if self.stopping() {
                return Ok(total);
            }
            let recovered = store
                .recover(
                    kinds,
                    workflow_types,
                    self.options.lease,
                    self.options.batch_size,
                )
                .await?;
            if recovered.is_empty() {
                return Ok(total);
            }
            total += recovered.len() as u64;
            counts.recovered += recovered.len() as u64;
            counts.possible_duplicates +=
                recovered.iter().filter(|d| d.possible_duplicate).count() as u64;
            self.deliver(store, recovered, digests, counts).await?;
            progress(counts);
        }
    }

    /// Sends claimed deliveries (digest channels' are kept for [`Self::send_digests`]) and
    /// records their outcomes.
    pub(super) async fn deliver(
        &self,
        store: &Store,
        claimed: Vec<ClaimedDelivery>,
        digests: &mut Digests,
        counts: &mut DeliveryCounts,
    ) -> Result<(), Error> {
        let claimed_at = Instant::now();
        let mut outcomes = Vec::with_capacity(claimed.len());
        let mut sends = Vec::new();
        for delivery in claimed {
            // A recovered delivery whose workflow moved on (signed, cancelled) is moot.
            let expected = match delivery.kind {
                NoticeKind::TimeoutAlert => "timed_out",
                _ => "pending",
            };
            if delivery.workflow.status != expected {
                counts.skipped += 1;
                outcomes.push((
                    delivery.log_id,
                    Outcome::Failed(Failure::unsent(
                        WORKFLOW_MOVED_ON,
                        format!("not sent: the workflow is {}", delivery.workflow.status),
                    )),
                ));
                continue;
            }
            let Some(channel) = self.channels.get(&delivery.channel) else {
                counts.failed += 1;
                outcomes.push((
                    delivery.log_id,
                    Outcome::Failed(Failure::unsent(
                        CHANNEL_NOT_CONFIGURED,
                        format!("channel {} is no longer configured", delivery.channel),
                    )),
                ));
                continue;
            };
            if self.state.is_rejected(&delivery.channel) {
                self.state
                    .give_back(delivery.log_id, channel_rejected(&delivery.channel), counts);
                continue;
            }
            let channel = match channel {
                Channel::Message(channel) => channel.clone(),
                Channel::Digest(channel) => {
                    // A digest lists a few notifications and counts the rest: no template to
                    // render.
                    digests.hold(channel, &delivery, claimed_at, |d| self.fields(d));
                    continue;
                }
            };
            let message = match self.message(&delivery) {
                Ok(message) => message,
                Err(error) => {
                    counts.failed += 1;
                    let failure = Failure::unsent(TEMPLATE_FAILED, error);
                    outcomes.push((delivery.log_id, Outcome::Failed(failure)));
                    continue;
                }
            };
            sends.push((delivery, message, channel));
        }

        let retry = self.options.retry;
        let window = self.options.send_window();
        let grace = self.options.shutdown_grace;
        let state = &self.state;
        let stop = &self.stop;
        let results: Vec<_> = futures::stream::iter(sends)
            .map(|(delivery, message, channel)| async move {
                if state.is_rejected(&delivery.channel) {
                    return (delivery, Sent::ChannelRejected);
                }
                if stop.is_requested() {
                    return (delivery, Sent::Stopped);
                }
                if claimed_at.elapsed() > window {
                    return (delivery, Sent::LeaseRunningOut);
                }
                let send = retry.send_counted(channel.as_ref(), &message);
                let Some((result, unconfirmed)) = stop.or_grace(grace, send).await else {
                    return (delivery, Sent::CutShort);
                };
                if let Err(err) = &result
                    && err.rejects_channel()
                {
                    state.reject(&delivery.channel, err);
                }
                (delivery, Sent::Tried(result, unconfirmed))
            })
            .buffer_unordered(self.options.concurrency.max(1))
            .collect()
            .await;
        for (delivery, sent) in results {
            let outcome = match sent {
                Sent::Tried(Err(err), unconfirmed) if err.rejects_channel() => {
                    counts.possible_duplicates += unconfirmed;
                    state.give_back(delivery.log_id, failure(&err), counts);
                    continue;
                }
                Sent::Tried(result, unconfirmed) => {
                    counts.possible_duplicates += unconfirmed;
                    self.outcome(&Attempt::from(&delivery), result, counts)
                }
                Sent::ChannelRejected => {
                    state.give_back(delivery.log_id, channel_rejected(&delivery.channel), counts);
                    continue;
                }
                Sent::Stopped => {
                    state.give_back(delivery.log_id, stopped(), counts);
                    continue;
                }
                Sent::LeaseRunningOut => lease_ran_out(counts),
                Sent::CutShort => cut_short(counts),
            };
            outcomes.push((delivery.log_id, outcome));
        }
        store.complete(&outcomes).await?;
        Ok(())
    }

    /// One message per digest channel for everything collected during the run.
    pub(super) async fn send_digests(
        &self,
        store: &Store,
        digests: Digests,
        counts: &mut DeliveryCounts,
    ) -> Result<(), Error> {
        let window = self.options.send_window();
        let mut outcomes = Vec::new();
        for (name, held) in digests.by_channel {
            let HeldDigest {
                channel,
                items,
                mut digest,
            } = held;
            let (items, late): (Vec<Held>, Vec<Held>) = items
                .into_iter()
                .partition(|item| item.claimed_at.elapsed() <= window);
            for item in late {
                digest.remove(item.kind, item.log_id);
                outcomes.push((item.log_id, lease_ran_out(counts)));
            }
            if items.is_empty() {
                continue;
            }
            if self.stopping() || self.state.is_rejected(&name) {
                let why = if self.stopping() {
                    stopped()
                } else {
                    channel_rejected(&name)
                };
                for item in &items {
                    self.state.give_back(item.log_id, why.clone(), counts);
                }
                continue;
            }
            let (result, unconfirmed) = self
                .options
                .retry
                .send_digest(channel.as_ref(), &digest)
                .await;
            if let Err(err) = &result
                && err.rejects_channel()
            {
                self.state.reject(&name, err);
                counts.possible_duplicates += unconfirmed * items.len() as u64;
                for item in &items {
                    self.state.give_back(item.log_id, failure(err), counts);
                }
                continue;
            }
            for item in &items {
                // A digest that may have gone out twice carries every item twice.
                counts.possible_duplicates += unconfirmed;
                let outcome = self.outcome(&item.attempt, result.clone(), counts);
                outcomes.push((item.log_id, outcome));
            }
        }
        store.complete(&outcomes).await?;
        Ok(())
    }

    fn outcome(
        &self,
        delivery: &Attempt,
        result: Result<notify::Receipt, notify::Error>,
        counts: &mut DeliveryCounts,
    ) -> Outcome {
        match result {
            Ok(receipt) => {
                counts.sent += 1;
                Outcome::Sent {
                    provider_message_id: receipt.provider_message_id,
                }
            }
            Err(err) if err.is_transient() && delivery.attempts < self.options.max_attempts => {
                counts.retrying += 1;
                tracing::warn!(workflow = %delivery.workflow, channel = %delivery.channel, reason = err.reason(), error = %err, "delivery failed, a later run retries it");
                Outcome::Retry {
                    after: err.retry_after().unwrap_or(self.options.retry_later),
                    failure: failure(&err),
                }
            }
            Err(err) => {
                counts.failed += 1;
                tracing::warn!(workflow = %delivery.workflow, channel = %delivery.channel, reason = err.reason(), error = %err, "delivery failed");
                Outcome::Failed(failure(&err))
            }
        }
    }

    /// The message for `delivery`, its subject and bodies rendered from the policy's templates.
    fn message(&self, delivery: &ClaimedDelivery) -> Result<Message, String> {
        let mut message = self.fields(delivery);
        message.content = self
            .policy
            .renderer()
            .render(delivery.kind, &self.context(delivery))?;
        Ok(message)
    }

    /// The message for `delivery` without its rendered content (what a digest lists).
    fn fields(&self, delivery: &ClaimedDelivery) -> Message {
        let workflow = &delivery.workflow;
        Message {
            log_id: delivery.log_id,
            kind: delivery.kind,
            sequence: delivery.sequence,
            workflow_id: workflow.id,
            workflow_type: workflow.workflow_type.clone(),
            signer_email: workflow.signer_email.clone(),
            signer_name: workflow.signer_name.clone(),
            document_title: workflow.document_title.clone(),
            signing_url: workflow.signing_url.clone(),
            deadline: self.policy.timing().deadline(workflow),
            idempotency_key: delivery.idempotency_key.clone(),
            content: Default::default(),
        }
    }

    fn context(&self, delivery: &ClaimedDelivery) -> TemplateContext {
        let workflow = &delivery.workflow;
        let zone = self.policy.timing().signer_zone(workflow);
        let local = |t: DateTime<Utc>| {
            time::from_chrono(t)
                .to_zoned(zone.clone())
                .strftime("%Y-%m-%d %H:%M %Z")
                .to_string()
        };
        let deadline = self.policy.timing().deadline(workflow);
        TemplateContext {
            workflow_id: workflow.id.to_string(),
            workflow_type: workflow.workflow_type.clone(),
            signer_name: workflow.signer_name.clone(),
            signer_email: workflow.signer_email.clone(),
            document_title: workflow.document_title.clone(),
            signing_url: workflow.signing_url.clone(),
            requested_at: local(workflow.requested_at),
            deadline: deadline.map(local),
            reminder_number: delivery.sequence,
            max_reminders: self
                .policy
                .spec()
                .reminders
                .as_ref()
                .map_or(0, |r| r.max_reminders),
            kind: delivery.kind.as_str(),
        }
    }
}

/// Reason codes of failures no provider was asked about, beside `notify::Error::reason()`'s.
const WORKFLOW_MOVED_ON: &str = "WorkflowMovedOn";
const CHANNEL_NOT_CONFIGURED: &str = "ChannelNotConfigured";
const TEMPLATE_FAILED: &str = "TemplateFailed";
const LEASE_RUNNING_OUT: &str = "LeaseRunningOut";
/// The run's reason when a channel rejects it as a whole (and the log's for what it left unsent).
pub const CHANNEL_REJECTED: &str = "ChannelRejected";
/// The run's reason when the worker is asked to stop (and the log's for what it left unsent).
pub const INTERRUPTED: &str = "Interrupted";

/// How a provider's error is logged: its reason code, whether the try went unanswered, and the
/// text for a person (which starts with the reason, as it always has).
fn failure(err: &notify::Error) -> Failure {
    Failure {
        reason: err.reason(),
        unconfirmed: err.is_unconfirmed(),
        error: format!("{}: {err}", err.reason()),
    }
}

/// What became of one send of a batch.
enum Sent {
    /// Tried: the provider's answer, and the unanswered tries among the in-run retries.
    Tried(Result<notify::Receipt, notify::Error>, u64),
    /// Not tried: the channel had rejected the run.
    ChannelRejected,
    /// Not tried: the worker was asked to stop.
    Stopped,
    /// Not tried: the lease could run out mid-send.
    LeaseRunningOut,
    /// Cut short: the worker was asked to stop and the send outlasted the grace.
    CutShort,
}

/// Why a delivery went unsent through a channel that rejected the run.
fn channel_rejected(channel: &str) -> Failure {
    Failure::unsent(
        CHANNEL_REJECTED,
        format!("not sent: channel {channel} rejected the run; due for the next run"),
    )
}

/// Why a delivery went unsent when the worker was asked to stop.
fn stopped() -> Failure {
    Failure::unsent(
        INTERRUPTED,
        "not sent: the worker was asked to stop; due for the next run",
    )
}

/// A send still in flight when the shutdown grace ran out: it may have reached the provider,
/// so the next run retries it as a possible duplicate.
fn cut_short(counts: &mut DeliveryCounts) -> Outcome {
    counts.retrying += 1;
    Outcome::Retry {
        failure: Failure {
            reason: INTERRUPTED,
            unconfirmed: true,
            error: "the worker was stopped before the provider answered".into(),
        },
        after: Duration::ZERO,
    }
}

/// A claimed delivery whose lease could run out mid-send goes back for the next run.
fn lease_ran_out(counts: &mut DeliveryCounts) -> Outcome {
    counts.retrying += 1;
    Outcome::Retry {
        failure: Failure::unsent(
            LEASE_RUNNING_OUT,
            "not sent: the run's lease on it was running out",
        ),
        after: Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_error_is_logged_with_its_reason_and_whether_it_went_unanswered() {
        let unconfirmed = [
            notify::Error::Timeout,
            notify::Error::NoAnswer("reset".into()),
        ];
        let answered = [
            notify::Error::from_status(503, None, "down"),
            notify::Error::from_status(400, None, "bad address"),
            notify::Error::Network("refused".into()),
        ];
        for (err, expected) in unconfirmed
            .iter()
            .map(|e| (e, true))
            .chain(answered.iter().map(|e| (e, false)))
        {
            let failure = failure(err);
            assert_eq!(failure.reason, err.reason());
            assert_eq!(failure.unconfirmed, expected, "{err:?}");
            assert!(failure.error.starts_with(err.reason()), "{failure:?}");
        }
    }
}
