//! `watchlist`: every read of a watch-listed plate raises an alert at the
//! camera that read it.

use std::collections::HashSet;

/// A `watchlist` rule's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Watchlist {
    /// Normalised plates (see [`normalise`]).
    pub plates: HashSet<String>,
    /// Severity of the alerts.
    pub severity: ioc_schemas::Severity,
}

/// A plate reduced to its letters and digits, upper case: `26a-123.45`,
/// `26A12345` and `26A 123 45` are the same plate.
pub fn normalise(plate: &str) -> String {
    plate
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

impl Watchlist {
    /// Whether a plate is on the list.
    pub fn contains(&self, plate: &str) -> bool {
        !self.plates.is_empty() && self.plates.contains(&normalise(plate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plates_match_whatever_their_punctuation() {
        let w = Watchlist {
            plates: ["26A-123.45"].iter().map(|p| normalise(p)).collect(),
            severity: ioc_schemas::Severity::Severe,
        };
        assert!(w.contains("26a12345"));
        assert!(w.contains("26A-123.45"));
        assert!(!w.contains("26A-123.46"));
    }
}
