//! The client library: an mTLS connection to a broker as one team, signing
//! and publishing, the JSON forms of SPEC §11, and checks that trust nothing
//! the broker says: signatures against a local directory, proofs and signed
//! heads with an independent verifier, and log audits.
//!
//! The client may use [`crate::rules`] and [`crate::proto`], never `log`,
//! `broker` or `cli`: what it verifies must not share code with what it
//! checks.

pub mod audit;
pub mod connection;
pub mod draft;
pub mod verify;
