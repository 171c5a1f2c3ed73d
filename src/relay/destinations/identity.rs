//! Identifiers for the platforms' matching: normalised, then SHA-256 (lowercase hex), as each
//! platform documents. A value that already is a SHA-256 hex digest passes through — hashing a
//! hash silently destroys the match (what Stape, TikTok's template and Segment do too).

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn is_hashed(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn hash_with(v: &str, normalise: impl Fn(&str) -> Option<String>) -> Option<String> {
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    if is_hashed(v) {
        return Some(v.to_lowercase());
    }
    normalise(v).filter(|n| !n.is_empty()).map(|n| sha256_hex(&n))
}

/// Email: trimmed, lowercased.
pub fn email(v: &str) -> Option<String> {
    hash_with(v, |s| s.contains('@').then(|| s.to_lowercase()))
}

/// Phone for Meta, Snapchat, Pinterest: digits only with the country code, no leading zeros.
pub fn phone_digits(v: &str) -> Option<String> {
    hash_with(v, |s| Some(s.chars().filter(char::is_ascii_digit).collect::<String>().trim_start_matches('0').to_string()))
}

/// Phone for TikTok and GA4: E.164, `+` and the digits.
pub fn phone_e164(v: &str) -> Option<String> {
    hash_with(v, |s| {
        let digits: String = s.chars().filter(char::is_ascii_digit).collect::<String>().trim_start_matches('0').to_string();
        (!digits.is_empty()).then(|| format!("+{}", digits.chars().take(15).collect::<String>()))
    })
}

/// External id (the OMS customer id): trimmed.
pub fn external_id(v: &str) -> Option<String> {
    hash_with(v, |s| Some(s.to_string()))
}

/// The identifiers an OMS payload may carry, read once for every adapter.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Identity {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub external_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

fn first(p: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| p.get(*k).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string))
}

impl Identity {
    pub fn of(p: &Map<String, Value>) -> Self {
        Identity {
            email: first(p, &["email", "customer_email"]),
            phone: first(p, &["phone", "customer_phone"]),
            external_id: first(p, &["external_id", "customer_id"]),
            ip: first(p, &["client_ip_address", "ip_address", "ip"]),
            user_agent: first(p, &["client_user_agent", "user_agent"]),
        }
    }
}

/// A payload field as text (click ids and the like, never hashed).
pub fn field(p: &Map<String, Value>, key: &str) -> Option<String> {
    first(p, &[key])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_normalised_then_hashed_and_hashes_pass_through() {
        assert_eq!(email("  John.Doe@Example.COM "), Some(sha256_hex("john.doe@example.com")));
        assert_eq!(email("not-an-email"), None);
        assert_eq!(phone_digits("+1 (650) 555-1212"), Some(sha256_hex("16505551212")));
        assert_eq!(phone_digits("0044 20 7946 0000"), Some(sha256_hex("442079460000")));
        assert_eq!(phone_e164("+1 (650) 555-1212"), Some(sha256_hex("+16505551212")));
        let h = sha256_hex("already");
        assert_eq!(email(&h.to_uppercase()), Some(h.clone()), "a digest is passed through, lowercased");
        assert_eq!(external_id(" c-42 "), Some(sha256_hex("c-42")));
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
