//! The on-disk encoding: the one place bytes are produced and read.
//!
//! - record value: `[FORMAT_VERSION] ++ bincode(OAuthToken)` (standard config:
//!   varint integers, no field names). The id is encoded too and checked
//!   against the tree key on decode, so a value copied under the wrong key is
//!   detected.
//! - index key: the first 16 bytes of the BLAKE3 hash of the field value, so
//!   index trees hold no raw token and keys have a fixed size.
//! - index value: `bincode(Vec<String>)`, the ids of the records whose value
//!   has this digest (one in practice; several only on a digest collision,
//!   which readers resolve by comparing the record's value).

use bincode::config::{Configuration, Limit, LittleEndian, Varint};

use crate::error::{Error, Result};
use crate::token::OAuthToken;

/// The on-disk format version this build reads and writes.
pub(crate) const FORMAT_VERSION: u8 = 1;

/// The largest encoded record accepted; a larger length prefix in stored bytes
/// is corruption, and decoding never allocates more than this.
pub(crate) const MAX_RECORD_BYTES: usize = 16 << 20;

/// The size of an index key.
pub(crate) const DIGEST_LEN: usize = 16;

type Codec = Configuration<LittleEndian, Varint, Limit<MAX_RECORD_BYTES>>;

fn config() -> Codec {
    bincode::config::standard().with_limit::<MAX_RECORD_BYTES>()
}

/// The index key of a unique value.
pub(crate) fn digest(value: &str) -> [u8; DIGEST_LEN] {
    let hash = blake3::hash(value.as_bytes());
    let mut key = [0u8; DIGEST_LEN];
    key.copy_from_slice(&hash.as_bytes()[..DIGEST_LEN]);
    key
}

/// Encodes a normalized record whose id is set.
pub fn encode_record(token: &OAuthToken) -> Result<Vec<u8>> {
    let mut bytes = vec![FORMAT_VERSION];
    bincode::serde::encode_into_std_write(token, &mut bytes, config())
        .map_err(|e| Error::invalid(format!("the token cannot be encoded: {e}")))?;
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(Error::invalid(format!(
            "the token takes {} bytes encoded, more than the {MAX_RECORD_BYTES} a record may hold",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// Decodes the record stored under `id`, or says why it cannot be trusted.
pub fn decode_record(id: &str, bytes: &[u8]) -> Result<OAuthToken> {
    let corrupt = |detail: String| Error::corruption(Some(id), detail);
    let (&version, body) = bytes
        .split_first()
        .ok_or_else(|| corrupt("the record is empty".into()))?;
    if version != FORMAT_VERSION {
        return Err(corrupt(format!(
            "the record has format version byte {version}, expected {FORMAT_VERSION}"
        )));
    }
    let (token, used): (OAuthToken, usize) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| corrupt(format!("the record cannot be decoded: {e}")))?;
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
        assert_eq!(bytes[0], FORMAT_VERSION);
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
        let mut bytes = vec![FORMAT_VERSION, 1, 0xFF];
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode_record("1", &bytes),
            Err(Error::Corruption { .. })
        ));
    }

    #[test]
    fn id_lists_round_trip_and_reject_garbage() {
        let ids = vec!["1".to_string(), "abc".to_string()];
        assert_eq!(decode_ids(&encode_ids(&ids)).unwrap(), ids);
        assert!(decode_ids(&encode_ids(&[])).is_err());
        assert!(decode_ids(&[0xFF, 0xFF]).is_err());
    }
}
