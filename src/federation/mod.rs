//! Federation of sovereign brokers (SPEC §12): every team has a home
//! broker and connects only to it; a record with readers homed on a peer is
//! relayed there as the exact signed envelope. Where a record may and must
//! go (`route`, pure), what may leave for each peer (`egress`, pure), the
//! checks a relayed record passes before it is stored (`receive`), and the
//! per-peer relay tasks with their durable positions (`relay`). The broker
//! serves the peer protocol (`Federation` gRPC service) on top of these.

pub mod egress;
pub mod receive;
pub mod relay;
pub mod route;
