//! Destination checks that run before anything is dialed.

use crate::config::CallPolicy;

/// `+` then 8 to 15 digits, first digit not 0 (ITU E.164).
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Why a destination may not be dialed, in words for the person (or model) who asked.
pub fn check_destination(policy: &CallPolicy, to: &str) -> Result<(), String> {
    if !is_e164(to) {
        return Err(format!(
            "to must be an E.164 number like +14155550123, got '{to}'"
        ));
    }
    if let Some(p) = policy
        .denied_prefixes
        .iter()
        .find(|p| to.starts_with(p.as_str()))
    {
        return Err(format!(
            "calls to numbers starting with {p} are not allowed (premium-rate or denied by policy)"
        ));
    }
    if !policy.allowed_prefixes.is_empty()
        && !policy
            .allowed_prefixes
            .iter()
            .any(|p| to.starts_with(p.as_str()))
    {
        return Err(format!(
            "calls to {to} are not allowed; this engine may only call numbers starting with {}",
            policy.allowed_prefixes.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164() {
        assert!(is_e164("+14155550123"));
        assert!(is_e164("+442071838750"));
        for bad in [
            "14155550123",
            "+1",
            "+1415555012345678",
            "+1 415 555 0123",
            "+0123456789",
            "555-1234",
            "",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    #[test]
    fn policy() {
        let mut p = CallPolicy::default();
        assert!(
            check_destination(&p, "+19005550123")
                .unwrap_err()
                .contains("+1900")
        );
        p.allowed_prefixes = vec!["+44".into()];
        assert!(
            check_destination(&p, "+14155550123")
                .unwrap_err()
                .contains("+44")
        );
        assert!(check_destination(&p, "+442071838750").is_ok());
        assert!(
            check_destination(&p, "555-1234")
                .unwrap_err()
                .contains("E.164")
        );
    }
}
