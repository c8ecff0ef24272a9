//! Pure rules: what a message must be, who may read it and how a case may
//! move, as plain functions with their unit tests beside them.
//!
//! Nothing here opens a socket, touches the database or keeps state between
//! calls; the only I/O is reading the two files these rules define (the
//! directory file and Ed25519 key files) through thin `load`/`read`
//! functions. Rules may use [`crate::proto`] and [`crate::error`] and each
//! other, never `log`, `broker`, `client` or `cli`.

pub mod access;
pub mod canonical;
pub mod cases;
pub mod directory;
pub mod envelope;
pub mod note;
pub mod policy;
pub mod signature;
pub mod time;
pub mod validate;
pub mod vocab;
