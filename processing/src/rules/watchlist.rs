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
        if self.plates.is_empty() {
            return false;
        }
        // Every camera read asks: normalise on the stack when the plate
        // fits (they are about ten characters), not in a new String.
        let mut buf = [0u8; 24];
        let mut n = 0;
        for b in plate.bytes().filter(u8::is_ascii_alphanumeric) {
            let Some(slot) = buf.get_mut(n) else {
                return self.plates.contains(&normalise(plate));
            };
            *slot = b.to_ascii_uppercase();
            n += 1;
        }
        // ASCII letters and digits only: always UTF-8.
        std::str::from_utf8(&buf[..n]).is_ok_and(|p| self.plates.contains(p))
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
        let long = "VN-26A-123.45-TRAILER-0001-X";
        let w = Watchlist {
            plates: [normalise(long)].into_iter().collect(),
            severity: ioc_schemas::Severity::Severe,
        };
        assert!(w.contains(long));
        assert!(w.contains(&long.to_lowercase()));
        assert!(!w.contains(&long.replace('X', "Y")));
    }
}
