//! The prompt path: A1111 weighting parser, then the CLIP tokenizer (plain
//! and weighted chunks) of the tiny fixture. Any UTF-8 text must give a
//! result or an error, never a panic, and results must keep their shape.
#![no_main]
use std::sync::LazyLock;

use kiln::tokenizer::{weighting, ClipTokenizer};
use libfuzzer_sys::fuzz_target;

static TOKENIZER: LazyLock<ClipTokenizer> = LazyLock::new(|| {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-sd/tokenizer");
    ClipTokenizer::from_dir(&dir, 77).expect("the fixture's tokenizer loads")
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let tok = &*TOKENIZER;
    if let Ok(pieces) = weighting::parse(text) {
        for p in &pieces {
            if let weighting::Piece::Text { weight, .. } = p {
                assert!(!weight.is_nan(), "NaN weight from {text:?}");
            }
        }
    }
    if let Ok(ids) = tok.encode(text) {
        assert_eq!(ids.len(), tok.max_len(), "encode pads to the sequence length");
    }
    if let Ok(chunks) = tok.weighted_chunks(text) {
        assert!(!chunks.is_empty(), "at least one chunk");
        for c in &chunks {
            assert_eq!(c.ids.len(), tok.max_len());
            assert_eq!(c.weights.len(), c.ids.len());
        }
    }
    let _ = tok.count_tokens(text);
});
