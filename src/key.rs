//! [`Key`]: the 32-byte master key of an encrypted store.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, Result};

/// The master key of an encrypted [`SledStore`](crate::SledStore): 32 random
/// bytes. Records are sealed with a subkey derived from it and index keys
/// are digests keyed with another (see ARCHITECTURE.md).
///
/// The bytes are wiped from memory when the key is dropped, and `Debug`
/// never shows them.
///
/// ```
/// use tokenstore::Key;
///
/// let key = Key::generate()?;
/// let text = key.to_base64(); // what TOKENSTORE_KEY or a key file holds
/// assert_eq!(Key::from_base64(&text)?, key);
/// assert_eq!(format!("{key:?}"), "Key([redacted])");
/// # Ok::<(), tokenstore::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Key([u8; Key::LEN]);

impl Key {
    /// The length of a key in bytes.
    pub const LEN: usize = 32;

    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; Key::LEN]) -> Key {
        Key(bytes)
    }

    /// The proof that a process holds this key, over an owner's random
    /// `challenge` (docs/SPEC.md §8): a keyed BLAKE3 hash under a key
    /// derived for this purpose alone, so the key never crosses the socket
    /// and the proof is worth nothing for another challenge.
    pub(crate) fn proof(&self, challenge: &[u8; 32]) -> [u8; 32] {
        let proof_key = zeroize::Zeroizing::new(blake3::derive_key(
            "tokenstore 2026-12 shared store: the client holds the key",
            &self.0,
        ));
        *blake3::keyed_hash(&proof_key, challenge).as_bytes()
    }

    /// A new random key from the operating system's generator.
    ///
    /// # Errors
    /// [`Error::Io`] if the generator is unavailable.
    pub fn generate() -> Result<Key> {
        let mut key = Key([0; Key::LEN]);
        getrandom::fill(&mut key.0).map_err(|e| {
            Error::from(std::io::Error::other(format!(
                "the system random generator failed: {e}"
            )))
        })?;
        Ok(key)
    }

    /// A key from its base64 text (standard alphabet, padded; surrounding
    /// whitespace ignored): the form of `TOKENSTORE_KEY` and key files.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if the text is not base64 of 32 bytes. The
    /// message never repeats the text.
    pub fn from_base64(text: &str) -> Result<Key> {
        let bytes =
            Zeroizing::new(
                STANDARD
                    .decode(text.trim())
                    .map_err(|_| Error::InvalidKey {
                        reason:
                            "the key is not valid base64 (generate one with `tokenstore keygen`)"
                                .into(),
                    })?,
            );
        Self::from_slice(&bytes)
    }

    fn from_slice(bytes: &[u8]) -> Result<Key> {
        let array: [u8; Key::LEN] = bytes.try_into().map_err(|_| Error::InvalidKey {
            reason: format!("a key is {} bytes, this one is {}", Key::LEN, bytes.len()),
        })?;
        Ok(Key(array))
    }

    /// The key as base64 text. This is the secret itself: write it only
    /// where the key belongs.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Reads a key file: base64 text, or exactly 32 raw bytes. On Unix a
    /// file that its group or others may read or write is refused.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for a file with loose permissions or bad
    /// contents, [`Error::Io`] if it cannot be read.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Key> {
        let path = path.as_ref();
        let io = |e: std::io::Error| {
            Error::from(std::io::Error::new(
                e.kind(),
                format!("cannot read the key file {}: {e}", path.display()),
            ))
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(Error::InvalidKey {
                    reason: format!(
                        "the key file {} may be read or written by other users (mode {:o}); \
                         run `chmod 600 {}` first",
                        path.display(),
                        mode & 0o777,
                        path.display()
                    ),
                });
            }
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(io)?);
        if bytes.len() == Key::LEN {
            return Self::from_slice(&bytes);
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| Error::InvalidKey {
            reason: format!(
                "the key file {} holds neither 32 raw bytes nor base64 text",
                path.display()
            ),
        })?;
        Self::from_base64(text).map_err(|e| match e {
            Error::InvalidKey { reason } => Error::InvalidKey {
                reason: format!("key file {}: {reason}", path.display()),
            },
            other => other,
        })
    }

    pub(crate) fn bytes(&self) -> &[u8; Key::LEN] {
        &self.0
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_and_bad_text() {
        let key = Key::generate().unwrap();
        assert_eq!(
            Key::from_base64(&format!(" {}\n", key.to_base64())).unwrap(),
            key
        );
        assert!(matches!(
            Key::from_base64("not base64!"),
            Err(Error::InvalidKey { .. })
        ));
        let short = STANDARD.encode([1u8; 16]);
        let err = Key::from_base64(&short).unwrap_err().to_string();
        assert!(err.contains("a key is 32 bytes, this one is 16"), "{err}");
        assert!(!err.contains(&short));
    }

    #[test]
    fn two_generated_keys_differ() {
        assert_ne!(Key::generate().unwrap(), Key::generate().unwrap());
    }

    #[cfg(unix)]
    #[test]
    fn key_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = Key::generate().unwrap();
        std::fs::write(&path, key.to_base64()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = Key::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Key::from_file(&path).unwrap(), key);
        std::fs::write(&path, [7u8; 32]).unwrap();
        assert_eq!(Key::from_file(&path).unwrap(), Key::from_bytes([7; 32]));
    }
}
