//! certex: a gRPC broker through which national CERT teams exchange signed
//! incident reports, early warnings and case-assistance requests, with a
//! verifiable transparency log over everything accepted.
//!
//! # Layout
//!
//! - [`transport`]: TLS 1.3 with per-country client anchors; the only rustls user.
//! - [`directory`]: teams, anchors, signing keys, sharing groups (`directory.toml`).
//! - [`envelope`]: the signing rule and key ids (SPEC §3).
//! - [`validate`]: field rules of a message body (SPEC §3–§5).
//! - [`access`]: who may read what (SPEC §5), for every read path.
//! - [`cases`]: the assistance-case state machine (SPEC §6); [`case_views`]:
//!   cases as their parties read them (`Cases` service).
//! - [`storage`]: the data directory: record and Merkle-node files plus the
//!   sled indexes; the only module that touches sled or those files.
//! - [`log`]: the single writer: group commit, seqs, Merkle append, tree heads.
//! - [`merkle`]: RFC 6962 tree math for the server; [`verify`]: independent
//!   client-side proof and tree-head verification.
//! - [`transparency`]: serving proofs from storage.
//! - [`subscribe`]: live, resumable subscriptions over the log.
//! - [`server`]: the gRPC services and the broker's lifecycle.
//! - [`error`]: the one error type and its gRPC status mapping.
//! - [`client`], [`draft`]: the client library and the JSON forms of SPEC §11.
//! - [`pki`]: the development PKI; [`cli`], [`demo`], [`bench`]: the `certex` command.
#![forbid(unsafe_code)]

pub mod access;
pub mod bench;
pub mod case_views;
pub mod cases;
pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod directory;
pub mod draft;
pub mod envelope;
pub mod error;
pub mod log;
pub mod merkle;
pub mod pki;
pub mod server;
pub mod storage;
pub mod subscribe;
pub mod transparency;
pub mod transport;
pub mod validate;
pub mod verify;
pub mod vocab;

/// The `certex.v1` API, generated from `proto/certex/v1`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("certex.v1");
}
