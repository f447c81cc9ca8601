//! Weighted prompts (AUTOMATIC1111 syntax, long prompts): Kiln's parse, chunks
//! and embeddings against the goldens of tools/make_prompt_golden.py (made with
//! the same text-encoder graph through onnxruntime), the plain mode unchanged,
//! syntax errors through the C API, and a long weighted prompt generated end to
//! end through the C API.
//!
//! Weighted embeddings run on the `te-bias` variant (tiny-sd with a realistic
//! final LayerNorm bias, tools/make_te_bias_variant.py): on tiny-sd's zero-bias
//! encoder the mean restoration divides rounding noise by rounding noise, so
//! Kiln refuses it there (tested below) instead of returning CPU-dependent noise.
mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use std::ffi::{c_char, CStr, CString};
use std::ptr;

use kiln::ffi::image::*;
use kiln::ffi::kiln_status;
use kiln::ffi::model::*;
use kiln::ffi::runtime::*;
use kiln::pipeline::PromptSyntax;
use kiln::tokenizer::weighting::{parse, Piece};
use kiln::Model;

/// The te-bias variant assembled once per process.
fn weighted_folder() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| common::variant_folder("te-bias"))
}

fn weighted_model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| Model::load(common::runtime(), weighted_folder()).expect("te-bias variant loads"))
}

/// Embeddings: max |Kiln − golden| allowed.
const TOL: f32 = 1e-4;

fn index() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(common::golden("prompts/index.json")).expect("run tools/make_prompt_golden.py");
    serde_json::from_str::<serde_json::Value>(&text).unwrap().as_array().unwrap().clone()
}

#[test]
fn goldens_cover_the_required_cases() {
    let idx = index();
    assert!(idx.len() >= 15, "{} golden prompts", idx.len());
    let has = |name: &str| idx.iter().any(|e| e["name"] == name);
    for name in ["plain", "round", "square", "explicit_up", "explicit_down", "nested", "escapes", "break", "long_150", "empty"] {
        assert!(has(name), "golden case {name}");
    }
}

#[test]
fn parse_and_chunks_match_the_reference() {
    let tok = common::tiny_model().tokenizer();
    for e in index() {
        let name = e["name"].as_str().unwrap();
        let prompt = e["prompt"].as_str().unwrap();
        let pieces = parse(prompt).unwrap_or_else(|err| panic!("{name}: {err}"));
        let want = e["pieces"].as_array().unwrap();
        assert_eq!(pieces.len(), want.len(), "{name}: pieces {pieces:?} vs {want:?}");
        for (got, want) in pieces.iter().zip(want) {
            match got {
                Piece::Break => assert_eq!(want, "BREAK", "{name}"),
                Piece::Text { text, weight } => {
                    assert_eq!(text, want[0].as_str().unwrap(), "{name}");
                    let w = want[1].as_f64().unwrap();
                    assert!((weight - w).abs() <= 1e-12 * w.abs().max(1.0), "{name}: weight {weight} vs {w}");
                }
            }
        }
        let chunks = tok.weighted_chunks(prompt).unwrap();
        let want = e["chunks"].as_array().unwrap();
        assert_eq!(chunks.len(), want.len(), "{name}: chunk count");
        for (k, (got, want)) in chunks.iter().zip(want).enumerate() {
            let ids: Vec<i64> = want["ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
            assert_eq!(got.ids, ids, "{name}: chunk {k} ids");
            let ws: Vec<f32> = want["weights"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            assert_eq!(got.weights, ws, "{name}: chunk {k} weights");
        }
    }
}

#[test]
fn weighted_embeddings_match_the_goldens() {
    let m = weighted_model();
    let mut worst = (0.0f32, String::new());
    for e in index() {
        let name = e["name"].as_str().unwrap();
        let prompt = e["prompt"].as_str().unwrap();
        let (shape, want) = common::read_npy(&format!("prompts/{}", e["file"].as_str().unwrap()));
        let got = m.encode_prompt_as(prompt, PromptSyntax::Weighted).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(got.shape(), &shape[..], "{name}: shape");
        let got: Vec<f32> = got.iter().copied().collect();
        let d = common::max_abs_diff(&got, &want);
        common::check_margin(&format!("prompts::{name}::embeds_abs"), d as f64, TOL as f64);
        if d > worst.0 {
            worst = (d, name.to_string());
        }
    }
    eprintln!("worst: {:.2e} ({})", worst.0, worst.1);
}

#[test]
fn plain_mode_is_unchanged_and_the_cache_keeps_modes_apart() {
    let m = common::tiny_model();
    let w = weighted_model();
    let (_, want) = common::read_npy("ddim_cfg.cond_embeds.npy");
    let plain = m.encode_prompt_as("mossy stone brick wall", PromptSyntax::Plain).unwrap();
    let plain: Vec<f32> = plain.iter().copied().collect();
    let d = common::max_abs_diff(&plain, &want);
    common::check_margin("prompts::plain_mode::embeds_abs", d as f64, TOL as f64);
    let default: Vec<f32> = m.encode_prompt("mossy stone brick wall").unwrap().iter().copied().collect();
    assert_eq!(plain, default, "encode_prompt is the plain mode");
    // Without any syntax in it, a short prompt encodes the same either way (SD 1.x pads with EOS).
    let weighted: Vec<f32> = m.encode_prompt_as("mossy stone brick wall", PromptSyntax::Weighted).unwrap().iter().copied().collect();
    assert_eq!(weighted, plain);

    // Same text, other mode: a different cache entry with a different result.
    let p = "a (mossy:1.5) wall";
    let a = w.encode_prompt_as(p, PromptSyntax::Plain).unwrap();
    let b = w.encode_prompt_as(p, PromptSyntax::Weighted).unwrap();
    assert_ne!(a, b);
    let (hits, _) = w.embedding_cache_stats();
    assert_eq!(w.encode_prompt_as(p, PromptSyntax::Plain).unwrap(), a);
    assert_eq!(w.encode_prompt_as(p, PromptSyntax::Weighted).unwrap(), b);
    assert!(w.embedding_cache_stats().0 >= hits + 2, "both modes are cached");
    // Plain mode truncates at 77 tokens; weighted keeps everything.
    let long = index().into_iter().find(|e| e["name"] == "long_150").unwrap();
    let long = long["prompt"].as_str().unwrap();
    assert_eq!(w.encode_prompt_as(long, PromptSyntax::Plain).unwrap().shape(), &[1, 77, 32]);
    assert_eq!(w.encode_prompt_as(long, PromptSyntax::Weighted).unwrap().shape(), &[1, 154, 32]);
}

/// tiny-sd's zero-bias encoder makes A1111's mean restoration ill-conditioned
/// (mean 2e-10 of the magnitude): a weighted prompt is refused with a message
/// that says why, and the same model still serves plain and unweighted prompts.
#[test]
fn an_ill_conditioned_mean_restoration_is_refused_not_amplified() {
    let m = common::tiny_model();
    let e = m.encode_prompt_as("a (mossy) stone wall", PromptSyntax::Weighted).unwrap_err();
    assert_eq!(e.kind(), kiln::ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("rounding noise"), "{e}");
    assert!(m.encode_prompt_as("a (mossy) stone wall", PromptSyntax::Plain).is_ok());
    assert!(m.encode_prompt_as("mossy stone wall", PromptSyntax::Weighted).is_ok(), "all weights 1: no restoration");
}

// --- the C API -----------------------------------------------------------------------------

fn last_error() -> String {
    let mut buf = vec![0 as c_char; 4096];
    unsafe { kiln::ffi::kiln_last_error_message(buf.as_mut_ptr(), buf.len(), ptr::null_mut()) };
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

fn c_model() -> (*mut kiln_runtime, *mut kiln_model) {
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok, "{}", last_error());
    let dir = CString::new(weighted_folder().to_str().unwrap()).unwrap();
    let mut m = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_load(rt, dir.as_ptr(), &mut m) }, kiln_status::Ok, "{}", last_error());
    (rt, m)
}

fn options(prompt: &CStr, weighting: u32) -> kiln_generate_options {
    let mut o = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut o) };
    assert_eq!(o.prompt_weighting, 0, "plain is the default");
    o.prompt = prompt.as_ptr();
    o.prompt_weighting = weighting;
    o.steps = 2;
    o
}

#[test]
fn bad_syntax_is_an_invalid_argument_naming_the_column() {
    let (rt, m) = c_model();
    let cases = [
        ("a (mossy:x) wall", "column 9"),
        ("a (mossy:) wall", "column 9"),
        ("a (mossy wall", "column 3"),
        ("a mossy) wall", "column 8"),
        ("a [mossy wall", "column 3"),
        ("(a] b", "column 3"),
        ("[stone:moss:0.5]", "prompt editing"),
        ("(stone BREAK moss)", "column 8"),
    ];
    for (prompt, expect) in cases {
        let p = CString::new(prompt).unwrap();
        let mut img = ptr::null_mut();
        let s = unsafe { kiln_model_generate(m, &options(&p, 1), &mut img) };
        let msg = last_error();
        assert_eq!(s, kiln_status::InvalidArgument, "{prompt:?}: {msg}");
        assert!(img.is_null());
        assert!(msg.contains("prompt syntax error") && msg.contains(expect), "{prompt:?}: {msg}");
    }
    // The negative prompt is read the same way.
    let p = CString::new("stone").unwrap();
    let n = CString::new("(blurry").unwrap();
    let mut o = options(&p, 1);
    o.negative_prompt = n.as_ptr();
    let mut img = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_generate(m, &o, &mut img) }, kiln_status::InvalidArgument);
    assert!(last_error().contains("column 1"), "{}", last_error());
    // Unknown mode.
    let o = options(&p, 7);
    assert_eq!(unsafe { kiln_model_generate(m, &o, &mut img) }, kiln_status::InvalidArgument);
    assert!(last_error().contains("prompt_weighting 7"), "{}", last_error());
    // Plain mode reads the same text literally and succeeds.
    let p = CString::new("a (mossy:x) wall").unwrap();
    assert_eq!(unsafe { kiln_model_generate(m, &options(&p, 0), &mut img) }, kiln_status::Ok, "{}", last_error());
    unsafe { kiln_image_free(img) };
    unsafe { kiln_model_free(m) };
    unsafe { kiln_runtime_destroy(rt) };
}

#[test]
fn long_weighted_prompt_generates_end_to_end_through_the_c_api() {
    let (rt, m) = c_model();
    let long = index().into_iter().find(|e| e["name"] == "long_weighted").unwrap();
    let long = long["prompt"].as_str().unwrap().to_string();
    // 3 chunks for the prompt, 1 for the negative: the U-Net gets [2, 231, 32]
    // (negative padded with empty-prompt chunks) in one batch-2 call.
    assert_eq!(weighted_model().encode_prompt_as(&long, PromptSyntax::Weighted).unwrap().shape(), &[1, 231, 32]);
    let p = CString::new(long).unwrap();
    let n = CString::new("(blurry:1.3), [text]").unwrap();
    let mut o = options(&p, 1);
    o.negative_prompt = n.as_ptr();
    o.steps = 3;
    o.seed = 9;
    let mut pixels = vec![0u8; 64 * 64 * 4];
    let s = unsafe { kiln_model_generate_into(m, &o, pixels.as_mut_ptr(), pixels.len(), 0) };
    assert_eq!(s, kiln_status::Ok, "{}", last_error());
    assert!(pixels.chunks(4).all(|px| px[3] == 255), "RGBA8, alpha 255");
    let mut img = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_generate(m, &o, &mut img) }, kiln_status::Ok, "{}", last_error());
    assert_eq!((unsafe { kiln_image_width(img) }, unsafe { kiln_image_height(img) }), (64, 64));
    let same = unsafe { std::slice::from_raw_parts(kiln_image_pixels(img), 64 * 64 * 4) };
    assert_eq!(same, &pixels[..], "deterministic");
    unsafe { kiln_image_free(img) };
    // The weighting changes the picture: the same text read plainly gives another image.
    o.prompt_weighting = 0;
    let mut plain = vec![0u8; 64 * 64 * 4];
    assert_eq!(unsafe { kiln_model_generate_into(m, &o, plain.as_mut_ptr(), plain.len(), 0) }, kiln_status::Ok);
    assert_ne!(plain, pixels);
    // Guidance off: the prompt alone, [1, 231, 32].
    o.prompt_weighting = 1;
    o.guidance_scale = 1.0;
    assert_eq!(unsafe { kiln_model_generate_into(m, &o, plain.as_mut_ptr(), plain.len(), 0) }, kiln_status::Ok, "{}", last_error());
    unsafe { kiln_model_free(m) };
    unsafe { kiln_runtime_destroy(rt) };
}
