//! The durable log (SPEC §7–§8): the data directory, the single writer that
//! checks log-dependent rules and commits groups of records with one device
//! sync, and the RFC 6962 Merkle math over the records.
//!
//! [`storage`] is the only module that touches sled or the record and node
//! files. The log may use [`crate::rules`], [`crate::proto`] and
//! [`crate::error`]; it never knows about connections, clients or the CLI.

pub mod merkle;
pub mod storage;
pub mod writer;
