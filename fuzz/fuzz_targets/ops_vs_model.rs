//! Random operation sequences on SledStore and MemoryStore side by side:
//! every answer and error kind must agree, and `check()` must be clean after
//! every step. The generator and the comparison are tests/support/ops.rs,
//! shared with the proptest that runs in `cargo test`.
//!
//! Run it with leak detection off (`-detect_leaks=0` and
//! `ASAN_OPTIONS=detect_leaks=0`, as `fuzz/smoke.sh` does): sled 0.34's IO
//! thread pool spawns detached threads on demand that end on their own after
//! the store is gone, and one ending during LeakSanitizer's check is reported
//! as a leak of its thread-local destructors (`__cxa_thread_atexit_impl`)
//! that no input reproduces. See fuzz/README.md, "Leak detection".
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/ops.rs"]
mod ops;

fuzz_target!(|input: (bool, Vec<ops::Op>)| {
    let (buffered, ops) = input;
    if ops.len() > 128 {
        return;
    }
    ops::Pair::new(buffered).run(&ops);
});
