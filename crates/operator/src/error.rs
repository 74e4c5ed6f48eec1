//! The operator's error type. Each error has a category that feeds the
//! `llmd_operator_reconcile_errors_total{category}` metric and decides the retry.

use std::time::Duration;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused a child object we built (422, 403, ...).
    #[error("the API server refused {kind} {name}: {source}")]
    Refused {
        kind: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },

    /// A call to the API server failed in a way that may pass (network, 409, 5xx).
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: Box<kube::Error>,
    },

    /// A child object could not be serialised.
    #[error("cannot serialise {what}: {message}")]
    Serialize { what: &'static str, message: String },

    /// The object lacks metadata the API server always sets (namespace, uid).
    #[error("object is missing {0}")]
    MissingMetadata(&'static str),

    /// This replica's renew deadline passed: it may no longer write (the process is
    /// on its way out, and the next leader redoes the work).
    #[error("not writing: this replica no longer holds the leader lease")]
    NotLeading,
}

/// Error categories, as metric label values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// The spec passed the schema but cannot be served (counted, not retried: the
    /// reconcile reports it as Degraded and waits for a change).
    InvalidSpec,
    Refused,
    Transient,
    Internal,
}

impl Category {
    pub const ALL: [Category; 4] = [
        Self::InvalidSpec,
        Self::Refused,
        Self::Transient,
        Self::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidSpec => "invalid_spec",
            Self::Refused => "refused",
            Self::Transient => "transient",
            Self::Internal => "internal",
        }
    }
}

impl Error {
    /// Wrap an API error from `action`, telling a refusal of our object apart from a
    /// transient failure.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            action: action.into(),
            source: Box::new(source),
        }
    }

    pub fn category(&self) -> Category {
        match self {
            Self::Refused { .. } => Category::Refused,
            Self::Kube { .. } | Self::NotLeading => Category::Transient,
            Self::Serialize { .. } | Self::MissingMetadata(_) => Category::Internal,
        }
    }

    /// How long to wait before the next attempt, given how many attempts failed in a row.
    /// Refusals need a spec change to pass, so they back off to minutes quickly.
    pub fn backoff(&self, failures: u32) -> Duration {
        let (base, cap) = match self.category() {
            Category::Transient => (Duration::from_millis(500), Duration::from_secs(60)),
            Category::Refused | Category::Internal => {
                (Duration::from_secs(10), Duration::from_secs(300))
            }
            Category::InvalidSpec => (Duration::from_secs(300), Duration::from_secs(300)),
        };
        let factor = 2u32.saturating_pow(failures.min(16));
        base.saturating_mul(factor).min(cap)
    }
}

/// Status codes with which the API server refuses an object as written.
pub fn is_refusal(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if matches!(status.code, 400 | 403 | 422))
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_backoff_grows_and_is_capped() {
        let e = Error::MissingMetadata("uid");
        assert_eq!(e.category(), Category::Internal);
        let transient = Error::kube("get", kube::Error::LinesCodecMaxLineLengthExceeded);
        assert_eq!(transient.category(), Category::Transient);
        assert_eq!(transient.backoff(0), Duration::from_millis(500));
        assert_eq!(transient.backoff(1), Duration::from_secs(1));
        assert_eq!(transient.backoff(30), Duration::from_secs(60));
    }
}
