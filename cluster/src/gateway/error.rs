//! What can go wrong talking to etcd, with the endpoint and call named.

use std::fmt;

use super::{GrpcCode, LeaseId};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no etcd endpoints to ask for {path}: configure [etcd] endpoints")]
    NoEndpoints { path: &'static str },
    #[error(
        "no etcd endpoint answered {path}: {}; check that etcd runs and the addresses are right",
        join(attempts)
    )]
    Unreachable {
        path: &'static str,
        /// One per endpoint tried.
        attempts: Vec<Attempt>,
    },
    #[error("etcd at {endpoint} refused {path}: {message} ({code:?})")]
    Etcd {
        endpoint: String,
        path: &'static str,
        code: GrpcCode,
        message: String,
    },
    #[error("etcd at {endpoint} answered {path} with something unexpected: {problem}")]
    Decode {
        endpoint: String,
        path: &'static str,
        problem: String,
    },
    #[error("lease {lease} is gone (expired or revoked) according to etcd at {endpoint}; grant a new one")]
    LeaseGone { lease: LeaseId, endpoint: String },
    #[error("etcd at {endpoint} canceled the watch of {key:?}: {reason}")]
    WatchCanceled {
        endpoint: String,
        key: String,
        reason: String,
    },
}

/// Why one endpoint did not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub endpoint: String,
    pub problem: String,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.endpoint, self.problem)
    }
}

fn join(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(Attempt::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// Just the cause, without the endpoint and call: for one line per
    /// member, e.g. "connection refused".
    pub fn cause(&self) -> String {
        match self {
            Error::Unreachable { attempts, .. } => attempts
                .iter()
                .map(|a| a.problem.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            Error::Etcd { message, .. } => message.clone(),
            Error::Decode { problem, .. } => problem.clone(),
            other => other.to_string(),
        }
    }
}

/// A transport failure in a few words ("connection refused", "timed out").
pub(super) fn describe_transport(transport: &ureq::Transport) -> String {
    use std::error::Error as _;
    use std::io::ErrorKind;
    let mut source = transport.source();
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                ErrorKind::ConnectionRefused => "connection refused".to_string(),
                ErrorKind::TimedOut | ErrorKind::WouldBlock => "timed out".to_string(),
                ErrorKind::ConnectionReset => "connection reset".to_string(),
                _ => io.to_string(),
            };
        }
        source = error.source();
    }
    match transport.message() {
        Some(message) => format!("{}: {message}", transport.kind()),
        None => transport.kind().to_string(),
    }
}

/// etcd's "requested lease not found" as the typed `LeaseGone`.
pub(super) fn lease_gone(error: Error, lease: LeaseId) -> Error {
    match error {
        Error::Etcd {
            endpoint,
            code: GrpcCode::NotFound,
            message,
            ..
        } if message.contains("lease not found") => Error::LeaseGone { lease, endpoint },
        other => other,
    }
}

pub(super) fn leased_error(error: Error, lease: Option<LeaseId>) -> Error {
    match lease {
        Some(lease) => lease_gone(error, lease),
        None => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_not_found_becomes_lease_gone() {
        let error = Error::Etcd {
            endpoint: "http://e".into(),
            path: "/v3/lease/revoke",
            code: GrpcCode::NotFound,
            message: "etcdserver: requested lease not found".into(),
        };
        assert!(matches!(
            lease_gone(error, LeaseId(1)),
            Error::LeaseGone {
                lease: LeaseId(1),
                ..
            }
        ));
    }
}
