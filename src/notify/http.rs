//! The HTTP plumbing every HTTP channel shares: one `reqwest::Client` with connect and total
//! timeouts, a send that classifies non-2xx answers as [`Error`]s, and `Retry-After` parsing.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Error;

/// Parses a `Retry-After` header: delay-seconds or an HTTP-date (relative to `now`).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// The `Retry-After` of a response, if any.
pub fn retry_after_header(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
    parse_retry_after(value.to_str().ok()?, Utc::now())
}

/// Sends `request`; a 2xx response is returned, anything else classified as an [`Error`].
pub async fn send_http(request: reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
    let response = request.send().await.map_err(Error::from_reqwest)?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = retry_after_header(&response);
    let body = response.text().await.unwrap_or_default();
    Err(Error::from_status(status.as_u16(), retry_after, &body))
}

/// Timeouts of the shared HTTP client.
#[derive(Clone, Copy, Debug)]
pub struct HttpTimeouts {
    /// Establishing a connection.
    pub connect: Duration,
    /// A whole request, response included.
    pub total: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            total: Duration::from_secs(30),
        }
    }
}

/// The one HTTP client every HTTP channel shares. Installs the ring crypto provider for rustls
/// if none is installed yet.
pub fn http_client(timeouts: HttpTimeouts) -> Result<reqwest::Client, Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.total)
        .user_agent(concat!("signet/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_and_as_an_http_date() {
        let now = DateTime::parse_from_rfc3339("2026-03-29T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 29 Mar 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 29 Mar 2026 09:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
