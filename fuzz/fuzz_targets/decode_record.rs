//! Arbitrary bytes through the record and index-entry decoders: an error or a
//! value, never a panic, never an allocation beyond the codec's limit (run
//! with libFuzzer's -rss_limit_mb / -malloc_limit_mb to enforce it). A
//! decoded record must survive an encode/decode round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenstore::fuzzing::{decode_ids, decode_record, encode_record};

fuzz_target!(|input: (&str, &[u8])| {
    let (id, bytes) = input;
    if let Ok(token) = decode_record(id, bytes) {
        assert_eq!(token.id.as_deref(), Some(id));
        assert!(token.is_normalized());
        let again = encode_record(&token).expect("a decoded record encodes");
        assert_eq!(decode_record(id, &again).expect("re-decodes"), token);
    }
    if let Ok(ids) = decode_ids(bytes) {
        assert!(!ids.is_empty());
    }
});
