//! SendGrid v3 `mail/send`: one request per delivery, Bearer API key, the idempotency key in
//! `custom_args` (so it shows up in SendGrid's event webhooks), the `X-Message-Id` as receipt.

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::{Error, Message, MessageChannel, Receipt, send_http, split_mailbox};
use crate::constants::SENDGRID_DEFAULT_ENDPOINT;
use crate::crd::SendGridChannel;

/// A SendGrid channel.
pub struct SendGrid {
    endpoint: String,
    api_key: String,
    from: (Option<String>, String),
    alert_to: Vec<String>,
    http: reqwest::Client,
}

impl SendGrid {
    /// The channel as the policy configures it, with its API key.
    pub fn new(
        channel: &SendGridChannel,
        api_key: String,
        http: reqwest::Client,
    ) -> Result<Self, Error> {
        Ok(Self {
            endpoint: channel
                .endpoint
                .clone()
                .unwrap_or_else(|| SENDGRID_DEFAULT_ENDPOINT.to_owned()),
            api_key,
            from: split_mailbox(&channel.from),
            alert_to: channel.to.clone(),
            http,
        })
    }

    /// The request body for one message.
    pub fn body(&self, message: &Message) -> Result<Value, Error> {
        let to: Vec<Value> = message
            .email_recipients(&self.alert_to)
            .iter()
            .map(|mailbox| {
                let (name, email) = split_mailbox(mailbox);
                // A bad address in a row fails that delivery here, with a reason, rather than
                // costing an API call that SendGrid refuses with a 400.
                email
                    .parse::<lettre::Address>()
                    .map_err(|e| Error::Rejected {
                        status: None,
                        message: format!("{email:?} is not an email address: {e}"),
                    })?;
                let name = name.or_else(|| {
                    (message.kind.is_for_signer())
                        .then(|| message.signer_name.clone())
                        .flatten()
                });
                Ok(match name {
                    Some(name) => json!({"email": email, "name": name}),
                    None => json!({"email": email}),
                })
            })
            .collect::<Result<_, Error>>()?;
        if to.is_empty() {
            return Err(Error::Config(
                "an alert through SendGrid needs the channel's `to` list".into(),
            ));
        }
        let mut from = json!({"email": self.from.1});
        if let Some(name) = &self.from.0 {
            from["name"] = json!(name);
        }
        Ok(json!({
            "personalizations": [{"to": to}],
            "from": from,
            "subject": message.content.subject,
            "content": [
                {"type": "text/plain", "value": message.content.text},
                {"type": "text/html", "value": message.content.html},
            ],
            "custom_args": {
                "signet_idempotency_key": message.idempotency_key,
                "signet_workflow_id": message.workflow_id.to_string(),
                "signet_kind": message.kind.as_str(),
            },
        }))
    }
}

impl MessageChannel for SendGrid {
    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<Receipt, Error>> {
        Box::pin(async move {
            let request = self
                .http
                .post(&self.endpoint)
                .bearer_auth(&self.api_key)
                .json(&self.body(message)?);
            let response = send_http(request).await?;
            let id = response
                .headers()
                .get("x-message-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Ok(Receipt {
                provider_message_id: id,
            })
        })
    }
}
