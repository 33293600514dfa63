//! The sled engine against the in-memory model: random operation sequences
//! (the generator of the `ops_vs_model` fuzz target) run on both, every answer
//! compared and `check()` clean after every step.

mod support {
    pub mod ops;
}

use arbitrary::{Arbitrary, Unstructured};
use proptest::prelude::*;
use support::ops::{Op, Pair};

fn ops_from(bytes: &[u8]) -> Vec<Op> {
    let mut input = Unstructured::new(bytes);
    // Up to 64 ops; whatever the bytes cannot fill ends the sequence.
    (0..64)
        .map_while(|_| Op::arbitrary(&mut input).ok())
        .collect()
}

proptest! {
    // Bounded so CI stays fast; the fuzz target runs the same model unbounded.
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn durable_sled_agrees_with_the_model(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        Pair::new(false).run(&ops_from(&bytes));
    }

    #[test]
    fn encrypted_sled_agrees_with_the_model(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        let key = tokenstore::Key::from_bytes([7; 32]);
        Pair::with_options(tokenstore::Options::default().encryption(key)).run(&ops_from(&bytes));
    }

    #[test]
    fn buffered_sled_agrees_with_the_model(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        Pair::new(true).run(&ops_from(&bytes));
    }
}
