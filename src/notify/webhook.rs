//! Webhooks: one JSON event per delivery, with `X-Signet-Idempotency-Key` and, when a signing key
//! is configured, `X-Signet-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.

use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::{Error, Message, MessageChannel, Receipt, send_http};

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Signet-Signature";
/// Header carrying the idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "X-Signet-Idempotency-Key";

/// A webhook channel.
pub struct Webhook {
    url: String,
    signing_key: Option<String>,
    http: reqwest::Client,
}

impl Webhook {
    /// Posts to `url`, signing with `signing_key` when given.
    pub fn new(url: String, signing_key: Option<String>, http: reqwest::Client) -> Self {
        Self {
            url,
            signing_key,
            http,
        }
    }

    /// The event body for one message.
    pub fn body(message: &Message) -> Vec<u8> {
        let event = json!({
            "type": format!("signet.{}", message.kind.as_str()),
            "id": message.idempotency_key,
            "data": message,
        });
        serde_json::to_vec(&event).expect("events serialize")
    }
}

/// The `X-Signet-Signature` value for `body` at unix time `timestamp`.
pub fn signature(key: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

impl MessageChannel for Webhook {
    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<Receipt, Error>> {
        Box::pin(async move {
            let body = Self::body(message);
            let mut request = self
                .http
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(IDEMPOTENCY_HEADER, &message.idempotency_key);
            if let Some(key) = &self.signing_key {
                request = request.header(
                    SIGNATURE_HEADER,
                    signature(key, chrono::Utc::now().timestamp(), &body),
                );
            }
            send_http(request.body(body)).await?;
            Ok(Receipt::default())
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Reference value from: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            super::signature("secret", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }
}
