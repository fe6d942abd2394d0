//! Destination checks that run before anything is dialed.

use crate::config::CallPolicy;
use crate::validate::PhoneNumber;

/// Why a destination may not be dialed, in words for the person (or model) who asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "calls to numbers starting with {prefix} are not allowed (premium-rate or denied by policy, calls.denied_prefixes)"
    )]
    Denied { prefix: String },
    #[error(
        "calls to {to} are not allowed; accepted: numbers starting with {}",
        allowed.join(", ")
    )]
    NotAllowed { to: String, allowed: Vec<String> },
}

pub fn check_destination(policy: &CallPolicy, to: &PhoneNumber) -> Result<(), PolicyError> {
    let to = to.as_str();
    if let Some(p) = policy
        .denied_prefixes
        .iter()
        .find(|p| to.starts_with(p.as_str()))
    {
        return Err(PolicyError::Denied { prefix: p.clone() });
    }
    if !policy.allowed_prefixes.is_empty()
        && !policy
            .allowed_prefixes
            .iter()
            .any(|p| to.starts_with(p.as_str()))
    {
        return Err(PolicyError::NotAllowed {
            to: to.to_owned(),
            allowed: policy.allowed_prefixes.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> PhoneNumber {
        s.parse().unwrap()
    }

    #[test]
    fn policy() {
        let mut p = CallPolicy::default();
        assert!(
            check_destination(&p, &n("+19005550123"))
                .unwrap_err()
                .to_string()
                .contains("+1900")
        );
        p.allowed_prefixes = vec!["+44".into()];
        assert!(
            check_destination(&p, &n("+14155550123"))
                .unwrap_err()
                .to_string()
                .contains("+44")
        );
        assert!(check_destination(&p, &n("+442071838750")).is_ok());
    }
}
