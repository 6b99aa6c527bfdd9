//! SMTP submission with lettre's pooled async transport: `starttls` (required), `tls` (implicit)
//! or `none`; credentials from the Secret's environment variables; EHLO with `helloName`, else
//! the sender's domain. The Message-ID is derived from the idempotency key, so a repeated
//! delivery carries the same id; every mail is marked automated ([`AUTOMATED_MAIL_HEADERS`]).

use std::time::Duration;

use futures::future::BoxFuture;
use lettre::Address;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{
    AUTOMATED_MAIL_HEADERS, Error, Message, MessageChannel, Receipt, display_name, split_mailbox,
};
use crate::crd::{SmtpChannel, SmtpSecurity};

/// An SMTP channel.
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    reply_to: Option<Mailbox>,
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
        let from = config_mailbox(&channel.from, "from")?;
        let reply_to = channel
            .reply_to
            .as_deref()
            .map(|mailbox| config_mailbox(mailbox, "replyTo"))
            .transpose()?;
        let hello = channel
            .hello_name
            .clone()
            .unwrap_or_else(|| from.email.domain().to_owned());
        let hello = match hello.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => ClientId::Ipv4(ip),
            Ok(std::net::IpAddr::V6(ip)) => ClientId::Ipv6(ip),
            Err(_) => ClientId::Domain(hello),
        };
        let mut builder = builder
            .port(port)
            .hello_name(hello)
            .timeout(Some(Duration::from_secs(30)))
            .pool_config(PoolConfig::new().max_size(4));
        if let Some((user, password)) = credentials {
            builder = builder.credentials(Credentials::new(user, password));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            reply_to,
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
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        for (name, value) in AUTOMATED_MAIL_HEADERS {
            builder = builder.raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str(name),
                value.to_owned(),
            ));
        }
        for to in recipients {
            let (name, address) = split_mailbox(&to);
            let name = name.or_else(|| {
                message
                    .kind
                    .is_for_signer()
                    .then(|| message.signer_name.as_deref().map(display_name))
                    .flatten()
                    .filter(|name| !name.is_empty())
            });
            let address: Address = address.parse().map_err(|e| Error::Rejected {
                status: None,
                message: format!("{to:?} is not an email address: {e}"),
            })?;
            // lettre quotes or encodes the name as the header needs (`"O\"Brien, Pat"`).
            builder = builder.to(Mailbox::new(name, address));
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

/// A mailbox from the channel's configuration (`from`, `replyTo`), its name as written.
fn config_mailbox(mailbox: &str, field: &str) -> Result<Mailbox, Error> {
    let (name, address) = split_mailbox(mailbox);
    let address = address
        .parse()
        .map_err(|e| Error::Config(format!("SMTP {field} {mailbox:?}: {e}")))?;
    Ok(Mailbox::new(name, address))
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
