//! Kiln's ONNX protobuf reader and its graph rewrites (seamless tiling, int8
//! quantization, attention fusion, LoRA slots) on mutated graphs. The first byte picks the wrapped
//! axes; the rest is a model file. Properties: a parsed message re-serializes
//! to bytes that parse to the same bytes again; a rewritten model parses, and
//! rewriting it again with the same axes changes no further convolution; a
//! quantized model parses and has no float matrix product left to quantize; a
//! model with fused attention parses and has no attention left to fuse; a
//! model given LoRA slots parses, declares factor inputs the feeding code
//! takes, and is not slotted twice.
#![no_main]
use kiln::model::attention;
use kiln::model::quantize::quantize_int8;
use kiln::model::seamless::{make_seamless, Seamless};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&axes, model)) = data.split_first() else { return };
    if let Ok(bytes) = kiln::fuzzing::onnx_reader(model) {
        let again = kiln::fuzzing::onnx_reader(&bytes).expect("Kiln's own output parses");
        assert_eq!(again, bytes, "re-serialization is stable");
    }
    let axes = [Seamless::X, Seamless::Y, Seamless::Xy][axes as usize % 3];
    if let Ok((rewritten, _report)) = make_seamless(model, axes) {
        kiln::fuzzing::onnx_reader(&rewritten).expect("the rewritten model parses");
        let (_, second) = make_seamless(&rewritten, axes).expect("a rewritten model rewrites again");
        assert_eq!(second.convs_rewritten, 0, "the rewrite leaves no padded convolution on a wrapped axis");
    }
    // External weights are looked up in a folder that does not exist: a
    // reference to one is an error, never a read elsewhere.
    let nowhere = std::path::Path::new("/nonexistent/kiln-fuzz");
    if let Ok((quantized, _report)) = quantize_int8(model, nowhere) {
        kiln::fuzzing::onnx_reader(&quantized).expect("the quantized model parses");
        let (_, second) = quantize_int8(&quantized, nowhere).expect("a quantized model quantizes again");
        assert_eq!((second.matmuls, second.gemms), (0, 0), "no float matrix product is left");
    }
    if let Err(e) = kiln::fuzzing::lora_slots(model) {
        assert_ne!(e.kind(), kiln::ErrorKind::Internal, "{}", e.message());
    }
    if let Ok((Some(fused), report)) = attention::fuse(model) {
        assert!(report.fused > 0 && report.fused <= report.softmaxes, "{report:?}");
        kiln::fuzzing::onnx_reader(&fused).expect("the fused model parses");
        let (again, second) = attention::fuse(&fused).expect("a fused model is read again");
        assert!(again.is_none() && second.fused == 0, "no attention is left to fuse");
    }
});
