//! Vietnamese licence plates.
//!
//! A plate is a two-digit province code (Sơn La is 26), a series of one or two
//! capital letters optionally followed by one digit, a dash, and either four
//! digits or five digits written `123.45`: `26A-123.45`, `26B1-234.56`,
//! `29LD-1234`, `26C-1234`.

/// True when `text` is a plate in the canonical Vietnamese format.
pub fn is_vietnamese_plate(text: &str) -> bool {
    let Some((head, tail)) = text.split_once('-') else {
        return false;
    };
    let head = head.as_bytes();
    if head.len() < 3 || !head[..2].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let series = &head[2..];
    let letters = series.iter().take_while(|b| b.is_ascii_uppercase()).count();
    let digits = &series[letters..];
    if !(1..=2).contains(&letters) || digits.len() > 1 || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let tail = tail.as_bytes();
    match tail.len() {
        4 => tail.iter().all(u8::is_ascii_digit),
        6 => {
            tail[3] == b'.'
                && tail[..3].iter().all(u8::is_ascii_digit)
                && tail[4..].iter().all(u8::is_ascii_digit)
        }
        _ => false,
    }
}

/// The province code of a plate (`"26"` for Sơn La), when it is a plate.
pub fn province_code(plate: &str) -> Option<&str> {
    is_vietnamese_plate(plate).then(|| &plate[..2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_formats() {
        for p in [
            "26A-123.45",
            "26B1-234.56",
            "29LD-1234",
            "26C-1234",
            "30K-999.99",
        ] {
            assert!(is_vietnamese_plate(p), "{p}");
        }
        assert_eq!(province_code("26A-123.45"), Some("26"));
    }

    #[test]
    fn rejects_other_text() {
        for p in [
            "",
            "26A12345",
            "2A-123.45",
            "26-123.45",
            "26ABC-123.45",
            "26A12-123.45",
            "26a-123.45",
            "26A-12.345",
            "26A-123456",
            "26A-12345",
            "ABA-123.45",
            "26A-123.4x",
        ] {
            assert!(!is_vietnamese_plate(p), "{p}");
        }
    }
}
