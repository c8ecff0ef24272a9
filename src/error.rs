//! The one error type at the gRPC boundary, and its mapping to `tonic::Status`
//! (SPEC §4). Internal errors are logged here, once, and reach the client only
//! as a generic message.

use tonic::{Code, Status};

use crate::rules::directory::KeyProblem;
use crate::rules::envelope::SignatureError;

/// Everything a broker call can be refused for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection's certificate names no team of the current directory.
    #[error("team {0} is not in the broker's directory")]
    UnknownCaller(String),
    /// A directory reload withdrew the certificate of this connection.
    #[error(
        "the certificate of this connection ({team}) is no longer accepted by the directory in force; reconnect with a valid certificate"
    )]
    Withdrawn { team: String },
    /// A broker identity called a team service (SPEC §12).
    #[error(
        "this connection is authenticated as broker {broker}: broker identities may call only the Federation service"
    )]
    BrokerCaller { broker: String },
    /// The team is homed on another broker of the federation (SPEC §12).
    #[error("team {team} is homed on broker {home} ({url}): connect to its home broker")]
    NotHomed {
        team: String,
        home: String,
        url: String,
    },
    /// The connection's certificate names a broker the directory in force
    /// does not list.
    #[error("broker {0} is not in the broker's directory")]
    UnknownBroker(String),
    /// A call only federation brokers may make, from someone else; the
    /// message says who.
    #[error("only brokers of the federation may relay: {0}")]
    NotPeer(String),
    /// `body.sender` is not the team of the TLS client certificate.
    #[error(
        "body.sender is {claimed} but this connection is authenticated as {team}: a team may only publish as itself"
    )]
    NotSender { claimed: String, team: String },
    #[error("{0}")]
    Key(#[from] KeyProblem),
    #[error("{0}")]
    Signature(#[from] SignatureError),
    /// `created_at` is outside the skew window.
    #[error(
        "field created_at: {created_at} is {skew_secs} s away from the broker clock {now}; the allowed skew is ±{window_secs} s (check the sender's clock)"
    )]
    Skew {
        created_at: String,
        now: String,
        skew_secs: i64,
        window_secs: u64,
    },
    /// Same `(sender, id)` already published with other bytes.
    #[error(
        "message {id} of {sender} already exists as record {seq} with different content; use a new id for a new message"
    )]
    AlreadyExists {
        sender: String,
        id: String,
        seq: u64,
    },
    #[error("envelope is {size} bytes, over the broker's limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// A field is missing, malformed or over its limit.
    #[error("field {field}: {problem}")]
    Invalid { field: String, problem: String },
    /// The message asks for something the current state forbids.
    #[error("{0}")]
    Precondition(String),
    #[error(
        "rate limit exceeded for team {team}: at most {per_second} messages per second (burst {burst}); retry later"
    )]
    RateLimited {
        team: String,
        per_second: u32,
        burst: u32,
    },
    #[error("team {team} already has {limit} open subscriptions; close one first")]
    TooManyStreams { team: String, limit: usize },
    /// Another of the broker's resource limits (SPEC §15); the message names it.
    #[error("{0}")]
    Limit(String),
    /// Not there, or not for this caller: the two are not distinguished.
    #[error("{0} not found")]
    NotFound(String),
    /// A request argument (not a message field) is wrong.
    #[error("{0}")]
    BadRequest(String),
    #[error("the broker is shutting down")]
    Unavailable,
    /// A broker-side failure; details are logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
    /// A relayed record its relaying broker may not hand over (SPEC §12).
    #[error("relay refused: {0}")]
    NotRelayable(String),
    /// A peer broker's answer, passed on (a case authority's refusal).
    #[error("{message}")]
    Peer { code: Code, message: String },
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The name of the field at fault, where there is one: what a refusal's
    /// log line may name (never the field's value).
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Invalid { field, .. } => Some(field),
            Error::Skew { .. } => Some("created_at"),
            Error::NotSender { .. } => Some("sender"),
            Error::Key(_) => Some("key_id"),
            Error::Signature(_) => Some("signature"),
            Error::TooLarge { .. } => Some("envelope"),
            _ => None,
        }
    }

    /// A short name of the refusal for logs: which rule refused, no values.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::UnknownCaller(_) => "unknown-caller",
            Error::Withdrawn { .. } => "certificate-withdrawn",
            Error::NotSender { .. } => "not-sender",
            Error::BrokerCaller { .. } => "broker-caller",
            Error::NotHomed { .. } => "not-homed-here",
            Error::UnknownBroker(_) => "unknown-broker",
            Error::NotPeer(_) => "not-a-peer",
            Error::Key(_) => "key",
            Error::Signature(_) => "signature",
            Error::Skew { .. } => "clock-skew",
            Error::AlreadyExists { .. } => "already-exists",
            Error::TooLarge { .. } => "too-large",
            Error::Invalid { .. } => "invalid-field",
            Error::Precondition(_) => "precondition",
            Error::RateLimited { .. } => "rate-limit",
            Error::TooManyStreams { .. } => "subscription-limit",
            Error::Limit(_) => "resource-limit",
            Error::NotFound(_) => "not-found",
            Error::BadRequest(_) => "bad-request",
            Error::Unavailable => "unavailable",
            Error::Internal(_) => "internal",
            Error::NotRelayable(_) => "not-relayable",
            Error::Peer { .. } => "peer",
        }
    }

    /// The gRPC status code of SPEC §4 for this error.
    pub fn code(&self) -> Code {
        match self {
            Error::UnknownCaller(_)
            | Error::UnknownBroker(_)
            | Error::Withdrawn { .. }
            | Error::Key(_)
            | Error::Signature(_) => Code::Unauthenticated,
            Error::NotSender { .. }
            | Error::BrokerCaller { .. }
            | Error::NotHomed { .. }
            | Error::NotPeer(_) => Code::PermissionDenied,
            Error::Skew { .. } | Error::Invalid { .. } | Error::BadRequest(_) => {
                Code::InvalidArgument
            }
            Error::AlreadyExists { .. } => Code::AlreadyExists,
            Error::TooLarge { .. }
            | Error::RateLimited { .. }
            | Error::TooManyStreams { .. }
            | Error::Limit(_) => Code::ResourceExhausted,
            Error::Precondition(_) => Code::FailedPrecondition,
            Error::NotFound(_) => Code::NotFound,
            Error::Unavailable => Code::Unavailable,
            Error::Internal(_) => Code::Internal,
            Error::NotRelayable(_) => Code::PermissionDenied,
            Error::Peer { code, .. } => *code,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        if let Error::Internal(detail) = &e {
            tracing::error!(error = %detail, "internal error");
            return Status::internal(
                "internal broker error; the operator can find it in the broker log",
            );
        }
        Status::new(e.code(), e.to_string())
    }
}
