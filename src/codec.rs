//! The record encoding shared by every backend: the one place bytes are produced and read.
//!
//! - record value, plain store: `[1] ++ bincode(RecordV1)` (standard
//!   config: varint integers, no field names). `RecordV1` is this module's
//!   own type, not the public [`OAuthToken`]: bincode encodes fields by
//!   position, so the stored layout must not follow the public struct. A
//!   new stored field means a `RecordV2` under new version bytes, with
//!   `RecordV1` still decoded. The id is encoded too and checked against
//!   the tree key on decode, so a value copied under the wrong key is
//!   detected.
//! - record value, encrypted store: `[2] ++ nonce (12 bytes) ++
//!   AES-256-GCM(bincode(OAuthToken))`, a fresh random nonce per write, the
//!   record id bound as associated data (a sealed record moved to another id
//!   fails authentication). AES-256-GCM rather than XChaCha20-Poly1305: on
//!   ~450-byte records with AES-NI and PCLMULQDQ it decrypts in ~0.7 µs
//!   against ~2.7 µs (Poly1305's per-message setup dominates short
//!   messages), and a lookup decrypts one record. Random 96-bit nonces are
//!   safe for 2^32 seals per key (NIST SP 800-38D); the store counts them
//!   (see `SEALS_PER_KEY`).
//! - index key: 16 bytes of the BLAKE3 hash of the field value (plain), or of
//!   the BLAKE3 hash keyed with a subkey of the master key (encrypted), so
//!   index trees hold no raw token and keys have a fixed size.
//! - index value: `bincode(Vec<String>)`, the ids of the records whose value
//!   has this digest (one in practice; several only on a digest collision,
//!   which readers resolve by comparing the record's value).

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::path::Path;

use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::key::Key;
use crate::token::OAuthToken;

/// The stored layout of a record, version 1 (the fields in this order;
/// bincode writes no names). Encoded from a borrowed [`OAuthToken`].
#[derive(Serialize)]
struct RecordV1Ref<'a> {
    id: &'a Option<String>,
    user_name: &'a Option<String>,
    client_id: &'a Option<String>,
    client_secret: &'a Option<String>,
    refresh_token: &'a Option<String>,
    access_token: &'a Option<String>,
    grant_token: &'a Option<String>,
    expiry_time: &'a Option<i64>,
    redirect_url: &'a Option<String>,
    api_domain: &'a Option<String>,
}

/// [`RecordV1Ref`], decoded.
#[derive(Deserialize)]
struct RecordV1 {
    id: Option<String>,
    user_name: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    access_token: Option<String>,
    grant_token: Option<String>,
    expiry_time: Option<i64>,
    redirect_url: Option<String>,
    api_domain: Option<String>,
}

impl<'a> From<&'a OAuthToken> for RecordV1Ref<'a> {
    fn from(t: &'a OAuthToken) -> Self {
        RecordV1Ref {
            id: &t.id,
            user_name: &t.user_name,
            client_id: &t.client_id,
            client_secret: &t.client_secret,
            refresh_token: &t.refresh_token,
            access_token: &t.access_token,
            grant_token: &t.grant_token,
            expiry_time: &t.expiry_time,
            redirect_url: &t.redirect_url,
            api_domain: &t.api_domain,
        }
    }
}

impl From<RecordV1> for OAuthToken {
    fn from(r: RecordV1) -> Self {
        let mut token = OAuthToken::new();
        token.id = r.id;
        token.user_name = r.user_name;
        token.client_id = r.client_id;
        token.client_secret = r.client_secret;
        token.refresh_token = r.refresh_token;
        token.access_token = r.access_token;
        token.grant_token = r.grant_token;
        token.expiry_time = r.expiry_time;
        token.redirect_url = r.redirect_url;
        token.api_domain = r.api_domain;
        token
    }
}

/// Fails with the same error [`Sealing::encode`] would when `token` is too
/// large to be stored: checked while a write is planned, so that one such
/// token fails its own save and not the others combined with it.
pub(crate) fn check_encodable(token: &OAuthToken) -> Result<()> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(RecordV1Ref::from(token), &mut size, config())
        .map_err(|e| Error::invalid(format!("the token cannot be encoded: {e}")))?;
    check_size(size.bytes_written)
}

fn check_size(body_len: usize) -> Result<()> {
    if body_len + 1 > MAX_RECORD_BYTES {
        return Err(Error::invalid(format!(
            "the token takes {} bytes encoded, more than the {MAX_RECORD_BYTES} a record may hold",
            body_len + 1
        )));
    }
    Ok(())
}

/// The format version of a plain store, and the first byte of its records.
pub(crate) const PLAIN_VERSION: u8 = 1;
/// The format version of an encrypted store, and the first byte of its
/// (sealed) records.
pub(crate) const SEALED_VERSION: u8 = 2;

/// The largest encoded record accepted; a larger length prefix in stored bytes
/// is corruption, and decoding never allocates more than this.
pub(crate) const MAX_RECORD_BYTES: usize = 16 << 20;

/// The size of an index key.
pub(crate) const DIGEST_LEN: usize = 16;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// How many records one key may seal: with random 96-bit nonces, the
/// chance that two seals share a nonce stays below 2^-32 up to 2^32 seals
/// (NIST SP 800-38D, 8.3). Past it, writes fail until the key is changed.
pub(crate) const SEALS_PER_KEY: u64 = 1 << 32;

/// Domain separation for the subkeys derived from a master key.
const RECORD_KEY_CONTEXT: &str = "tokenstore 2026-11 record sealing key v2 (AES-256-GCM)";
const INDEX_KEY_CONTEXT: &str = "tokenstore 2026-11 index digest key v1";
const KEY_CHECK_CONTEXT: &str = "tokenstore 2026-11 key check value v1";

thread_local! {
    /// Where this thread decrypts records; holds plaintext only while one
    /// is decoded.
    static DECRYPTED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

type Config = Configuration<LittleEndian, Varint, Limit<MAX_RECORD_BYTES>>;

fn config() -> Config {
    bincode::config::standard().with_limit::<MAX_RECORD_BYTES>()
}

/// How a store's records and index keys are protected.
pub(crate) enum Sealing {
    Plain,
    Sealed(Box<Sealed>),
}

pub(crate) struct Sealed {
    cipher: Aes256Gcm,
    index_key: Zeroizing<[u8; 32]>,
    check: [u8; 32],
    /// How many seals the key allows ([`SEALS_PER_KEY`]; lowered by tests).
    budget: u64,
}

/// The records of a write set as their engine stores them.
pub(crate) struct EncodedWrites {
    /// Each touched id with its encoded next record (`None`: deleted), in
    /// the write set's order.
    pub records: Vec<Option<Vec<u8>>>,
    /// How many seals the store's key has made once these are written.
    pub sealed: u64,
}

impl Sealing {
    pub fn new(key: Option<&Key>) -> Sealing {
        match key {
            None => Sealing::Plain,
            Some(key) => {
                let record_key =
                    Zeroizing::new(blake3::derive_key(RECORD_KEY_CONTEXT, key.bytes()));
                Sealing::Sealed(Box::new(Sealed {
                    cipher: Aes256Gcm::new(record_key.as_ref().into()),
                    index_key: Zeroizing::new(blake3::derive_key(INDEX_KEY_CONTEXT, key.bytes())),
                    check: key_check_value(key),
                    budget: SEALS_PER_KEY,
                }))
            }
        }
    }

    /// The store format version: plain or encrypted.
    pub fn format_version(&self) -> u8 {
        match self {
            Sealing::Plain => PLAIN_VERSION,
            Sealing::Sealed(_) => SEALED_VERSION,
        }
    }

    /// The key check value kept in the metadata of an encrypted store.
    pub fn key_check(&self) -> Option<&[u8; 32]> {
        match self {
            Sealing::Plain => None,
            Sealing::Sealed(sealed) => Some(&sealed.check),
        }
    }

    /// Checks a store's recorded format (1 plain, 2 sealed) and key check
    /// value against this sealing: the one place a plain store opened with
    /// a key, a sealed one opened without (or with another key), and a
    /// format this build does not know are told apart, for every backend.
    /// `location` names the store in the error.
    pub fn check_stored(
        &self,
        format: u32,
        key_check: Option<&[u8]>,
        location: &Path,
    ) -> Result<()> {
        let path = || location.to_path_buf();
        match (format, self.key_check()) {
            (f, None) if f == u32::from(PLAIN_VERSION) => Ok(()),
            (f, Some(_)) if f == u32::from(PLAIN_VERSION) => {
                Err(Error::NotEncrypted { path: path() })
            }
            (f, None) if f == u32::from(SEALED_VERSION) => Err(Error::KeyRequired { path: path() }),
            (f, Some(expected)) if f == u32::from(SEALED_VERSION) => match key_check {
                Some(stored) if stored == expected.as_slice() => Ok(()),
                Some(_) => Err(Error::WrongKey { path: path() }),
                None => Err(Error::corruption(
                    None,
                    "the store is encrypted but its key check value is missing",
                )),
            },
            (found, _) => Err(Error::UnsupportedVersion {
                found,
                supported: u32::from(SEALED_VERSION),
            }),
        }
    }

    /// The index key of a unique value.
    pub fn digest(&self, value: &str) -> [u8; DIGEST_LEN] {
        let hash = match self {
            Sealing::Plain => blake3::hash(value.as_bytes()),
            Sealing::Sealed(sealed) => blake3::keyed_hash(&sealed.index_key, value.as_bytes()),
        };
        let mut key = [0u8; DIGEST_LEN];
        key.copy_from_slice(&hash.as_bytes()[..DIGEST_LEN]);
        key
    }

    /// Lowers the key's seal budget (tests of what happens past it).
    #[cfg(test)]
    pub fn set_seal_budget(&mut self, budget: u64) {
        if let Sealing::Sealed(sealed) = self {
            sealed.budget = budget;
        }
    }

    /// Encodes the next records of a write set (`None`: deleted), in its
    /// order: the one way records are encoded for writing, in every backend. `sealed` is how many seals
    /// the store's key has made before (the engine keeps the count, and
    /// stores [`EncodedWrites::sealed`] in the same transaction as the
    /// records); past the key's budget nothing is encoded and the error is
    /// [`Error::RekeyRequired`] (`location` names the store in it).
    pub fn encode_writes<'a>(
        &self,
        next: impl Iterator<Item = Option<&'a OAuthToken>> + Clone,
        sealed: u64,
        location: &Path,
    ) -> Result<EncodedWrites> {
        let stored = next.clone().flatten().count() as u64;
        let sealed = match self {
            Sealing::Plain => sealed,
            Sealing::Sealed(key) => {
                let after = sealed.saturating_add(stored);
                if after > key.budget {
                    return Err(Error::RekeyRequired {
                        path: location.to_path_buf(),
                    });
                }
                after
            }
        };
        let records = next
            .map(|next| next.map(|record| self.encode(record)).transpose())
            .collect::<Result<_>>()?;
        Ok(EncodedWrites { records, sealed })
    }

    /// Whether this store's seals count against a budget (encrypted).
    pub fn counts_seals(&self) -> bool {
        matches!(self, Sealing::Sealed(_))
    }

    /// Encodes a normalized record whose id is set. Seals are not counted
    /// here: writers go through [`encode_writes`](Self::encode_writes).
    pub(crate) fn encode(&self, token: &OAuthToken) -> Result<Vec<u8>> {
        let body = Zeroizing::new(
            bincode::serde::encode_to_vec(RecordV1Ref::from(token), config())
                .map_err(|e| Error::invalid(format!("the token cannot be encoded: {e}")))?,
        );
        check_size(body.len())?;
        match self {
            Sealing::Plain => {
                let mut bytes = Vec::with_capacity(1 + body.len());
                bytes.push(PLAIN_VERSION);
                bytes.extend_from_slice(&body);
                Ok(bytes)
            }
            Sealing::Sealed(sealed) => {
                let id = token.id.as_deref().unwrap_or_default();
                let mut nonce = [0u8; NONCE_LEN];
                getrandom::fill(&mut nonce).map_err(|e| {
                    Error::from(std::io::Error::other(format!(
                        "the system random generator failed: {e}"
                    )))
                })?;
                let sealed_body = sealed
                    .cipher
                    .encrypt(
                        Nonce::from_slice(&nonce),
                        Payload {
                            msg: &body,
                            aad: id.as_bytes(),
                        },
                    )
                    .map_err(|_| Error::invalid("the token cannot be encrypted"))?;
                let mut bytes = Vec::with_capacity(1 + NONCE_LEN + sealed_body.len());
                bytes.push(SEALED_VERSION);
                bytes.extend_from_slice(&nonce);
                bytes.extend_from_slice(&sealed_body);
                Ok(bytes)
            }
        }
    }

    /// Decodes the record stored under `id`, or says why it cannot be
    /// trusted.
    pub fn decode(&self, id: &str, bytes: &[u8]) -> Result<OAuthToken> {
        let corrupt = |detail: String| Error::corruption(Some(id), detail);
        let (&version, rest) = bytes
            .split_first()
            .ok_or_else(|| corrupt("the record is empty".into()))?;
        match (self, version) {
            (Sealing::Plain, PLAIN_VERSION) => decode_body(id, rest),
            (Sealing::Sealed(sealed), SEALED_VERSION) => {
                if rest.len() < NONCE_LEN + TAG_LEN {
                    return Err(corrupt("the sealed record is truncated".into()));
                }
                let (nonce, sealed_body) = rest.split_at(NONCE_LEN);
                let (ciphertext, tag) = sealed_body.split_at(sealed_body.len() - TAG_LEN);
                // Decrypted in a buffer reused by this thread (no allocation
                // per lookup), wiped as soon as the record is decoded.
                DECRYPTED.with_borrow_mut(|buffer| {
                    buffer.clear();
                    buffer.extend_from_slice(ciphertext);
                    let opened = sealed.cipher.decrypt_in_place_detached(
                        Nonce::from_slice(nonce),
                        id.as_bytes(),
                        buffer,
                        Tag::from_slice(tag),
                    );
                    let decoded = match opened {
                        Ok(()) => decode_body(id, buffer),
                        Err(_) => Err(corrupt(
                            "the sealed record fails authentication: it was altered, \
                             or moved from another id"
                                .into(),
                        )),
                    };
                    buffer.as_mut_slice().zeroize();
                    decoded
                })
            }
            (Sealing::Plain, SEALED_VERSION) => Err(corrupt(
                "the record is sealed, but the store is not encrypted".into(),
            )),
            (Sealing::Sealed(_), PLAIN_VERSION) => Err(corrupt(
                "the record is in plaintext, but the store is encrypted".into(),
            )),
            (_, other) => Err(corrupt(format!(
                "the record has format version byte {other}, expected {}",
                self.format_version()
            ))),
        }
    }
}

/// The key check value of `key`: a one-way derivation that tells the right
/// key from a wrong one and reveals nothing about it.
pub(crate) fn key_check_value(key: &Key) -> [u8; 32] {
    blake3::derive_key(KEY_CHECK_CONTEXT, key.bytes())
}

fn decode_body(id: &str, body: &[u8]) -> Result<OAuthToken> {
    let corrupt = |detail: String| Error::corruption(Some(id), detail);
    let (record, used): (RecordV1, usize) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| corrupt(format!("the record cannot be decoded: {e}")))?;
    let token = OAuthToken::from(record);
    if used != body.len() {
        return Err(corrupt(format!(
            "{} trailing bytes after the record",
            body.len() - used
        )));
    }
    if token.id.as_deref() != Some(id) {
        return Err(corrupt(
            "the record's own id differs from the key it is stored under".into(),
        ));
    }
    if !token.is_normalized() {
        return Err(corrupt(
            "the record holds an empty string, which is never stored".into(),
        ));
    }
    Ok(token)
}

/// Encodes a plain record (the fuzz targets' entry point).
#[cfg(any(test, feature = "fuzzing"))]
pub fn encode_record(token: &OAuthToken) -> Result<Vec<u8>> {
    Sealing::Plain.encode(token)
}

/// Decodes a plain record (the fuzz targets' entry point).
#[cfg(any(test, feature = "fuzzing"))]
pub fn decode_record(id: &str, bytes: &[u8]) -> Result<OAuthToken> {
    Sealing::Plain.decode(id, bytes)
}

/// Encodes the id list of an index entry.
pub(crate) fn encode_ids(ids: &[String]) -> Vec<u8> {
    // Ids are strings a record already held, far below the limit.
    bincode::serde::encode_to_vec(ids, config()).expect("an id list always encodes")
}

/// Decodes the id list of an index entry.
pub fn decode_ids(bytes: &[u8]) -> Result<Vec<String>> {
    let (ids, used): (Vec<String>, usize) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| Error::corruption(None, format!("an index entry cannot be decoded: {e}")))?;
    if used != bytes.len() || ids.is_empty() {
        return Err(Error::corruption(None, "an index entry is malformed"));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> OAuthToken {
        OAuthToken::new()
            .with_id("42")
            .with_user_name("o'brien@example.com")
            .with_refresh_token("1000.r")
            .with_expiry_time(-5)
    }

    #[test]
    fn record_round_trips() {
        let bytes = encode_record(&sample()).unwrap();
        assert_eq!(bytes[0], PLAIN_VERSION);
        assert_eq!(decode_record("42", &bytes).unwrap(), sample());
    }

    #[test]
    fn every_truncation_and_trailing_byte_is_corruption() {
        let bytes = encode_record(&sample()).unwrap();
        for len in 0..bytes.len() {
            assert!(matches!(
                decode_record("42", &bytes[..len]),
                Err(Error::Corruption { .. })
            ));
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode_record("42", &longer),
            Err(Error::Corruption { .. })
        ));
    }

    #[test]
    fn a_record_under_another_key_is_corruption() {
        let bytes = encode_record(&sample()).unwrap();
        let err = decode_record("43", &bytes).unwrap_err();
        assert!(err.to_string().contains("\"43\""), "{err}");
    }

    #[test]
    fn a_huge_length_prefix_does_not_allocate() {
        // version, id tag Some, then a string length of u64::MAX (varint 0xFF + 8 bytes)
        let mut bytes = vec![PLAIN_VERSION, 1, 0xFF];
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode_record("1", &bytes),
            Err(Error::Corruption { .. })
        ));
    }

    fn sealing() -> Sealing {
        Sealing::new(Some(&Key::from_bytes([9; 32])))
    }

    #[test]
    fn sealed_records_round_trip_with_fresh_nonces() {
        let sealing = sealing();
        let a = sealing.encode(&sample()).unwrap();
        let b = sealing.encode(&sample()).unwrap();
        assert_eq!(a[0], SEALED_VERSION);
        assert_ne!(a, b, "two seals of one record must differ (fresh nonce)");
        assert_eq!(sealing.decode("42", &a).unwrap(), sample());
        assert_eq!(sealing.decode("42", &b).unwrap(), sample());
    }

    #[test]
    fn every_flipped_bit_of_a_sealed_record_is_corruption() {
        let sealing = sealing();
        let bytes = sealing.encode(&sample()).unwrap();
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[at] ^= 1 << bit;
                assert!(
                    matches!(
                        sealing.decode("42", &damaged),
                        Err(Error::Corruption { .. })
                    ),
                    "byte {at} bit {bit}"
                );
            }
        }
        for len in 0..bytes.len() {
            assert!(sealing.decode("42", &bytes[..len]).is_err());
        }
    }

    #[test]
    fn a_sealed_record_is_bound_to_its_id_and_key() {
        let sealing = sealing();
        let bytes = sealing.encode(&sample()).unwrap();
        let err = sealing.decode("43", &bytes).unwrap_err().to_string();
        assert!(err.contains("fails authentication"), "{err}");
        let other = Sealing::new(Some(&Key::from_bytes([8; 32])));
        assert!(other.decode("42", &bytes).is_err());
        assert!(Sealing::Plain.decode("42", &bytes).is_err());
        let plain = Sealing::Plain.encode(&sample()).unwrap();
        assert!(sealing.decode("42", &plain).is_err());
    }

    #[test]
    fn keyed_digests_depend_on_the_key() {
        let a = sealing();
        let b = Sealing::new(Some(&Key::from_bytes([8; 32])));
        assert_ne!(a.digest("1000.r"), Sealing::Plain.digest("1000.r"));
        assert_ne!(a.digest("1000.r"), b.digest("1000.r"));
        assert_eq!(a.digest("1000.r"), sealing().digest("1000.r"));
    }

    #[test]
    fn id_lists_round_trip_and_reject_garbage() {
        let ids = vec!["1".to_string(), "abc".to_string()];
        assert_eq!(decode_ids(&encode_ids(&ids)).unwrap(), ids);
        assert!(decode_ids(&encode_ids(&[])).is_err());
        assert!(decode_ids(&[0xFF, 0xFF]).is_err());
    }
}
