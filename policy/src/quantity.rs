//! Kubernetes quantity strings ("10Mi", "1G", "512") as byte counts.
//!
//! Only the forms that make sense for sizes are accepted: a non-negative
//! integer with an optional binary (Ki..Ei) or decimal (k, M..E) suffix.
//! Fractions and exponents are refused: a byte count is a whole number and a
//! policy author who writes "1.5Gi" should be told, not rounded.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum QuantityError {
    #[error(
        "{0:?} is not a size: expected an integer with an optional suffix such as Ki, Mi, Gi, k, M, G"
    )]
    Malformed(String),
    #[error("{0:?} does not fit in 64 bits")]
    Overflow(String),
}

/// Parse a quantity string into bytes.
pub fn parse_bytes(s: &str) -> Result<u64, QuantityError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    if digits.is_empty() {
        return Err(QuantityError::Malformed(s.to_string()));
    }
    let mult: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        _ => return Err(QuantityError::Malformed(s.to_string())),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| QuantityError::Overflow(s.to_string()))?;
    n.checked_mul(mult)
        .ok_or_else(|| QuantityError::Overflow(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes() {
        assert_eq!(parse_bytes("0"), Ok(0));
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("10Ki"), Ok(10 * 1024));
        assert_eq!(parse_bytes("10Mi"), Ok(10 << 20));
        assert_eq!(parse_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(parse_bytes("4Gi"), Ok(4 << 30));
        assert_eq!(parse_bytes("2k"), Ok(2000));
        assert_eq!(parse_bytes("3M"), Ok(3_000_000));
        assert_eq!(parse_bytes(" 1G "), Ok(1_000_000_000));
    }

    #[test]
    fn refusals() {
        for bad in [
            "", "Mi", "1.5Gi", "-1", "1e3", "10mi", "10 Mi", "1Zi", "0x10",
        ] {
            assert!(
                matches!(parse_bytes(bad), Err(QuantityError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_bytes("99999999999999999999"),
            Err(QuantityError::Overflow(_))
        ));
        assert!(matches!(
            parse_bytes("16Ei"),
            Err(QuantityError::Overflow(_))
        ));
    }
}
