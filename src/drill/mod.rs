//! Tabletop cooperation drills (SPEC §13): the scenario file, the control
//! cell that plays its injects and scores the answers (`certex drill run`),
//! the automated participant (`certex drill respond`), and the after-action
//! report as data and as Markdown and self-contained HTML.
//!
//! A drill is ordinary certex traffic under an exercise id: everything here
//! goes through the client library with real identities and signatures, and
//! the broker keeps it apart from real-world traffic (SPEC §5). The drill
//! wing sits beside `client` and uses only `client` and `rules`.

pub mod control;
pub mod matching;
pub mod render;
pub mod report;
pub mod respond;
pub mod scenario;
