//! Credential encryption: Fernet (the spec Python's `cryptography.fernet` implements), so
//! tokens written by the original Python service decrypt here and the reverse.
//!
//! Keys come from `ENCRYPTION_KEY` (one key, or several separated by commas or spaces for
//! rotation: the first encrypts, every key is tried on decrypt, like Python's `MultiFernet`),
//! else from the file named by `ENCRYPTION_KEY_FILE`, else from the local stack's
//! `relay-encryption-key`, which `funnel stack up` writes. Decrypted secrets are `Secret`s:
//! their Debug and Display print a placeholder, so a secret cannot reach a log by accident.

use std::path::{Path, PathBuf};

pub const KEY_ENV: &str = "ENCRYPTION_KEY";
pub const KEY_FILE_ENV: &str = "ENCRYPTION_KEY_FILE";
/// The local stack's key file, under the stack directory.
pub const STACK_KEY_FILE: &str = "relay-encryption-key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no encryption key: set {KEY_FILE_ENV} (a file holding the Fernet key) or {KEY_ENV}; `funnel stack up` writes one for the local stack ({STACK_KEY_FILE} in the stack directory)")]
    Missing,
    #[error("cannot read the encryption key file {path}: {source}")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("encryption key {position} from {from} is not a Fernet key (url-safe base64 of 32 bytes, as Fernet.generate_key() makes)")]
    Malformed { position: usize, from: String },
    #[error("a stored secret does not decrypt with any configured key (wrong ENCRYPTION_KEY, or a key removed before re-encryption)")]
    Undecryptable,
}

/// A decrypted secret. Only `expose` gives the text.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

pub struct Keyring {
    keys: fernet::MultiFernet,
    count: usize,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({} keys, <redacted>)", self.count)
    }
}

impl Keyring {
    /// Keys separated by commas or whitespace; the first one encrypts.
    pub fn parse(list: &str, from: &str) -> Result<Self, KeyError> {
        let mut keys = vec![];
        for (i, k) in list.split(|c: char| c == ',' || c.is_whitespace()).filter(|k| !k.is_empty()).enumerate() {
            keys.push(fernet::Fernet::new(k).ok_or(KeyError::Malformed { position: i + 1, from: from.to_string() })?);
        }
        if keys.is_empty() {
            return Err(KeyError::Missing);
        }
        let count = keys.len();
        Ok(Keyring { keys: fernet::MultiFernet::new(keys), count })
    }

    /// From `ENCRYPTION_KEY`, `ENCRYPTION_KEY_FILE` or the stack's key file, in that order.
    pub fn load(stack_dir: &Path) -> Result<Self, KeyError> {
        match crate::runtime::auth::read_secret(KEY_ENV, KEY_FILE_ENV, &stack_dir.join(STACK_KEY_FILE)) {
            Ok(Some((keys, from))) => Self::parse(&keys, &from),
            Ok(None) => Err(KeyError::Missing),
            Err((path, source)) => Err(KeyError::Unreadable { path, source }),
        }
    }

    pub fn encrypt(&self, plain: &str) -> String {
        self.keys.encrypt(plain.as_bytes())
    }

    pub fn decrypt(&self, token: &str) -> Result<Secret, KeyError> {
        let bytes = self.keys.decrypt(token.trim()).map_err(|_| KeyError::Undecryptable)?;
        String::from_utf8(bytes).map(Secret).map_err(|_| KeyError::Undecryptable)
    }

    /// The token re-encrypted under the first key (rotation: add the new key first, re-encrypt
    /// every stored secret, then drop the old key).
    pub fn reencrypt(&self, token: &str) -> Result<String, KeyError> {
        Ok(self.encrypt(self.decrypt(token)?.expose()))
    }
}

/// Create the local stack's key file when missing (a fresh Fernet key, owner-readable only).
pub fn ensure_stack_key(stack_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = stack_dir.join(STACK_KEY_FILE);
    if path.exists() {
        return Ok(path);
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    f.write_all(fernet::Fernet::generate_key().as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_decrypts_old_tokens_and_encrypts_with_the_first_key() {
        let (old, new) = (fernet::Fernet::generate_key(), fernet::Fernet::generate_key());
        let before = Keyring::parse(&old, "test").unwrap();
        let token = before.encrypt("EAAB-secret");
        let rotated = Keyring::parse(&format!("{new}, {old}"), "test").unwrap();
        assert_eq!(rotated.decrypt(&token).unwrap().expose(), "EAAB-secret");
        let again = rotated.reencrypt(&token).unwrap();
        assert_eq!(Keyring::parse(&new, "test").unwrap().decrypt(&again).unwrap().expose(), "EAAB-secret");
        assert!(matches!(before.decrypt(&again), Err(KeyError::Undecryptable)));
        assert!(matches!(Keyring::parse("not-a-key", "test"), Err(KeyError::Malformed { position: 1, .. })));
        assert_eq!(format!("{:?} {}", Secret::new("EAAB-secret"), Secret::new("EAAB-secret")), "Secret(<redacted>) <redacted>");
    }
}
