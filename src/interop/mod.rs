//! Interoperability with the CTI ecosystem (SPEC §14): the one mapping of
//! certex records to STIX 2.1 objects (used by `certex export` and by the
//! broker's TAXII 2.1 API), and the import of STIX bundles from MISP or
//! OpenCTI into certex drafts. Pure translation: no network, no storage;
//! the access rules stay where every read path applies them.

pub mod import;
pub mod markings;
pub mod stix;
