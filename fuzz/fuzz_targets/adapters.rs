//! LoRA and textual-inversion `.safetensors` files, the adapters users bring
//! from model hubs: parsed as Kiln parses them, each LoRA module's delta
//! merged into weights shaped as it claims (and refused by one that is not),
//! and each embedding's vectors checked for consistent widths. Any bytes must
//! give a result or a status; an `INTERNAL` status is a bug.
#![no_main]
use kiln::error::ErrorKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = kiln::fuzzing::lora_file(data) {
        assert_ne!(e.kind(), ErrorKind::Internal, "{}", e.message());
    }
    for token in [None, Some("<tok>")] {
        if let Err(e) = kiln::fuzzing::embedding_file(data, token) {
            assert_ne!(e.kind(), ErrorKind::Internal, "{}", e.message());
        }
    }
});
