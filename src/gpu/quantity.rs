//! Kubernetes resource quantities, as far as GPU discovery needs them: parse what nodes
//! and the manual configuration carry, and print values back the way NVCA prints them.
//!
//! NVCA's registration strings are apimachinery's `resource.Quantity.String()` (the
//! canonical form) and NVCA's own `roundToNearestByteSize`
//! (`pkg/types/resource_types.go`). SIS compares registrations as JSON, so we print the
//! same strings: `"333m"`, `"2Gi"`, `"341Mi"`, `"79Gi"`.
//!
//! Values are kept exactly, in nano-units (the finest precision Kubernetes keeps), in an
//! `i128`; anything that would not fit is refused at parse time.

use std::cmp::Ordering;
use std::fmt;

const NANO: i128 = 1_000_000_000;

/// How a quantity was written, which decides how it is printed back (apimachinery's
/// `Format`): `Ki`…`Ei` are binary; none, `m`, `k`, `M`… decimal; `1e3` exponent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    DecimalSi,
    BinarySi,
    DecimalExponent,
}

/// An exact quantity and the format it prints in.
#[derive(Clone, Copy, Debug)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl Default for Quantity {
    fn default() -> Self {
        Quantity::zero()
    }
}

/// Why a string is not a quantity. The caller names the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("is empty")]
    Empty,
    #[error(
        "{0:?} is not a Kubernetes quantity (a number with an optional suffix such as m, k, M, G, Ki, Mi, Gi, Ti)"
    )]
    Malformed(String),
    #[error("{0:?} is too large")]
    TooLarge(String),
}

impl Quantity {
    pub fn zero() -> Quantity {
        Quantity {
            nanos: 0,
            format: Format::DecimalSi,
        }
    }

    /// A whole number of units (bytes, cores) in the given format.
    pub fn from_units(units: i128, format: Format) -> Quantity {
        Quantity {
            nanos: units.saturating_mul(NANO),
            format,
        }
    }

    /// Thousandths of a unit, printed as a decimal quantity (CPU).
    pub fn from_millis(millis: i128) -> Quantity {
        Quantity {
            nanos: millis.saturating_mul(1_000_000),
            format: Format::DecimalSi,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// Parses the Kubernetes quantity grammar: sign, digits, optional fraction, optional
    /// suffix (`n u m "" k M G T P E`, `Ki Mi Gi Ti Pi Ei`, or `e<exp>`/`E<exp>`).
    /// Precision finer than a nano-unit rounds up, as Kubernetes does.
    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        let malformed = || QuantityError::Malformed(text.to_string());
        let too_large = || QuantityError::TooLarge(text.to_string());
        let s = text.trim();
        if s.is_empty() {
            return Err(QuantityError::Empty);
        }
        let (negative, s) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let number_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(number_end);
        let (whole, fraction) = match number.split_once('.') {
            Some((w, f)) => (w, f),
            None => (number, ""),
        };
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(malformed());
        }
        // The digits as one integer mantissa and a power of ten.
        let digits: String = format!("{whole}{fraction}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 36 {
            return Err(too_large());
        }
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| malformed())?
        };
        let mut exponent: i32 = -i32::try_from(fraction.len()).map_err(|_| malformed())?;
        let mut binary_shift: u32 = 0;
        let format = match suffix {
            "" => Format::DecimalSi,
            "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
                binary_shift = match suffix {
                    "Ki" => 10,
                    "Mi" => 20,
                    "Gi" => 30,
                    "Ti" => 40,
                    "Pi" => 50,
                    _ => 60,
                };
                Format::BinarySi
            }
            "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => {
                exponent += match suffix {
                    "n" => -9,
                    "u" => -6,
                    "m" => -3,
                    "k" => 3,
                    "M" => 6,
                    "G" => 9,
                    "T" => 12,
                    "P" => 15,
                    _ => 18,
                };
                Format::DecimalSi
            }
            other if other.starts_with(['e', 'E']) => {
                let exp: i32 = other[1..].parse().map_err(|_| malformed())?;
                exponent = exponent.checked_add(exp).ok_or_else(too_large)?;
                Format::DecimalExponent
            }
            _ => return Err(malformed()),
        };
        // nanos = mantissa * 10^(exponent + 9) * 2^shift, rounding a finer remainder up.
        let scale = exponent + 9;
        let mut nanos = if scale >= 0 {
            let factor = 10i128
                .checked_pow(u32::try_from(scale).map_err(|_| too_large())?)
                .ok_or_else(too_large)?;
            mantissa.checked_mul(factor).ok_or_else(too_large)?
        } else {
            let divisor = 10i128
                .checked_pow(u32::try_from(-scale).map_err(|_| too_large())?)
                .unwrap_or(i128::MAX);
            let quotient = mantissa / divisor;
            if mantissa % divisor != 0 {
                quotient + 1
            } else {
                quotient
            }
        };
        nanos = nanos
            .checked_mul(1i128 << binary_shift)
            .ok_or_else(too_large)?;
        if nanos > i128::MAX / 1024 {
            return Err(too_large());
        }
        Ok(Quantity {
            nanos: if negative { -nanos } else { nanos },
            format,
        })
    }

    /// Whole units, rounded down (a fraction of a GPU is no GPU).
    pub fn units_floor(&self) -> i128 {
        self.nanos.div_euclid(NANO)
    }

    /// Whole units, rounded up (apimachinery's `Value()`).
    pub fn units_ceil(&self) -> i128 {
        -(-self.nanos).div_euclid(NANO)
    }

    /// Thousandths, rounded up (apimachinery's `MilliValue()`).
    pub fn millis_ceil(&self) -> i128 {
        -(-self.nanos).div_euclid(1_000_000)
    }

    pub fn saturating_sub(&self, other: &Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_sub(other.nanos),
            format: self.format,
        }
    }

    pub fn saturating_mul(&self, factor: u32) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_mul(i128::from(factor)),
            format: self.format,
        }
    }

    /// The canonical form split into number and suffix (apimachinery's
    /// `CanonicalizeBytes`): binary quantities of whole units print in the largest `Ki`…`Ei`
    /// that divides them; anything else prints with the largest decimal suffix that keeps
    /// the number whole.
    fn canonical_parts(&self) -> (String, String) {
        if self.nanos == 0 {
            return ("0".to_string(), String::new());
        }
        if self.format == Format::BinarySi
            && self.nanos.abs() >= 1024 * NANO
            && self.nanos % NANO == 0
        {
            let mut amount = self.nanos / NANO;
            let mut power = 0;
            while amount % 1024 == 0 && power < 6 {
                amount /= 1024;
                power += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][power];
            return (amount.to_string(), suffix.to_string());
        }
        let mut amount = self.nanos;
        let mut exponent: i32 = -9;
        while amount % 10 == 0 {
            amount /= 10;
            exponent += 1;
        }
        let down = exponent.rem_euclid(3);
        amount *= 10i128.pow(down.unsigned_abs());
        exponent -= down;
        let suffix = match (self.format, exponent) {
            (Format::DecimalExponent, 0) => String::new(),
            (Format::DecimalExponent, e) => format!("e{e}"),
            (_, -9) => "n".into(),
            (_, -6) => "u".into(),
            (_, -3) => "m".into(),
            (_, 0) => String::new(),
            (_, 3) => "k".into(),
            (_, 6) => "M".into(),
            (_, 9) => "G".into(),
            (_, 12) => "T".into(),
            (_, 15) => "P".into(),
            (_, 18) => "E".into(),
            (_, e) => format!("e{e}"),
        };
        (amount.to_string(), suffix)
    }

    /// NVCA's `roundToNearestByteSize`: the canonical form when its number has at most four
    /// digits, otherwise rounded down to the largest unit that leaves fewer than 10,000
    /// (`2063937Mi` -> `2015Gi`, `81559Mi` -> `79Gi`).
    pub fn to_byte_size_string(&self) -> String {
        let (number, suffix) = self.canonical_parts();
        if number.len() < 5 {
            return format!("{number}{suffix}");
        }
        let units = self.units_floor();
        match self.format {
            Format::BinarySi => {
                if units < 1024 {
                    return Quantity::from_units(units, self.format).to_string();
                }
                format!("{}i", byte_count(1024, units))
            }
            _ => byte_count(1000, units),
        }
    }
}

/// NVCA's `byteCountSIDec`: the largest unit from M upwards that leaves a number under
/// 10,000, stopping at P.
fn byte_count(unit: i128, bytes: i128) -> String {
    const SUFFIXES: [char; 6] = ['K', 'M', 'G', 'T', 'P', 'E'];
    if bytes <= unit {
        return bytes.to_string();
    }
    let mut index = 0;
    let mut divisor = unit;
    let mut rest = bytes;
    let mut shown = bytes;
    while rest >= unit {
        divisor = divisor.saturating_mul(unit);
        index += 1;
        if index == SUFFIXES.len() - 1 {
            index -= 1;
            break;
        }
        shown = bytes / divisor;
        if shown < 10_000 {
            break;
        }
        rest /= unit;
    }
    format!("{shown}{}", SUFFIXES[index])
}

/// The canonical form (apimachinery's `Quantity.String()`).
impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (number, suffix) = self.canonical_parts();
        write!(f, "{number}{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Quantity {
        match Quantity::parse(text) {
            Ok(quantity) => quantity,
            Err(error) => panic!("{text}: {error}"),
        }
    }

    #[test]
    fn canonical_strings_match_apimachinery() {
        for (input, canonical) in [
            ("224", "224"),
            ("2", "2"),
            ("1000", "1k"),
            ("2500", "2500"),
            ("0.5", "500m"),
            ("333m", "333m"),
            ("1332m", "1332m"),
            ("28000m", "28"),
            ("2Gi", "2Gi"),
            ("1024Ki", "1Mi"),
            ("1025Ki", "1025Ki"),
            ("2063937Mi", "2063937Mi"),
            ("128G", "128G"),
            ("1Ti", "1Ti"),
            ("1023", "1023"),
            ("0", "0"),
            ("1e3", "1e3"),
        ] {
            assert_eq!(q(input).to_string(), canonical, "{input}");
        }
    }

    #[test]
    fn byte_sizes_round_down_like_nvca() {
        // NVCA's own table (pkg/types/resource_types_test.go), and node-sized values.
        for (input, shown) in [
            ("1023", "1023"),
            ("1025", "1025"),
            ("1023Ki", "1023Ki"),
            ("10250Ki", "10Mi"),
            ("12312091Ki", "11Gi"),
            ("1025Mi", "1025Mi"),
            ("1725Ti", "1725Ti"),
            ("1Ei", "1Ei"),
            ("1024Ki", "1Mi"),
            ("2063937Mi", "2015Gi"),
            ("81559Mi", "79Gi"),
            ("3840Gi", "3840Gi"),
            ("4291644908073", "4291G"),
        ] {
            assert_eq!(q(input).to_byte_size_string(), shown, "{input}");
        }
        assert_eq!(
            Quantity::from_units(366_503_875_925, Format::BinarySi).to_byte_size_string(),
            "341Gi"
        );
        // 2Gi split six ways, as NVCA's A100 example shows it.
        assert_eq!(
            Quantity::from_units(2 * 1024 * 1024 * 1024 / 6, Format::BinarySi)
                .to_byte_size_string(),
            "341Mi"
        );
    }

    #[test]
    fn rounding_follows_kubernetes() {
        assert_eq!(q("1.5").units_floor(), 1);
        assert_eq!(q("1.5").units_ceil(), 2);
        assert_eq!(q("333m").units_ceil(), 1);
        assert_eq!(q("0.0001").millis_ceil(), 1);
        assert_eq!(q("8").millis_ceil(), 8000);
    }

    #[test]
    fn malformed_quantities_are_refused_with_the_text() {
        for bad in ["", "abc", "12X", "1.2.3", "Gi", "5 Gi"] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} parsed");
        }
        let error = Quantity::parse("12X").err().map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some(
                "\"12X\" is not a Kubernetes quantity (a number with an optional suffix such as m, k, M, G, Ki, Mi, Gi, Ti)"
            )
        );
        assert!(matches!(
            Quantity::parse("1e40"),
            Err(QuantityError::TooLarge(_))
        ));
    }
}
