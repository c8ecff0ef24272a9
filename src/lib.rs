//! certex: a gRPC broker through which national CERT teams exchange signed
//! incident reports, early warnings and case-assistance requests, with a
//! verifiable transparency log over everything accepted.
//!
//! # Layout
//!
//! The crate is grouped in wings by responsibility; dependencies point down
//! (`cli` → `broker`/`client` → `log`/`rules`), and no two files import each
//! other, directly or through a loop (`tests/layout.rs` checks it).
//! `ARCHITECTURE.md` walks a publish and a subscription through the wings and
//! maps every SPEC section to its module.
//!
//! - [`rules`]: pure rules with no network and no database: the envelope
//!   signing rule, the vocabulary, field validation, who reads what, the case
//!   state machine, the directory model.
//! - [`log`]: the durable log: storage (the only sled and data-file user), the
//!   single writer with group commit, the Merkle math.
//! - [`broker`]: the running server: transport (the only rustls user), the
//!   gRPC services, publishing, reads, subscriptions, case views,
//!   transparency serving, configuration and lifecycle.
//! - [`client`]: the client library: connection, signing and publishing, the
//!   JSON forms of SPEC §11, the independent verifier and log audits.
//! - [`drill`]: tabletop drills (SPEC §13): scenario files, the control cell,
//!   the automated participant, scoring and the after-action report; built
//!   on the client library like any member's tool.
//! - [`witness`]: a C2SP tlog-witness (`certex witness serve`) that cosigns
//!   a log's checkpoints once each is proven to extend the last; built on
//!   the client's verifier and the signed-note rules.
//! - [`federation`]: sovereign brokers relaying to each other (SPEC §12):
//!   where a record must go, what may leave for each peer, the checks a
//!   relayed record passes, and the per-peer relay tasks.
//! - [`interop`]: STIX 2.1 and TAXII 2.1 (SPEC §14): the one mapping of
//!   records to STIX objects and the import of STIX bundles into drafts.
//! - [`cli`]: the `certex` command: argument definitions and one function per
//!   command, the demo, the benchmarks and the development PKI.
//! - [`error`]: the one error type of the broker and its gRPC status mapping.
//! - [`proto`]: the generated `certex.v1` API.
#![forbid(unsafe_code)]

pub mod broker;
pub mod cli;
pub mod client;
pub mod drill;
pub mod error;
pub mod federation;
pub mod interop;
pub mod log;
pub mod rules;
pub mod witness;

/// The `certex.v1` API, generated from `proto/certex/v1`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("certex.v1");
}
