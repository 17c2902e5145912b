//! Secret material: the master key, random credentials, hashes and constant-time comparison.

use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::distributions::{Alphanumeric, DistString};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why the master key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("PLINTH_MASTER_KEY must be the base64 of exactly 32 bytes")]
    Malformed,
    #[error("reading or creating {path}: {source}")]
    File { path: String, source: std::io::Error },
}

/// The 32-byte master key. Every other server secret is derived from it.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// From `PLINTH_MASTER_KEY` when given, else from `<data_dir>/master.key`, created with mode
    /// 0600 on first use.
    pub fn load(configured: Option<&str>, data_dir: &Path) -> Result<MasterKey, MasterKeyError> {
        if let Some(text) = configured.filter(|t| !t.trim().is_empty()) {
            return Self::from_base64(text.trim()).ok_or(MasterKeyError::Malformed);
        }
        let path = data_dir.join("master.key");
        let file_error = |source| MasterKeyError::File { path: path.display().to_string(), source };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_base64(text.trim()).ok_or(MasterKeyError::Malformed),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(file_error)?;
                let mut bytes = [0u8; 32];
                OsRng.fill_bytes(&mut bytes);
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                let mut file = options.open(&path).map_err(file_error)?;
                file.write_all(STANDARD.encode(bytes).as_bytes()).map_err(file_error)?;
                file.sync_all().map_err(file_error)?;
                Ok(MasterKey(bytes))
            }
            Err(error) => Err(file_error(error)),
        }
    }

    fn from_base64(text: &str) -> Option<MasterKey> {
        let bytes = STANDARD.decode(text).ok()?;
        Some(MasterKey(bytes.try_into().ok()?))
    }

    /// A key for one purpose (`"jwt"`, `"cursor"`, ...), so that no two uses share a key.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        hmac_sha256(&self.0, &[b"plinth/", purpose.as_bytes()])
    }
}

/// `len` characters from `[A-Za-z0-9]`, from the OS random source (43 characters carry 256 bits).
pub fn random_alphanumeric(len: usize) -> String {
    Alphanumeric.sample_string(&mut OsRng, len)
}

/// Lowercase hex SHA-256 of `input`: how credentials are stored.
pub fn sha256_hex(input: &str) -> String {
    sha256_hex_bytes(input.as_bytes())
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// HMAC-SHA256 of the concatenated `parts` under `key` (any length).
#[allow(clippy::expect_used)] // HMAC takes keys of any length: this cannot fail.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Compares two secrets without leaking where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_key_file_is_created_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("plinth-mk-{}", random_alphanumeric(8)));
        let first = MasterKey::load(None, &dir).unwrap();
        let second = MasterKey::load(None, &dir).unwrap();
        assert_eq!(first.derive("x"), second.derive("x"));
        assert_ne!(first.derive("x"), first.derive("y"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("master.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn configured_master_key_must_be_32_bytes() {
        let dir = std::env::temp_dir();
        assert!(MasterKey::load(Some("c2hvcnQ="), &dir).is_err());
        let good = STANDARD.encode([7u8; 32]);
        assert!(MasterKey::load(Some(&good), &dir).is_ok());
    }

    #[test]
    fn hashes_and_compares() {
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(constant_time_eq(b"same", b"same"));
        assert!(!constant_time_eq(b"same", b"diff"));
        assert_eq!(random_alphanumeric(43).len(), 43);
    }
}

/// Encrypts `plaintext` with AES-256-GCM under `key`, bound to `associated` (a ciphertext moved
/// to another row does not open). Written as `v1:` and base64 of nonce and ciphertext.
#[allow(clippy::expect_used)] // AES-GCM refuses only messages over 64 GiB; none is near that.
pub fn seal(key: &[u8; 32], associated: &[u8], plaintext: &[u8]) -> String {
    use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
    let cipher = aes_gcm::Aes256Gcm::new(key.into());
    let nonce = aes_gcm::Aes256Gcm::generate_nonce(&mut OsRng);
    let sealed = cipher
        .encrypt(&nonce, Payload { msg: plaintext, aad: associated })
        .expect("AES-GCM encrypts any message of this size");
    let mut out = nonce.to_vec();
    out.extend(sealed);
    format!("v1:{}", base64::engine::general_purpose::STANDARD.encode(out))
}

/// Opens what `seal` wrote with the same key and associated data; `None` for anything else.
pub fn open(key: &[u8; 32], associated: &[u8], sealed: &str) -> Option<Vec<u8>> {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    let bytes = base64::engine::general_purpose::STANDARD.decode(sealed.strip_prefix("v1:")?).ok()?;
    if bytes.len() < 12 {
        return None;
    }
    let (nonce, ciphertext) = bytes.split_at(12);
    let cipher = aes_gcm::Aes256Gcm::new(key.into());
    cipher.decrypt(nonce.into(), Payload { msg: ciphertext, aad: associated }).ok()
}

#[cfg(test)]
mod sealing {
    #[test]
    fn sealed_text_opens_only_with_its_key_and_place() {
        let key = [7u8; 32];
        let sealed = super::seal(&key, b"row-1", b"plk_live_secret");
        assert!(!sealed.contains("plk_live_secret"));
        assert_eq!(super::open(&key, b"row-1", &sealed).as_deref(), Some(&b"plk_live_secret"[..]));
        assert_eq!(super::open(&key, b"row-2", &sealed), None, "moved to another row");
        assert_eq!(super::open(&[8u8; 32], b"row-1", &sealed), None, "another key");
        assert_eq!(super::open(&key, b"row-1", "v1:AAAA"), None);
        assert_ne!(super::seal(&key, b"row-1", b"x"), super::seal(&key, b"row-1", b"x"), "fresh nonces");
    }
}
