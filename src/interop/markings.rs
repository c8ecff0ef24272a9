//! The fixed identifiers of the STIX world certex speaks: the official
//! TLP 2.0 and TLP 1.0 marking definitions, the extension definitions of
//! the OASIS incident suite, and the UUID namespaces certex derives its
//! deterministic STIX ids from.

use serde_json::{Value, json};
use uuid::Uuid;

/// The STIX 2.1 namespace for SCO ids (STIX 2.1 §2.9).
pub const SCO_NAMESPACE: Uuid = uuid::uuid!("00abedb4-aa42-466c-9c01-fed23315a9b7");

/// certex's own namespace for the ids of objects it derives from records
/// (`<type>--UUIDv5(CERTEX_NAMESPACE, "<type>/<sender>/<message id>")`), so
/// that every export of one record names the same objects.
pub const CERTEX_NAMESPACE: Uuid = uuid::uuid!("6c1f0b7e-2d4a-5f3e-9b8c-3e1d2c4b5a69");

/// The namespace certex derives message ids of imported STIX objects from
/// (`UUIDv5(IMPORT_NAMESPACE, "<stix id>")`), which makes import idempotent.
pub const IMPORT_NAMESPACE: Uuid = uuid::uuid!("0f7d3a52-8c4e-5b1a-a6d9-4e2b7c9f1d30");

/// The TLP 2.0 extension definition (OASIS cti-stix-common-objects).
pub const TLP2_EXTENSION: &str = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d";
/// The incident-core extension of the OASIS incident suite.
pub const INCIDENT_CORE_EXTENSION: &str =
    "extension-definition--ef765651-680c-498d-9894-99799f2fa126";
/// The `task` object of the OASIS incident suite (a new SDO).
pub const TASK_EXTENSION: &str = "extension-definition--2074a052-8be4-4932-849e-f5e7798e0030";

/// The official TLP 2.0 marking definitions, by certex TLP word.
pub const TLP2: [(&str, &str, &str); 5] = [
    (
        "clear",
        "TLP:CLEAR",
        "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    ),
    (
        "green",
        "TLP:GREEN",
        "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    ),
    (
        "amber",
        "TLP:AMBER",
        "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    ),
    (
        "amber+strict",
        "TLP:AMBER+STRICT",
        "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    ),
    (
        "red",
        "TLP:RED",
        "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
    ),
];

/// The TLP 1.0 marking definitions of STIX 2.1 §7.2.1.4, by certex TLP word
/// (TLP 1.0 "white" is TLP 2.0 "clear").
pub const TLP1: [(&str, &str); 4] = [
    (
        "clear",
        "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9",
    ),
    (
        "green",
        "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da",
    ),
    (
        "amber",
        "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82",
    ),
    (
        "red",
        "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed",
    ),
];

/// The TLP 2.0 marking-definition id for a certex TLP word.
pub fn tlp2_marking_id(tlp: &str) -> Option<&'static str> {
    TLP2.iter()
        .find(|(w, _, _)| *w == tlp)
        .map(|(_, _, id)| *id)
}

/// The certex TLP word a TLP 1.0 or 2.0 marking-definition id stands for.
pub fn tlp_of_marking(id: &str) -> Option<&'static str> {
    TLP2.iter()
        .find(|(_, _, m)| *m == id)
        .map(|(w, _, _)| *w)
        .or_else(|| TLP1.iter().find(|(_, m)| *m == id).map(|(w, _)| *w))
}

/// The five official TLP 2.0 marking-definition objects, as published by
/// OASIS (every certex bundle carries them).
pub fn tlp2_marking_objects() -> Vec<Value> {
    TLP2.iter()
        .map(|(word, name, id)| {
            json!({
                "type": "marking-definition",
                "spec_version": "2.1",
                "id": id,
                "created": "2022-10-01T00:00:00.000Z",
                "name": name,
                "extensions": {
                    TLP2_EXTENSION: {
                        "extension_type": "property-extension",
                        "tlp_2_0": word,
                    }
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlp_words_and_ids() {
        assert_eq!(
            tlp2_marking_id("amber"),
            Some("marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421")
        );
        assert_eq!(tlp2_marking_id("white"), None);
        assert_eq!(
            tlp_of_marking("marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9"),
            Some("clear")
        );
        assert_eq!(
            tlp_of_marking("marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1"),
            Some("red")
        );
        assert_eq!(tlp2_marking_objects().len(), 5);
    }
}
