//! Delivering notifications through two kinds of channel: a [`MessageChannel`] sends one
//! message per call (SendGrid, SMTP, webhooks, the log) and a [`DigestChannel`] one digest per
//! run (Slack); [`build_channels`] gives each provider as its kind, so neither can be handed the
//! other's call. Failures, retries, the shared HTTP client and secrets live in the submodules.

pub mod log;
pub mod sendgrid;
pub mod slack;
pub mod smtp;
pub mod webhook;

mod digest;
mod error;
mod http;
mod message;
mod retry;
mod secrets;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;

pub use digest::Digest;
pub use error::{Error, describe_reqwest};
pub use http::{HttpTimeouts, http_client, parse_retry_after, retry_after_header, send_http};
pub use message::{AUTOMATED_MAIL_HEADERS, Message, display_name, split_mailbox};
pub use retry::RetryPolicy;
pub use secrets::{EnvLookup, secret};

use crate::crd::{ChannelKind, SignaturePolicySpec};

/// What a provider said when it accepted a delivery.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Receipt {
    /// The provider's id for the message, when it gives one.
    pub provider_message_id: Option<String>,
}

/// A provider that takes one message per send (SendGrid, SMTP, webhooks, the log).
pub trait MessageChannel: Send + Sync {
    /// Sends `message` once, without retrying ([`RetryPolicy::send_counted`] retries).
    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<Receipt, Error>>;
}

/// A provider that takes one digest per run (Slack), however many notifications it holds.
pub trait DigestChannel: Send + Sync {
    /// Sends `digest` once, without retrying ([`RetryPolicy::send_digest`] retries).
    fn send<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<Receipt, Error>>;
}

/// A configured channel, as the kind of send its provider takes.
#[derive(Clone)]
pub enum Channel {
    /// One message per send.
    Message(Arc<dyn MessageChannel>),
    /// One digest per run.
    Digest(Arc<dyn DigestChannel>),
}

/// The channels of a run by name.
pub type Channels = BTreeMap<String, Channel>;

/// Builds the channels named in `names` from the policy, each as the kind of channel its
/// provider is; a missing secret or unknown channel is a configuration error.
pub fn build_channels(
    spec: &SignaturePolicySpec,
    names: &[&str],
    env: EnvLookup<'_>,
    http: &reqwest::Client,
    log_out: &log::SharedWriter,
) -> Result<Channels, Error> {
    let mut channels = Channels::new();
    for name in names {
        if channels.contains_key(*name) {
            continue;
        }
        let channel = spec
            .channel(name)
            .ok_or_else(|| Error::Config(format!("no channel named {name} in spec.channels")))?;
        let path = |field: &str| format!("channel {name}: {field}");
        let built = match channel.kind() {
            Some(ChannelKind::SendGrid(c)) => Channel::Message(Arc::new(sendgrid::SendGrid::new(
                c,
                secret(
                    env,
                    &c.api_key_secret_ref,
                    &path("sendgrid.apiKeySecretRef"),
                )?,
                http.clone(),
            )?)),
            Some(ChannelKind::Smtp(c)) => {
                let credentials = match &c.credentials_secret_ref {
                    Some(creds) => Some((
                        secret(env, &creds.username(), &path("smtp.credentialsSecretRef"))?,
                        secret(env, &creds.password(), &path("smtp.credentialsSecretRef"))?,
                    )),
                    None => None,
                };
                Channel::Message(Arc::new(smtp::Smtp::new(c, credentials)?))
            }
            Some(ChannelKind::Slack(c)) => Channel::Digest(Arc::new(slack::Slack::new(
                secret(
                    env,
                    &c.webhook_url_secret_ref,
                    &path("slack.webhookUrlSecretRef"),
                )?,
                http.clone(),
            ))),
            Some(ChannelKind::Webhook(c)) => Channel::Message(Arc::new(webhook::Webhook::new(
                secret(env, &c.url_secret_ref, &path("webhook.urlSecretRef"))?,
                c.signing_secret_ref
                    .as_ref()
                    .map(|s| secret(env, s, &path("webhook.signingSecretRef")))
                    .transpose()?,
                http.clone(),
            ))),
            Some(ChannelKind::Log(_)) => {
                Channel::Message(Arc::new(log::Log::new(name, log_out.clone())))
            }
            None => {
                return Err(Error::Config(format!(
                    "channel {name} must set exactly one kind"
                )));
            }
        };
        channels.insert((*name).to_owned(), built);
    }
    Ok(channels)
}
