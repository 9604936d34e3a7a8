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

/// `prefix` followed by the plate normalised (see [`normalise`]), handed to
/// `f`. Every camera read needs it, so it is built on the stack when it
/// fits (plates are about ten characters), not in a new `String`.
pub fn with_normalised<R>(prefix: &str, plate: &str, f: impl FnOnce(&str) -> R) -> R {
    let heap = || format!("{prefix}{}", normalise(plate));
    let letters = plate
        .bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| b.to_ascii_uppercase());
    let mut buf = [0u8; 48];
    let mut n = 0;
    for b in prefix.bytes().chain(letters) {
        let Some(slot) = buf.get_mut(n) else {
            return f(&heap());
        };
        *slot = b;
        n += 1;
    }
    // A whole prefix and ASCII letters and digits: always UTF-8.
    match std::str::from_utf8(&buf[..n]) {
        Ok(s) => f(s),
        Err(_) => f(&heap()),
    }
}

impl Watchlist {
    /// Whether a plate is on the list.
    pub fn contains(&self, plate: &str) -> bool {
        !self.plates.is_empty() && with_normalised("", plate, |p| self.plates.contains(p))
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
        // Not ASCII: the letter is dropped, as `normalise` drops it.
        assert!(!w.contains("26Á-123.45"));
    }

    #[test]
    fn plates_longer_than_the_stack_buffer_match_too() {
        // 54 letters and digits: more than the stack buffer holds.
        let long = "VN-26A-123.45-TRAILER-0001-FROM-LAO-CAI-TO-SON-LA-BY-NATIONAL-ROAD-6-X";
        let w = Watchlist {
            plates: [normalise(long)].into_iter().collect(),
            severity: ioc_schemas::Severity::Severe,
        };
        assert!(w.contains(long));
        assert!(w.contains(&long.to_lowercase()));
        assert!(!w.contains(&long.replace('X', "Y")));
    }
}
