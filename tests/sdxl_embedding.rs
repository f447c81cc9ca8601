//! SDXL textual inversion: parity with diffusers on the tiny SDXL
//! (tools/make_sdxl_embedding_fixture.py). The embedding file has the common
//! SDXL layout, `clip_l` `[2, 8]` and `clip_g` `[2, 16]`; diffusers loads it
//! with `load_textual_inversion` once per encoder (text_encoder + tokenizer,
//! text_encoder_2 + tokenizer_2), optimum exports that pipeline and
//! ORTStableDiffusionXLPipeline runs it with its draws recorded.
//!
//! Tolerances as tests/parity.rs: final latents max|Δ| ≤ 1e-3 × max|reference|,
//! decoded image max|Δ| ≤ 2e-3 absolute.
mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use kiln::model::{Adapters, EmbeddingSpec};
use kiln::pipeline::{GenerateRequest, Generation, Hooks, InitialNoise};
use kiln::{ErrorKind, Model, SchedulerKind};

fn dir() -> PathBuf {
    common::root().join("tests/fixtures/sdxl-embedding")
}

fn sdxl() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| Model::load(common::runtime(), &common::root().join("tests/fixtures/tiny-sdxl")).expect("tiny SDXL loads"))
}

fn case() -> serde_json::Value {
    let text = std::fs::read_to_string(dir().join("cases.json")).expect("tests/fixtures/sdxl-embedding/cases.json");
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    all[0].clone()
}

fn npy(name: &str) -> Vec<f32> {
    kiln::image::npy::read_f32(&dir().join(name)).expect("golden file").1
}

fn embedding(c: &serde_json::Value) -> Adapters {
    Adapters {
        embeddings: vec![EmbeddingSpec { path: dir().join(c["file"].as_str().unwrap()), token: Some(c["token"].as_str().unwrap().into()) }],
        ..Default::default()
    }
}

fn request(c: &serde_json::Value, prompt: &str) -> GenerateRequest {
    GenerateRequest {
        prompt: prompt.to_string(),
        negative_prompt: c["negative_prompt"].as_str().unwrap().to_string(),
        width: 64,
        height: 64,
        steps: c["steps"].as_u64().unwrap() as usize,
        guidance_scale: c["guidance_scale"].as_f64().unwrap() as f32,
        scheduler: SchedulerKind::from_name(c["kiln_scheduler"].as_str().unwrap()).unwrap(),
        initial_noise: Some(InitialNoise { shape: [1, 4, 8, 8], data: npy(&format!("{}.draws.npy", c["name"].as_str().unwrap())) }),
        ..Default::default()
    }
}

fn generate(model: &Model, c: &serde_json::Value, prompt: &str) -> Generation {
    model.generate_with(&request(c, prompt), Hooks::default()).expect("generation succeeds")
}

/// (latents relative, image absolute) differences from the golden.
fn differences(out: &Generation, c: &serde_json::Value) -> (f64, f64) {
    let name = c["name"].as_str().unwrap();
    let want = npy(&format!("{name}.latents.npy"));
    let got: Vec<f32> = out.latents.iter().copied().collect();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let rel = common::max_abs_diff(&got, &want) / scale;
    let d = common::max_abs_diff(&out.image.data, &npy(&format!("{name}.image.npy")));
    (rel as f64, d as f64)
}

fn ids(c: &serde_json::Value, which: &str) -> Vec<i64> {
    c["input_ids"][which].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect()
}

#[test]
fn sdxl_embedding_in_both_encoders_matches_diffusers() {
    let c = case();
    let prompt = c["prompt"].as_str().unwrap();
    let m = sdxl().with_adapters(&embedding(&c)).expect("SDXL embedding applies");
    // Both tokenizers know the token, expanded to its two vectors as diffusers does.
    let first = m.tokenizer().encode(prompt).unwrap();
    let second = m.tokenizer_2().expect("tokenizer_2").encode(prompt).unwrap();
    assert_eq!(first[..8], ids(&c, "tokenizer")[..], "tokenizer ids as diffusers'");
    assert_eq!(second[..8], ids(&c, "tokenizer_2")[..], "tokenizer_2 ids as diffusers'");
    let (_, te) = m.merged_initializers();
    eprintln!("merged text-encoder weights: {te:?}; {}", m.adapter_descriptions().join("; "));
    let out = generate(&m, &c, prompt);
    let want_t: Vec<f64> = c["unet_timesteps"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(out.timesteps, want_t, "U-Net timesteps");
    let (rel, d) = differences(&out, &c);
    eprintln!("SDXL embedding: latents {rel:e} (bound 1e-3), image {d:e} (bound 2e-3)");
    common::check_margin("sdxl_embedding::xl_embedding_euler::latents_rel", rel, 1e-3);
    common::check_margin("sdxl_embedding::xl_embedding_euler::image_abs", d, 2e-3);
    // Switched off: both tokenizers lose the token and the output is the plain model's.
    let off = m.with_adapters(&Adapters::default()).unwrap();
    let plain_ids = sdxl().tokenizer().encode(prompt).unwrap();
    assert_eq!(off.tokenizer().encode(prompt).unwrap(), plain_ids);
    assert_eq!(off.tokenizer_2().unwrap().encode(prompt).unwrap(), sdxl().tokenizer_2().unwrap().encode(prompt).unwrap());
    assert!(plain_ids.iter().all(|&id| id < 49408));
    let moved = common::max_abs_diff(&generate(&off, &c, prompt).image.data, &generate(sdxl(), &c, prompt).image.data);
    eprintln!("switched off vs plain model: image {moved:e}");
    assert!(moved <= 1e-6, "switched-off model differs from the plain one by {moved:e}");
}

/// The controls: the same draws without the embedding (plain model, same
/// prompt read as text; or the prompt without the token), and the embedding
/// with its `clip_g` half zeroed, all land far from the golden, so the parity
/// test above can fail and checks both encoders' vectors.
#[test]
fn the_embedding_and_each_of_its_halves_change_the_result() {
    let c = case();
    let prompt = c["prompt"].as_str().unwrap();
    let (rel, d) = differences(&generate(sdxl(), &c, prompt), &c);
    eprintln!("plain model, same prompt, vs golden: latents {rel:e}, image {d:e} (parity bounds 1e-3 and 2e-3)");
    assert!(rel > 1e-2 && d > 1e-2, "the embedding should move the output well past the bounds: latents {rel:e}, image {d:e}");
    let m = sdxl().with_adapters(&embedding(&c)).unwrap();
    let (rel, d) = differences(&generate(&m, &c, c["plain_prompt"].as_str().unwrap()), &c);
    eprintln!("embedded model, prompt without the token, vs golden: latents {rel:e}, image {d:e}");
    assert!(rel > 1e-2 && d > 1e-2, "the token should move the output well past the bounds: latents {rel:e}, image {d:e}");
    for (half, zeroed) in [("clip_l", "clip_g"), ("clip_g", "clip_l")] {
        let file = with_zeroed(zeroed);
        let m = sdxl()
            .with_adapters(&Adapters {
                embeddings: vec![EmbeddingSpec { path: file, token: Some(c["token"].as_str().unwrap().into()) }],
                ..Default::default()
            })
            .unwrap();
        let (rel, d) = differences(&generate(&m, &c, prompt), &c);
        eprintln!("only `{half}` kept ({zeroed} zeroed) vs golden: latents {rel:e}, image {d:e}");
        // The first encoder is 8 wide against the second's 16, so its half moves less (5.6e-3 measured).
        assert!(rel > 3e-3, "`{zeroed}` should matter past the 1e-3 bound: latents {rel:e}");
    }
}

/// A copy of the fixture's embedding with tensor `zeroed` set to zeros.
fn with_zeroed(zeroed: &str) -> PathBuf {
    let bytes = std::fs::read(dir().join("xl-brick.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let d = if k == zeroed { vec![0u8; v.data().len()] } else { v.data().to_vec() };
            (k, v.shape().to_vec(), d)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(k, s, d)| (k.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap()))
        .collect();
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kiln-sdxl-embedding-{zeroed}-zeroed.safetensors"));
    safetensors::serialize_to_file(views, None, &out).unwrap();
    out
}

/// SD 1.x embeddings on SDXL and SDXL embeddings on SD 1.x: ADAPTER_MISMATCH
/// naming the family, the model unchanged.
#[test]
fn embeddings_for_the_other_family_are_refused() {
    let c = case();
    let sd1 = Adapters {
        embeddings: vec![EmbeddingSpec { path: common::root().join("tests/fixtures/lora/learned_embeds.safetensors"), token: None }],
        ..Default::default()
    };
    let e = sdxl().with_adapters(&sd1).err().expect("SD 1.x embedding on SDXL refused");
    eprintln!("SD 1.x embedding on SDXL: {}", e.message());
    assert_eq!(e.kind(), ErrorKind::AdapterMismatch, "{}", e.message());
    assert!(e.message().contains("SDXL") && e.message().contains("clip_g"), "{}", e.message());
    let e = common::tiny_model().with_adapters(&embedding(&c)).err().expect("SDXL embedding on SD 1.x refused");
    eprintln!("SDXL embedding on SD 1.x: {}", e.message());
    assert_eq!(e.kind(), ErrorKind::AdapterMismatch, "{}", e.message());
    assert!(e.message().contains("SDXL embedding"), "{}", e.message());
    // A full-size SDXL embedding (768 / 1280 wide) on the tiny SDXL (8 / 16): the widths differ.
    let wide = write_tensors("wide-xl.safetensors", &[("clip_l", vec![1, 768]), ("clip_g", vec![1, 1280])]);
    let e = sdxl()
        .with_adapters(&Adapters { embeddings: vec![EmbeddingSpec { path: wide, token: None }], ..Default::default() })
        .err()
        .expect("other widths refused");
    eprintln!("768/1280-wide embedding on the tiny SDXL: {}", e.message());
    assert_eq!(e.kind(), ErrorKind::AdapterMismatch, "{}", e.message());
    assert!(e.message().contains("SDXL `clip_") && e.message().contains("another architecture"), "{}", e.message());
    assert!(sdxl().tokenizer().encode(c["prompt"].as_str().unwrap()).unwrap().iter().all(|&id| id < 49408));
}

/// A `.safetensors` of zero-filled f32 tensors in the test's temp folder.
fn write_tensors(name: &str, tensors: &[(&str, Vec<usize>)]) -> PathBuf {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> =
        tensors.iter().map(|(k, s)| (k.to_string(), s.clone(), vec![0u8; 4 * s.iter().product::<usize>()])).collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(k, s, d)| (k.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap()))
        .collect();
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    safetensors::serialize_to_file(views, None, &out).unwrap();
    out
}

/// The C route: `kiln_model_with_adapters` on an SDXL handle, generating with
/// the golden's draws through `initial_noise`; the RGBA8 image is the golden's
/// rounded to 8 bits (within one level), and the other family is
/// ADAPTER_MISMATCH with a NULL out-handle.
#[test]
fn c_api_applies_an_sdxl_embedding() {
    use kiln::ffi::lora::*;
    use kiln::ffi::model::*;
    use kiln::ffi::{kiln_status, runtime::*};
    use std::ffi::CString;
    use std::ptr;
    let c = case();
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok);
    let model_dir = CString::new(common::root().join("tests/fixtures/tiny-sdxl").to_str().unwrap()).unwrap();
    let mut base = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_load(rt, model_dir.as_ptr(), &mut base) }, kiln_status::Ok);
    let file = CString::new(dir().join(c["file"].as_str().unwrap()).to_str().unwrap()).unwrap();
    let token = CString::new(c["token"].as_str().unwrap()).unwrap();
    let mut e = unsafe { std::mem::zeroed::<kiln_embedding>() };
    unsafe { kiln_embedding_init(&mut e) };
    e.path = file.as_ptr();
    e.token = token.as_ptr();
    let mut embedded = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_with_adapters(base, ptr::null(), 0, &e, 1, &mut embedded) }, kiln_status::Ok);
    let r = request(&c, "");
    let noise = r.initial_noise.as_ref().unwrap().data.clone();
    let prompt = CString::new(c["prompt"].as_str().unwrap()).unwrap();
    let negative = CString::new(c["negative_prompt"].as_str().unwrap()).unwrap();
    let mut o = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut o) };
    o.prompt = prompt.as_ptr();
    o.negative_prompt = negative.as_ptr();
    o.width = 64;
    o.height = 64;
    o.steps = r.steps as u32;
    o.guidance_scale = r.guidance_scale;
    o.scheduler = kiln_scheduler::Euler as u32;
    o.initial_noise = noise.as_ptr();
    o.initial_noise_len = noise.len();
    let mut rgba = vec![0u8; 64 * 64 * 4];
    assert_eq!(unsafe { kiln_model_generate_into(embedded, &o, rgba.as_mut_ptr(), rgba.len(), 0) }, kiln_status::Ok);
    let golden = npy(&format!("{}.image.npy", c["name"].as_str().unwrap()));
    let mut worst = 0i32;
    for (i, px) in rgba.chunks_exact(4).enumerate() {
        for ch in 0..3 {
            let want = (golden[i * 3 + ch] * 255.0).round() as i32;
            worst = worst.max((px[ch] as i32 - want).abs());
        }
    }
    eprintln!("C route: RGBA8 vs golden image rounded to 8 bits: max {worst} level(s) (bound 1)");
    assert!(worst <= 1, "C route image off the golden by {worst} levels");
    // An SD 1.x embedding on this SDXL handle.
    let sd1 = CString::new(common::root().join("tests/fixtures/lora/learned_embeds.safetensors").to_str().unwrap()).unwrap();
    e.path = sd1.as_ptr();
    e.token = ptr::null();
    let mut refused = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_with_adapters(base, ptr::null(), 0, &e, 1, &mut refused) }, kiln_status::AdapterMismatch);
    assert!(refused.is_null());
    unsafe { kiln_model_free(embedded) };
    unsafe { kiln_model_free(base) };
    unsafe { kiln_runtime_destroy(rt) };
}
