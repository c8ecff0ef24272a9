//! Federation of sovereign brokers (SPEC §12): every team has a home
//! broker and connects only to it; a record with readers homed on a peer is
//! relayed there as the exact signed envelope. This wing holds the rules of
//! where a record may and must go (`route`, pure). Relay, the peer
//! protocol and the egress policy build on it.

pub mod egress;
pub mod route;
