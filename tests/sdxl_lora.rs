//! SDXL LoRA: parity with diffusers' `load_lora_weights` + `fuse_lora` on the
//! tiny SDXL (tools/make_sdxl_lora_fixture.py: the fused pipeline exported by
//! optimum and run by ORTStableDiffusionXLPipeline with its draws recorded).
//! The kohya file names the U-Net in SGM naming (`input_blocks_3_1_...`) and
//! the encoders `lora_te1_`/`lora_te2_`; the PEFT file the same tensors as
//! diffusers writes them. Both must give the golden; the plain model must not.
//!
//! Tolerances as tests/parity.rs: final latents max|Δ| ≤ 1e-3 × max|reference|,
//! decoded image max|Δ| ≤ 2e-3 absolute.
mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use kiln::pipeline::{Generation, GenerateRequest, Hooks, InitialNoise};
use kiln::{ErrorKind, Model, SchedulerKind};

fn lora_dir() -> PathBuf {
    common::root().join("tests/fixtures/sdxl-lora")
}

fn sdxl() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| Model::load_with(common::runtime(), &common::root().join("tests/fixtures/tiny-sdxl"), &common::lora_model_options()).expect("tiny SDXL loads"))
}

fn lycoris_dir() -> PathBuf {
    common::root().join("tests/fixtures/sdxl-lycoris")
}

fn lycoris_full_dir() -> PathBuf {
    common::root().join("tests/fixtures/sdxl-lycoris-full")
}

/// A case of tools/make_sdxl_lora_fixture.py, tools/make_sdxl_lycoris_fixture.py,
/// tools/make_sdxl_lycoris_full_fixture.py or tools/make_sdxl_lora_component_scale_golden.py,
/// with `dir`, the folder its files are in.
fn case(name: &str) -> serde_json::Value {
    let component = common::root().join("tests/fixtures/sdxl-lora-component");
    for dir in [lora_dir(), lycoris_dir(), lycoris_full_dir(), component] {
        let text = std::fs::read_to_string(dir.join("cases.json")).unwrap_or_else(|e| panic!("{}/cases.json: {e}", dir.display()));
        let all: serde_json::Value = serde_json::from_str(&text).unwrap();
        if let Some(c) = all.as_array().unwrap().iter().find(|c| c["name"] == name) {
            let mut c = c.clone();
            c["dir"] = dir.to_string_lossy().into_owned().into();
            return c;
        }
    }
    panic!("no case {name}")
}

fn case_dir(c: &serde_json::Value) -> PathBuf {
    PathBuf::from(c["dir"].as_str().expect("case() sets dir"))
}

/// Golden file `{name}.{what}.npy` of case `c`.
fn npy(c: &serde_json::Value, what: &str) -> Vec<f32> {
    let file = format!("{}.{what}.npy", c["name"].as_str().unwrap());
    kiln::image::npy::read_f32(&case_dir(c).join(file)).expect("golden file").1
}

fn text(c: &serde_json::Value, key: &str) -> String {
    c.get(key).and_then(|v| v.as_str()).unwrap_or("").to_string()
}

fn generate(model: &Model, c: &serde_json::Value) -> Generation {
    let request = GenerateRequest {
        prompt: text(c, "prompt"),
        negative_prompt: text(c, "negative_prompt"),
        prompt_2: text(c, "prompt_2"),
        width: 64,
        height: 64,
        steps: c["steps"].as_u64().unwrap() as usize,
        guidance_scale: c["guidance_scale"].as_f64().unwrap() as f32,
        scheduler: SchedulerKind::from_name(c["kiln_scheduler"].as_str().unwrap()).unwrap(),
        initial_noise: Some(InitialNoise { shape: [1, 4, 8, 8], data: npy(c, "draws") }),
        ..Default::default()
    };
    model.generate_with(&request, Hooks::default()).expect("generation succeeds")
}

/// (latents relative, image absolute) differences from the case's golden.
fn differences(out: &Generation, c: &serde_json::Value) -> (f64, f64) {
    let want = npy(c, "latents");
    let got: Vec<f32> = out.latents.iter().copied().collect();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let rel = common::max_abs_diff(&got, &want) / scale;
    let d = common::max_abs_diff(&out.image.data, &npy(c, "image"));
    (rel as f64, d as f64)
}

fn check(name: &str, file: &str) {
    let c = case(name);
    let scale = c["scale"].as_f64().unwrap() as f32;
    let model = sdxl().with_loras(&[(case_dir(&c).join(file), scale)]).expect("SDXL LoRA applies");
    let info = model.adapter_descriptions().join("; ");
    assert!(info.contains("text_encoder_2"), "both encoders adapted: {info}");
    // LyCORIS LoHa, LoKr and full files are merged even on a slotted model.
    common::check_lora_path(name, &model, !["loha", "lokr", "full"].iter().any(|k| file.contains(k)));
    let (te1, te2) = model.merged_initializers();
    eprintln!("{name} ({file}): {} U-Net and {} text-encoder weights merged; {info}", te1.len(), te2.len());
    let out = generate(&model, &c);
    let want_t: Vec<f64> = c["unet_timesteps"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(out.timesteps, want_t, "{name}: U-Net timesteps");
    let (rel, d) = differences(&out, &c);
    eprintln!("{name} ({file}): latents {rel:e} (bound 1e-3), image {d:e} (bound 2e-3)");
    let id = format!("sdxl_lora::{name}::{}", file.split('.').nth(1).unwrap());
    common::check_margin(&format!("{id}::latents_rel"), rel, 1e-3);
    common::check_margin(&format!("{id}::image_abs"), d, 2e-3);
}

#[test]
fn kohya_sgm_named_lora_matches_diffusers() {
    check("style_euler_s1", "style.kohya.safetensors");
}

#[test]
fn peft_lora_matches_diffusers() {
    check("style_euler_s1", "style.peft.safetensors");
}

#[test]
fn half_strength_lora_with_prompt_2_matches_diffusers() {
    check("style_ddim_s05", "style.kohya.safetensors");
}

/// LyCORIS files made by LyCORIS in the kohya SDXL layout (SGM U-Net names,
/// `lora_te1_`/`lora_te2_`; tools/make_sdxl_lycoris_fixture.py): a LoHa with
/// DoRA and Tucker cores on the resnet convs, and an f16 LoKr with a Tucker w2
/// at 0.7, against the weights LyCORIS's forward uses. The adapters move the
/// latents 0.08-0.10 and the LoHa's magnitudes alone 0.08 (cases.json).
#[test]
fn lycoris_sgm_named_loha_dora_and_lokr_match_lycoris() {
    check("loha_dora_euler", "sheen.loha.safetensors");
    check("lokr_ddim_s07", "knot.lokr.safetensors");
}

/// A LyCORIS full-difference file made by LyCORIS in the kohya SDXL layout
/// (tools/make_sdxl_lycoris_full_fixture.py: `diff` on SGM-named U-Net layers
/// and both encoders, `diff_b` on the 43 U-Net layers with a bias; f16), at 1.0
/// and, with `prompt_2`, at 0.7, against LyCORIS's `make_weight`. The same file
/// without its `diff_b` lands 0.055-0.064 away (cases.json).
#[test]
fn lycoris_full_difference_in_sgm_naming_matches_lycoris() {
    check("full_euler", "chisel.full.safetensors");
    check("full_ddim_s07", "chisel.full.safetensors");
    let c = case("full_euler");
    let model = sdxl().with_loras(&[(case_dir(&c).join("chisel.full.safetensors"), 1.0)]).unwrap();
    let biases = model.merged_initializers().0.iter().filter(|n| n.ends_with(".bias")).count();
    assert_eq!(biases, 43, "every U-Net diff_b merged");
}

/// A text-encoder strength of its own reaches both SDXL encoders, as
/// diffusers' `set_adapters(["a"], [{"unet": 1, "text_encoder": 0,
/// "text_encoder_2": 0}])` + `fuse_lora` (tools/make_sdxl_lora_component_scale_golden.py),
/// from the kohya and the PEFT file; the LoRA at one strength lands 0.046 away
/// (cases.json). At 0 neither encoder gets merged weights.
#[test]
fn a_text_encoder_strength_of_its_own_reaches_both_encoders_as_in_diffusers() {
    let c = case("style_te0_euler");
    for file_key in ["file", "peft_file"] {
        let spec = kiln::model::LoraSpec {
            text_encoder_scale: Some(c["text_encoder_scale"].as_f64().unwrap() as f32),
            ..kiln::model::LoraSpec::new(case_dir(&c).join(c[file_key].as_str().unwrap()), c["scale"].as_f64().unwrap() as f32)
        };
        let model = sdxl().with_adapters(&kiln::model::Adapters { loras: vec![spec], ..Default::default() }).expect("SDXL LoRA applies");
        let (unet, text) = model.merged_initializers();
        assert!(!unet.is_empty() && text.is_empty(), "{file_key}: U-Net merged, the encoders left alone");
        let (rel, d) = differences(&generate(&model, &c), &c);
        let layout = if file_key == "file" { "kohya" } else { "peft" };
        eprintln!("style_te0_euler ({layout}): latents {rel:e} (bound 1e-3), image {d:e} (bound 2e-3)");
        common::check_margin(&format!("sdxl_lora::style_te0_euler::{layout}::latents_rel"), rel, 1e-3);
        common::check_margin(&format!("sdxl_lora::style_te0_euler::{layout}::image_abs"), d, 2e-3);
    }
}

/// The control: without the LoRA the same draws land far from the golden, so
/// the parity tests above can fail.
#[test]
fn the_lora_changes_the_image() {
    let c = case("style_euler_s1");
    let (rel, d) = differences(&generate(sdxl(), &c), &c);
    eprintln!("plain model vs LoRA golden: latents {rel:e}, image {d:e} (parity bounds 1e-3 and 2e-3)");
    assert!(rel > 1e-2 && d > 2e-2, "the LoRA should move the output well past the bounds: latents {rel:e}, image {d:e}");
}

/// Only the second encoder adapted: the first encoder's session is shared with
/// the base model, and the output still changes (no stale cached embeddings).
#[test]
fn a_text_encoder_2_only_lora_changes_the_output() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-sdxl-lora-te2");
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(lora_dir().join("style.kohya.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> =
        st.tensors().into_iter().filter(|(k, _)| k.starts_with("lora_te2_")).collect();
    assert!(!kept.is_empty());
    let file = dir.join("te2_only.safetensors");
    safetensors::serialize_to_file(kept, meta.metadata().clone(), &file).unwrap();
    let c = case("style_euler_s1");
    let before = generate(sdxl(), &c);
    let model = sdxl().with_loras(&[(&file, 1.0)]).unwrap();
    let (unet, te) = model.merged_initializers();
    assert!(unet.is_empty() && te.is_empty(), "only text_encoder_2 merged: {unet:?} {te:?}");
    let after = generate(&model, &c);
    let moved = common::max_abs_diff(&before.image.data, &after.image.data);
    eprintln!("text_encoder_2-only LoRA moves the image by {moved:e}");
    assert!(moved > 1e-3, "a text_encoder_2 LoRA must change the image ({moved:e})");
    // And the base model is untouched by the view.
    let again = generate(sdxl(), &c);
    assert_eq!(before.image.data, again.image.data);
}

/// LoRAs and models of the other family are refused with AdapterMismatch.
#[test]
fn loras_for_the_other_family_are_refused() {
    let sd15 = common::tiny_model();
    let e = refused(sd15.with_loras(&[(lora_dir().join("style.kohya.safetensors"), 1.0)]));
    assert_eq!(e.kind(), ErrorKind::AdapterMismatch, "{}", e.message());
    assert!(e.message().contains("SDXL"), "{}", e.message());
    let e = refused(sdxl().with_loras(&[(common::root().join("tests/fixtures/lora/style.kohya.safetensors"), 1.0)]));
    assert_eq!(e.kind(), ErrorKind::AdapterMismatch, "{}", e.message());
    eprintln!("SD 1.5 LoRA on SDXL: {}", e.message());
    let e = sdxl().with_adapters(&kiln::model::Adapters {
        embeddings: vec![kiln::model::EmbeddingSpec {
            path: common::root().join("tests/fixtures/lora/learned_embeds.safetensors"),
            token: None,
        }],
        ..Default::default()
    });
    // An SD 1.x embedding on SDXL (tests/sdxl_embedding.rs covers SDXL embeddings).
    assert_eq!(refused(e).kind(), ErrorKind::AdapterMismatch);
}

fn refused(r: kiln::Result<Model>) -> kiln::Error {
    match r {
        Ok(_) => panic!("applied"),
        Err(e) => e,
    }
}
