//! Notification channels: each names exactly one kind (SendGrid, SMTP, Slack, webhook, log) and
//! refers to its secrets by reference only; secret values never appear in a policy.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A named way to deliver notifications. Exactly one kind is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.sendgrid), has(self.smtp), has(self.slack), has(self.webhook), has(self.log)].filter(k, k).size() == 1",
    "message": "a channel must set exactly one of sendgrid, smtp, slack, webhook or log",
}]))]
pub struct Channel {
    /// Name other sections use to refer to this channel (a DNS label).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Email through SendGrid's v3 API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sendgrid: Option<SendGridChannel>,

    /// Email through an SMTP server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpChannel>,

    /// One digest message per run to a Slack incoming webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackChannel>,

    /// One signed JSON event per workflow to an HTTPS endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookChannel>,

    /// One line per notification on the worker's standard output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogChannel>,
}

/// The kind of a channel, borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum ChannelKind<'a> {
    SendGrid(&'a SendGridChannel),
    Smtp(&'a SmtpChannel),
    Slack(&'a SlackChannel),
    Webhook(&'a WebhookChannel),
    Log(&'a LogChannel),
}

impl Channel {
    /// Every kind this channel sets; a valid channel sets exactly one.
    pub fn kinds(&self) -> Vec<ChannelKind<'_>> {
        let mut kinds = Vec::with_capacity(1);
        kinds.extend(self.sendgrid.as_ref().map(ChannelKind::SendGrid));
        kinds.extend(self.smtp.as_ref().map(ChannelKind::Smtp));
        kinds.extend(self.slack.as_ref().map(ChannelKind::Slack));
        kinds.extend(self.webhook.as_ref().map(ChannelKind::Webhook));
        kinds.extend(self.log.as_ref().map(ChannelKind::Log));
        kinds
    }

    /// The channel's kind when exactly one is set.
    pub fn kind(&self) -> Option<ChannelKind<'_>> {
        match self.kinds().as_slice() {
            [only] => Some(*only),
            _ => None,
        }
    }

    /// The email addresses an alert goes to, for email channels (`None` for other kinds).
    pub fn alert_recipients(&self) -> Option<&[String]> {
        match self.kind()? {
            ChannelKind::SendGrid(c) => Some(&c.to),
            ChannelKind::Smtp(c) => Some(&c.to),
            _ => None,
        }
    }

    /// Secrets this channel refers to, with their field path relative to the channel.
    pub fn secret_refs(&self) -> Vec<(&'static str, SecretKeyRef)> {
        let mut refs = Vec::new();
        if let Some(c) = &self.sendgrid {
            refs.push(("sendgrid.apiKeySecretRef", c.api_key_secret_ref.clone()));
        }
        if let Some(creds) = self
            .smtp
            .as_ref()
            .and_then(|c| c.credentials_secret_ref.as_ref())
        {
            refs.push(("smtp.credentialsSecretRef", creds.username()));
            refs.push(("smtp.credentialsSecretRef", creds.password()));
        }
        if let Some(c) = &self.slack {
            refs.push((
                "slack.webhookUrlSecretRef",
                c.webhook_url_secret_ref.clone(),
            ));
        }
        if let Some(c) = &self.webhook {
            refs.push(("webhook.urlSecretRef", c.url_secret_ref.clone()));
            if let Some(signing) = &c.signing_secret_ref {
                refs.push(("webhook.signingSecretRef", signing.clone()));
            }
        }
        refs
    }
}

/// A key of a Secret in the policy's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,

    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// SendGrid v3 `mail/send`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendGridChannel {
    /// Secret key holding the SendGrid API key.
    pub api_key_secret_ref: SecretKeyRef,

    /// Sender, `Name <address>` or `address`.
    #[schemars(length(min = 3, max = 320))]
    pub from: String,

    /// Recipients of alerts (timeouts, escalations); reminders go to each signer instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 50), inner(length(min = 3, max = 320)))]
    pub to: Vec<String>,

    /// Where replies go, `Name <address>` or `address`; absent: to `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 320))]
    pub reply_to: Option<String>,

    /// API endpoint, `https://` (plain `http://` only on a loopback address); default
    /// `https://api.sendgrid.com/v3/mail/send` (use the EU host for EU accounts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 2048))]
    pub endpoint: Option<String>,
}

/// Plain SMTP submission.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmtpChannel {
    /// Server host name.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,

    /// Server port.
    #[serde(default = "default_smtp_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// `starttls` (upgrade, required), `tls` (implicit TLS, usually port 465) or `none` (trusted networks only).
    #[serde(default)]
    pub security: SmtpSecurity,

    /// Secret with the SMTP user name and password; absent: no authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SmtpCredentialsRef>,

    /// Sender, `Name <address>` or `address`.
    #[schemars(length(min = 3, max = 320))]
    pub from: String,

    /// Recipients of alerts (timeouts, escalations); reminders go to each signer instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 50), inner(length(min = 3, max = 320)))]
    pub to: Vec<String>,

    /// Where replies go, `Name <address>` or `address`; absent: to `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 320))]
    pub reply_to: Option<String>,

    /// The name Signet gives itself in EHLO; default the domain of `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub hello_name: Option<String>,
}

const fn default_smtp_port() -> i32 {
    587
}

/// How the SMTP connection is secured.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS; refused if the server does not offer it.
    #[default]
    Starttls,
    /// TLS from the first byte.
    Tls,
    /// No encryption at all.
    None,
}

/// A Secret holding SMTP credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmtpCredentialsRef {
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,

    /// Key holding the user name.
    #[serde(default = "default_username_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub username_key: String,

    /// Key holding the password.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub password_key: String,
}

fn default_username_key() -> String {
    "username".to_owned()
}
fn default_password_key() -> String {
    "password".to_owned()
}

impl SmtpCredentialsRef {
    /// The user name as a secret key reference.
    pub fn username(&self) -> SecretKeyRef {
        SecretKeyRef {
            name: self.name.clone(),
            key: self.username_key.clone(),
        }
    }

    /// The password as a secret key reference.
    pub fn password(&self) -> SecretKeyRef {
        SecretKeyRef {
            name: self.name.clone(),
            key: self.password_key.clone(),
        }
    }
}

/// A Slack incoming webhook.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlackChannel {
    /// Secret key holding the webhook URL.
    pub webhook_url_secret_ref: SecretKeyRef,
}

/// A generic HTTPS webhook.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookChannel {
    /// Secret key holding the URL events are posted to.
    pub url_secret_ref: SecretKeyRef,

    /// Secret key holding the HMAC-SHA256 key for the `X-Signet-Signature` header; absent: unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret_ref: Option<SecretKeyRef>,
}

/// Prints notifications on the worker's standard output; for trials and audits.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct LogChannel {}

impl SecretKeyRef {
    /// The environment variable a worker reads this secret from: `SIGNET_SECRET_<NAME>_<KEY>`,
    /// upper-cased, every character outside `A-Z` and `0-9` replaced by `_`.
    pub fn env_var(&self) -> String {
        let mut var = String::from(crate::constants::SECRET_ENV_PREFIX);
        let sanitize = |s: &str| {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        };
        var.push_str(&sanitize(&self.name));
        var.push('_');
        var.push_str(&sanitize(&self.key));
        var
    }
}
