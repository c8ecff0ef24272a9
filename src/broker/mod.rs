//! The running broker: TLS with per-country anchors, the gRPC services of
//! SPEC §9 over authenticated connections, the publish checks, the read paths
//! (get, subscriptions, case views, proofs), server reflection for generic
//! tools, configuration and lifecycle, the limits that keep one member
//! from hurting the others (SPEC §15: `admission`, `limits`, `transport`),
//! and the operator's metrics (`metrics`, `metrics_http`).
//!
//! [`transport`] is the only module that touches rustls. The broker may use
//! [`crate::log`], [`crate::rules`], [`crate::proto`] and [`crate::error`],
//! never `client` or `cli`.

pub mod admission;
pub mod case_views;
pub mod checkpoint;
pub mod config;
pub mod limits;
pub mod metrics;
pub mod metrics_http;
pub mod outgoing;
pub mod peering;
pub mod publish;
pub mod publish_stream;
pub mod read;
pub mod recent;
pub mod reflection;
pub mod server;
pub mod services;
pub mod state;
pub mod subscribe;
pub mod taxii;
pub mod transparency;
pub mod transport;
pub mod verifier;
pub mod witness_push;
