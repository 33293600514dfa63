//! Arbitrary bytes through the shared store's wire decoder, read as an
//! owner reads a client's stream of frames (docs/SPEC.md §8): an error or
//! a message, never a panic and never an allocation beyond the frame limit
//! (run with libFuzzer's -rss_limit_mb / -malloc_limit_mb to enforce it);
//! every message that decodes re-encodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    tokenstore::fuzzing::fuzz_frames(bytes);
});
