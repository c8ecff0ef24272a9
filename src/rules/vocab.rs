//! The words of SPEC §3/§6 for every enum of the API, one table per enum.
//!
//! JSON drafts and records, CLI flags and error messages all use these
//! lowercase words (`amber+strict`, `malicious-code`, `in-progress`), never the
//! protobuf constant names.

use crate::proto::{Action, CaseState, Category, ObservableType, Severity, Tlp};

/// An API enum with a lowercase word for every meaningful value.
pub trait Word: Sized + Copy + 'static {
    /// What the enum is called in messages ("tlp", "severity", ...).
    const WHAT: &'static str;
    /// Every value with its word, in declaration order.
    const TABLE: &'static [(Self, &'static str)];

    /// The word for this value (`"unspecified"` for the zero value).
    fn word(self) -> &'static str;

    /// The value for a word, or `None`.
    fn from_word(word: &str) -> Option<Self> {
        Self::TABLE
            .iter()
            .find(|(_, w)| *w == word)
            .map(|(v, _)| *v)
    }

    /// All accepted words, comma separated, for error messages.
    fn choices() -> String {
        Self::TABLE
            .iter()
            .map(|(_, w)| *w)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

macro_rules! words {
    ($ty:ident, $what:literal, { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl Word for $ty {
            const WHAT: &'static str = $what;
            const TABLE: &'static [(Self, &'static str)] = &[$(($ty::$variant, $word)),+];
            fn word(self) -> &'static str {
                match self {
                    $($ty::$variant => $word,)+
                    _ => "unspecified",
                }
            }
        }
    };
}

words!(Tlp, "tlp", {
    Clear => "clear",
    Green => "green",
    Amber => "amber",
    AmberStrict => "amber+strict",
    Red => "red",
});

words!(Severity, "severity", {
    Low => "low",
    Medium => "medium",
    High => "high",
    Critical => "critical",
});

words!(Category, "category", {
    AbusiveContent => "abusive-content",
    MaliciousCode => "malicious-code",
    InformationGathering => "information-gathering",
    IntrusionAttempts => "intrusion-attempts",
    Intrusions => "intrusions",
    Availability => "availability",
    InformationContentSecurity => "information-content-security",
    Fraud => "fraud",
    Vulnerable => "vulnerable",
    Other => "other",
    Test => "test",
});

words!(Action, "action", {
    Takedown => "takedown",
    PreserveEvidence => "preserve-evidence",
    ProvideLogs => "provide-logs",
    NotifyVictim => "notify-victim",
    BlockIndicators => "block-indicators",
    AnalyseSample => "analyse-sample",
    Investigate => "investigate",
    Other => "other",
});

words!(CaseState, "case state", {
    Open => "open",
    Acknowledged => "acknowledged",
    Accepted => "accepted",
    Declined => "declined",
    InProgress => "in-progress",
    Resolved => "resolved",
    Closed => "closed",
    Withdrawn => "withdrawn",
});

words!(ObservableType, "observable type", {
    Ipv4 => "ipv4",
    Ipv6 => "ipv6",
    Cidr => "cidr",
    Domain => "domain",
    Url => "url",
    Email => "email",
    Sha256 => "sha256",
    Sha1 => "sha1",
    Md5 => "md5",
    Asn => "asn",
});

/// Decodes a wire enum value into a meaningful value: `Err` names the problem
/// ("missing" for the zero value, "unknown value N" otherwise).
pub fn known<T>(raw: i32) -> Result<T, String>
where
    T: Word + TryFrom<i32> + Into<i32>,
{
    match T::try_from(raw) {
        Ok(v) if v.into() != 0 => Ok(v),
        Ok(_) => Err(format!("{} is missing (one of: {})", T::WHAT, T::choices())),
        Err(_) => Err(format!(
            "{} has unknown value {raw} (one of: {})",
            T::WHAT,
            T::choices()
        )),
    }
}

/// Parses a word, with an error listing the accepted words.
pub fn parse<T: Word>(word: &str) -> Result<T, String> {
    T::from_word(word)
        .ok_or_else(|| format!("unknown {} {word:?} (one of: {})", T::WHAT, T::choices()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for (v, w) in Tlp::TABLE {
            assert_eq!(Tlp::from_word(w), Some(*v));
            assert_eq!(v.word(), *w);
        }
        assert_eq!(Tlp::AmberStrict.word(), "amber+strict");
        assert_eq!(CaseState::InProgress.word(), "in-progress");
        assert_eq!(Tlp::Unspecified.word(), "unspecified");
        assert!(Tlp::from_word("unspecified").is_none());
    }

    #[test]
    fn known_rejects_zero_and_unknown() {
        assert_eq!(known::<Severity>(3), Ok(Severity::High));
        assert!(known::<Severity>(0).unwrap_err().contains("missing"));
        assert!(
            known::<Severity>(99)
                .unwrap_err()
                .contains("unknown value 99")
        );
    }
}
