//! SMTP submission with lettre's pooled async transport: `starttls` (required), `tls` (implicit)
//! or `none`; credentials from the Secret's environment variables. The Message-ID is derived from
//! the idempotency key, so a repeated delivery carries the same id.

use std::time::Duration;

use futures::future::BoxFuture;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{Error, Message, MessageChannel, Receipt};
use crate::crd::{SmtpChannel, SmtpSecurity};

/// An SMTP channel.
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    alert_to: Vec<String>,
}

impl Smtp {
    /// The channel as the policy configures it; `credentials` are user name and password.
    pub fn new(
        channel: &SmtpChannel,
        credentials: Option<(String, String)>,
    ) -> Result<Self, Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = u16::try_from(channel.port)
            .map_err(|_| Error::Config(format!("SMTP port {} is out of range", channel.port)))?;
        let builder = match channel.security {
            SmtpSecurity::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&channel.host)
            }
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&channel.host),
            SmtpSecurity::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                channel.host.as_str(),
            )),
        }
        .map_err(|e| Error::Config(format!("SMTP host {:?}: {e}", channel.host)))?;
        let mut builder = builder
            .port(port)
            .timeout(Some(Duration::from_secs(30)))
            .pool_config(PoolConfig::new().max_size(4));
        if let Some((user, password)) = credentials {
            builder = builder.credentials(Credentials::new(user, password));
        }
        Ok(Self {
            transport: builder.build(),
            from: channel
                .from
                .parse()
                .map_err(|e| Error::Config(format!("SMTP from {:?}: {e}", channel.from)))?,
            alert_to: channel.to.clone(),
        })
    }

    fn email(&self, message: &Message) -> Result<lettre::Message, Error> {
        let recipients = message.email_recipients(&self.alert_to);
        if recipients.is_empty() {
            return Err(Error::Config(
                "an alert through SMTP needs the channel's `to` list".into(),
            ));
        }
        let domain = self.from.email.domain().to_owned();
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .subject(message.content.subject.clone())
            .message_id(Some(format!(
                "<{}@{domain}>",
                message.idempotency_key.replace(':', ".")
            )));
        for to in recipients {
            let mailbox: Mailbox = match (&message.signer_name, message.kind.is_for_signer()) {
                (Some(name), true) => format!("{name} <{to}>").parse().or_else(|_| to.parse()),
                _ => to.parse(),
            }
            .map_err(|e| Error::Rejected {
                status: None,
                message: format!("{to:?} is not an email address: {e}"),
            })?;
            builder = builder.to(mailbox);
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                message.content.text.clone(),
                message.content.html.clone(),
            ))
            .map_err(|e| Error::Rejected {
                status: None,
                message: format!("cannot build the email: {e}"),
            })
    }
}

impl MessageChannel for Smtp {
    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<Receipt, Error>> {
        Box::pin(async move {
            let email = self.email(message)?;
            match self.transport.send(email).await {
                Ok(response) => Ok(Receipt {
                    provider_message_id: response.first_line().map(str::to_owned),
                }),
                Err(err) => Err(classify(&err)),
            }
        })
    }
}

fn classify(err: &lettre::transport::smtp::Error) -> Error {
    let status = err.status().and_then(|code| code.to_string().parse().ok());
    if err.is_permanent() {
        Error::Rejected {
            status,
            message: err.to_string(),
        }
    } else if err.is_timeout() {
        Error::Timeout
    } else if err.is_transient() {
        Error::Unavailable {
            status,
            message: err.to_string(),
            retry_after: None,
        }
    } else {
        Error::Network(err.to_string())
    }
}
