//! `controller::Error`: what can go wrong in a reconcile, split into permanent (waits for a spec
//! change) and transient (retried with backoff). `reason()` is a stable label for metrics.

/// A reconcile failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a request.
    #[error("{action} failed: {source}")]
    Api {
        /// What was being done, e.g. `apply CronJob enrollment/x-reminders`.
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The object has no namespace or name (never true of a real SignaturePolicy).
    #[error("the object has no {0}")]
    MissingMetadata(&'static str),
}

impl Error {
    /// Wraps a client error with what was being done.
    pub fn api(action: impl Into<String>, source: kube::Error) -> Self {
        Error::Api {
            action: action.into(),
            source,
        }
    }

    /// Stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Api {
                source: kube::Error::Api(status),
                ..
            } => match status.code {
                409 => "Conflict",
                429 => "TooManyRequests",
                403 => "Forbidden",
                404 => "NotFound",
                422 => "Invalid",
                code if code >= 500 => "ServerError",
                _ => "ApiError",
            },
            Error::Api { .. } => "ConnectionError",
            Error::MissingMetadata(_) => "MissingMetadata",
        }
    }

    /// How long the API server asked to wait before a retry (`Retry-After`, which it also puts
    /// in the Status body as `details.retryAfterSeconds`, on 429 and some 5xx), if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::Api {
                source: kube::Error::Api(status),
                ..
            } => status
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|&seconds| seconds > 0)
                .map(|seconds| std::time::Duration::from_secs(seconds.into())),
            _ => None,
        }
    }

    /// Whether retrying without a spec change could help.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Error::MissingMetadata(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn api_error(status: serde_json::Value) -> Error {
        Error::api(
            "apply",
            kube::Error::Api(serde_json::from_value(status).unwrap()),
        )
    }

    #[test]
    fn retry_after_comes_from_the_status_details() {
        let limited = api_error(serde_json::json!({
            "code": 429, "reason": "TooManyRequests", "message": "slow down",
            "details": {"retryAfterSeconds": 7}
        }));
        assert_eq!(limited.reason(), "TooManyRequests");
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(7)));
        let bare = api_error(serde_json::json!({"code": 503, "reason": "", "message": ""}));
        assert_eq!(bare.retry_after(), None);
        let zero = api_error(serde_json::json!({
            "code": 429, "reason": "", "message": "", "details": {"retryAfterSeconds": 0}
        }));
        assert_eq!(zero.retry_after(), None);
        assert_eq!(Error::MissingMetadata("name").retry_after(), None);
    }
}
