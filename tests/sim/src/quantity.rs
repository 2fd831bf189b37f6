//! Kubernetes resource quantities ("512Mi", "1Gi", "500m", "2", "1e3") as plain numbers.

/// Parses a Kubernetes quantity into its numeric value (bytes for memory, cores for CPU).
/// Returns `None` for anything that is not a valid quantity.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || ((c == '+' || c == '-') && i == 0)))
        .map_or(s.len(), |(i, _)| i);
    let (number, suffix) = s.split_at(split);
    let value: f64 = number.parse().ok()?;
    // Sub-unit suffixes divide, so that "100n" is exactly 1e-7.
    let divisor = match suffix {
        "n" => 1e9,
        "u" => 1e6,
        "m" => 1e3,
        _ => 1.0,
    };
    let factor = match suffix {
        "" | "n" | "u" | "m" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        other => {
            let exponent: i32 = other.strip_prefix(['e', 'E'])?.parse().ok()?;
            if exponent < 0 {
                return Some(value / 10f64.powi(-exponent)).filter(|v| v.is_finite());
            }
            10f64.powi(exponent)
        }
    };
    let v = value * factor / divisor;
    v.is_finite().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::parse_quantity;

    #[test]
    fn binary_and_decimal_suffixes() {
        assert_eq!(parse_quantity("512Mi"), Some(536_870_912.0));
        assert_eq!(parse_quantity("1Gi"), Some(1_073_741_824.0));
        assert_eq!(parse_quantity("128974848"), Some(128_974_848.0));
        assert_eq!(parse_quantity("129M"), Some(129e6));
        assert_eq!(parse_quantity("1k"), Some(1000.0));
    }

    #[test]
    fn cpu_forms() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("0.25"), Some(0.25));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("100n"), Some(1e-7));
        assert_eq!(parse_quantity("5e-3"), Some(0.005));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_quantity(""), None);
        assert_eq!(parse_quantity("Mi"), None);
        assert_eq!(parse_quantity("12Xi"), None);
        assert_eq!(parse_quantity("1.2.3"), None);
    }
}
