//! SendGrid v3 `mail/send`: one request per delivery, Bearer API key, the idempotency key in
//! `custom_args` (so it shows up in SendGrid's event webhooks), the `X-Message-Id` as receipt.
//! Every mail carries [`AUTOMATED_MAIL_HEADERS`] in `headers`; display names are quoted as
//! SendGrid needs ([`sendgrid_name`]).

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::{
    AUTOMATED_MAIL_HEADERS, Error, Message, MessageChannel, Receipt, display_name, send_http,
    split_mailbox,
};
use crate::constants::SENDGRID_DEFAULT_ENDPOINT;
use crate::crd::SendGridChannel;

/// A SendGrid channel.
pub struct SendGrid {
    endpoint: String,
    api_key: String,
    from: (Option<String>, String),
    reply_to: Option<(Option<String>, String)>,
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
            reply_to: channel.reply_to.as_deref().map(split_mailbox),
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
                        .then(|| message.signer_name.as_deref().map(display_name))
                        .flatten()
                });
                Ok(email_object(name.as_deref(), &email))
            })
            .collect::<Result<_, Error>>()?;
        if to.is_empty() {
            return Err(Error::Config(
                "an alert through SendGrid needs the channel's `to` list".into(),
            ));
        }
        let headers: serde_json::Map<String, Value> = AUTOMATED_MAIL_HEADERS
            .iter()
            .map(|(name, value)| ((*name).to_owned(), json!(value)))
            .collect();
        let mut body = json!({
            "personalizations": [{"to": to}],
            "from": email_object(self.from.0.as_deref(), &self.from.1),
            "headers": headers,
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
        });
        if let Some((name, email)) = &self.reply_to {
            body["reply_to"] = email_object(name.as_deref(), email);
        }
        Ok(body)
    }
}

/// SendGrid's email object: `{"email"}`, or `{"email", "name"}` with the name quoted as
/// [`sendgrid_name`] does.
fn email_object(name: Option<&str>, email: &str) -> Value {
    match name.filter(|name| !name.is_empty()) {
        Some(name) => json!({"email": email, "name": sendgrid_name(name)}),
        None => json!({"email": email}),
    }
}

/// A display name as SendGrid's `name` fields need it. SendGrid splits an unquoted name at `,`
/// and `;` (it builds a header from it), so such a name is sent as an RFC 5322 quoted-string,
/// `"` and `\` escaped, as SendGrid's own client libraries do
/// (<https://github.com/sendgrid/sendgrid-python/issues/578>); other names go as they are.
pub fn sendgrid_name(name: &str) -> String {
    if !name.contains([',', ';']) {
        return name.to_owned();
    }
    let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
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

#[cfg(test)]
mod tests {
    use super::sendgrid_name;

    #[test]
    fn names_with_separators_are_quoted() {
        assert_eq!(sendgrid_name("Enrollment"), "Enrollment");
        assert_eq!(sendgrid_name("O\"Brien"), "O\"Brien");
        assert_eq!(sendgrid_name("O\"Brien, Pat"), r#""O\"Brien, Pat""#);
        assert_eq!(sendgrid_name(r"a\b; c"), r#""a\\b; c""#);
    }
}
