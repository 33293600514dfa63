//! Random operation sequences on SledStore and MemoryStore side by side:
//! every answer and error kind must agree, and `check()` must be clean after
//! every step. The generator and the comparison are tests/support/ops.rs,
//! shared with the proptest that runs in `cargo test`.
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
