//! A C2SP tlog-witness (`certex witness serve`): an HTTP service that
//! cosigns a transparency log's checkpoints only after checking that each
//! one extends the last it cosigned for that log, so a log that shows
//! different histories to different members is caught by any member who
//! checks the witnesses' cosignatures. It follows any log that signs C2SP
//! checkpoints (the broker's among them), trusting only the log keys it is
//! given, and keeps one latest checkpoint per origin on disk.
//!
//! The wing sits beside `client` and uses only `client` (the independent
//! consistency-proof verifier) and `rules` (signed notes, checkpoints,
//! cosignatures). `server` → (`request`, `state`): `request` parses a body
//! with no state, `state` is the durable per-origin memory, `server` holds
//! the checks, the lock that makes check-and-persist atomic, the HTTP
//! routes and the HTTP/1.1 server with its connection and header-time
//! limits.

pub mod request;
pub mod server;
pub mod state;
