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

    /// Whether retrying without a spec change could help.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Error::MissingMetadata(_))
    }
}
