//! LoRA adapters: parity with diffusers' `load_lora_weights` + `fuse_lora`
//! (goldens by tools/make_lora_fixture.py), both file layouts, stacking,
//! switching, views, external-data exports (and what a switch reads from
//! them), and every bad file giving its own status.
//!
//! Tolerances as tests/parity.rs: final latents max|Δ| ≤ 1e-3 × max|reference|,
//! decoded image max|Δ| ≤ 2e-3 absolute.
mod common;

use std::path::PathBuf;

use kiln::model::{Adapters, LoraSpec};
use kiln::pipeline::{GenerateRequest, Hooks};
use kiln::{ErrorKind, Model};

fn lora_dir() -> PathBuf {
    common::root().join("tests/fixtures/lora")
}

fn lycoris_dir() -> PathBuf {
    common::root().join("tests/fixtures/lycoris")
}

fn dora_dir() -> PathBuf {
    common::root().join("tests/fixtures/dora")
}

fn lycoris_native_dir() -> PathBuf {
    common::root().join("tests/fixtures/lycoris_native")
}

fn lycoris_full_dir() -> PathBuf {
    common::root().join("tests/fixtures/lycoris_full")
}

fn lora_component_dir() -> PathBuf {
    common::root().join("tests/fixtures/lora_component")
}

/// The cases of tools/make_lora_fixture.py, tools/make_lycoris_fixture.py,
/// tools/make_dora_fixture.py, tools/make_lycoris_native_fixture.py and
/// tools/make_lycoris_full_fixture.py and tools/make_lora_component_scale_golden.py,
/// each with `dir`, the folder its files are in.
fn cases() -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for dir in [lora_dir(), lycoris_dir(), dora_dir(), lycoris_native_dir(), lycoris_full_dir(), lora_component_dir()] {
        let text = std::fs::read_to_string(dir.join("cases.json")).unwrap_or_else(|e| panic!("{}/cases.json: {e}", dir.display()));
        for mut c in serde_json::from_str::<serde_json::Value>(&text).unwrap().as_array().unwrap().clone() {
            c["dir"] = dir.to_string_lossy().into_owned().into();
            all.push(c);
        }
    }
    all
}

fn case_dir(c: &serde_json::Value) -> PathBuf {
    PathBuf::from(c["dir"].as_str().expect("cases() sets dir"))
}

fn npy_in(dir: &std::path::Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    kiln::image::npy::read_f32(&dir.join(name)).expect("golden file")
}

fn request(c: &serde_json::Value) -> GenerateRequest {
    common::lora_case_request(&case_dir(c), c)
}

/// Runs case `name` on `model` and compares with the golden; returns (latents rel, image abs).
fn check(model: &Model, name: &str, label: &str) -> (f32, f32) {
    let c = cases().into_iter().find(|c| c["name"] == name).expect("case in cases.json");
    let out = model.generate_with(&request(&c), Hooks::default()).expect("generation succeeds");
    let want_t: Vec<f64> = c["unet_timestep_feed"]["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(out.timesteps, want_t, "{name}: U-Net timesteps");
    let (_, want_latents) = npy_in(&case_dir(&c), c["files"]["latents"].as_str().unwrap());
    let got: Vec<f32> = out.latents.iter().copied().collect();
    let scale = want_latents.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let rel = common::max_abs_diff(&got, &want_latents) / scale;
    let (_, want_image) = npy_in(&case_dir(&c), c["files"]["image"].as_str().unwrap());
    let d = common::max_abs_diff(&out.image.data, &want_image);
    eprintln!(
        "{name} ({label}): latents rel {rel:e} (bound 1e-3), image abs {d:e} (bound 2e-3); the LoRA itself moves the latents by {:e}",
        c["latent_effect"].as_f64().unwrap()
    );
    let id = format!("lora::{name}::{}", label.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
    common::check_margin(&format!("{id}::latents_rel"), rel as f64, 1e-3);
    common::check_margin(&format!("{id}::image_abs"), d as f64, 2e-3);
    (rel, d)
}

/// The model with a case's LoRAs, from the kohya files or, where there is one, the PEFT file.
fn with_case_loras(base: &Model, name: &str, peft: bool) -> Model {
    let c = cases().into_iter().find(|c| c["name"] == name).unwrap();
    let loras: Vec<LoraSpec> = c["loras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let file = if peft { l["peft_file"].as_str().expect("case has a PEFT file") } else { l["file"].as_str().unwrap() };
            LoraSpec { text_encoder_scale: l["text_encoder_scale"].as_f64().map(|t| t as f32), ..LoraSpec::new(case_dir(&c).join(file), l["scale"].as_f64().unwrap() as f32) }
        })
        .collect();
    base.with_adapters(&Adapters { loras, ..Default::default() }).expect("LoRA applies")
}

#[test]
fn kohya_lora_matches_diffusers_for_two_schedulers_and_two_scales() {
    let base = common::tiny_model();
    for name in ["style_ddim_s1", "style_euler_s1", "style_ddim_s05", "style_euler_s05"] {
        check(&with_case_loras(base, name, false), name, "kohya");
    }
}

#[test]
fn peft_lora_matches_diffusers_for_two_schedulers_and_two_scales() {
    let base = common::tiny_model();
    for name in ["style_ddim_s1", "style_euler_s1", "style_ddim_s05", "style_euler_s05"] {
        check(&with_case_loras(base, name, true), name, "peft");
    }
}

#[test]
fn two_stacked_loras_with_their_own_scales_match_diffusers() {
    check(&with_case_loras(common::tiny_model(), "stack_ddim", false), "stack_ddim", "kohya x2");
}

#[test]
fn lcm_shaped_lora_on_every_unet_layer_matches_diffusers() {
    let m = with_case_loras(common::tiny_model(), "lcm_shaped", false);
    let (unet, text) = m.merged_initializers();
    eprintln!("lcm_shaped: {} U-Net initializers merged, {} text-encoder", unet.len(), text.len());
    assert!(text.is_empty());
    check(&m, "lcm_shaped", "kohya, resnets + time embedding + samplers");
}

/// LyCORIS LoHa (f32) and LoKr (f16 file) on attention, feed-forward,
/// projections, a 3x3 conv and the text encoder, against PEFT's own deltas in
/// the reference pipeline (tools/make_lycoris_fixture.py); then both stacked
/// with a plain LoRA, one of them negative.
#[test]
fn lycoris_loha_and_lokr_match_the_reference_alone_and_stacked_with_a_lora() {
    check_adapting_both_graphs(&[("loha_ddim", "LoHa"), ("lokr_euler", "LoKr f16 x0.8"), ("mixed_ddim", "LoHa + LoKr x-0.7 + LoRA")]);
}

/// Each (case, label) with its kohya-layout files: both the U-Net and the
/// text encoder must come out merged, then the golden is checked.
fn check_adapting_both_graphs(cases: &[(&str, &str)]) {
    let base = common::tiny_model();
    for &(name, label) in cases {
        let m = with_case_loras(base, name, false);
        let (unet, text) = m.merged_initializers();
        assert!(!unet.is_empty() && !text.is_empty(), "{name}: both graphs adapted");
        check(&m, name, label);
    }
}

/// DoRA: diffusers' `load_lora_weights` + `fuse_lora` of the PEFT file
/// (tools/make_dora_fixture.py) at strength 1 and 0.5 and after a plain
/// LoRA; the kohya twin (`dora_scale`, which diffusers drops for SD 1.x)
/// at strength 1, where A1111/ComfyUI's interpolation and diffusers agree.
/// The same A and B without the magnitude are 0.12-0.20 away (in cases.json).
#[test]
fn dora_matches_diffusers_and_its_kohya_twin_matches_at_full_strength() {
    let base = common::tiny_model();
    for name in ["dora_ddim_s1", "dora_euler_s05", "lora_then_dora_ddim"] {
        check(&with_case_loras(base, name, true), name, "peft DoRA");
    }
    check(&with_case_loras(base, "dora_ddim_s1", false), "dora_ddim_s1", "kohya DoRA");
}

/// Files made by LyCORIS itself with Tucker cores on every 3x3 resnet conv
/// (LoCon `lora_mid` in f32, LoHa `hada_t1/t2` and LoKr `lokr_t2` in f16),
/// against the weights LyCORIS's own forward uses
/// (tools/make_lycoris_native_fixture.py); then all three stacked, one
/// negative.
#[test]
fn lycoris_tucker_cores_match_lycoris_alone_and_stacked() {
    check_adapting_both_graphs(&[
        ("locon_tucker_ddim", "LoCon lora_mid x0.8"),
        ("loha_tucker_euler", "LoHa hada_t f16"),
        ("lokr_tucker_ddim", "LoKr lokr_t2 f16"),
        ("tucker_mixed_euler", "LoCon x0.5 + LoHa x-0.6 + LoKr x0.7"),
    ]);
}

/// DoRA on LoHa and LoKr (LyCORIS `weight_decompose`) and DoRA with a
/// magnitude per input channel (`wd_on_out = False`), made by LyCORIS and
/// checked against its forward at strength 1; the same factors without the
/// magnitude are 0.14-0.22 away (in cases.json), so a lost or misapplied
/// magnitude fails.
#[test]
fn lycoris_dora_on_loha_lokr_and_per_input_channel_match_lycoris() {
    let base = common::tiny_model();
    for (name, label) in [("loha_dora_ddim", "LoHa + DoRA, Tucker convs"), ("lokr_dora_euler", "LoKr + DoRA"), ("dora_per_input_ddim", "LoCon + DoRA per input channel")] {
        check(&with_case_loras(base, name, false), name, label);
    }
}

/// LyCORIS full differences (`algo=full`, f16), made by LyCORIS on the
/// U-Net's attention, feed-forward, resnet convs, `conv_in` and time
/// embedding (MatMul + Add, Conv and Gemm layers, each with its `diff_b`)
/// and on the text encoder's Linears, against LyCORIS's own merged weights
/// (tools/make_lycoris_full_fixture.py): at strength 1 and 0.6, and at -0.5
/// stacked with a LoCon on the same layers. The same files without their
/// bias differences are 0.04-0.06 away (in cases.json), so a lost or
/// misplaced `diff_b` fails.
#[test]
fn lycoris_full_differences_match_lycoris_with_their_biases() {
    check_adapting_both_graphs(&[("full_euler", "full diff f16"), ("full_ddim_s06", "full diff x0.6"), ("full_locon_ddim", "full x-0.5 + LoCon x0.8")]);
    let m = with_case_loras(common::tiny_model(), "full_euler", false);
    let (unet, _) = m.merged_initializers();
    let biases: Vec<&&str> = unet.iter().filter(|n| n.ends_with(".bias")).collect();
    eprintln!("full_euler: {} U-Net initializers merged, {} of them biases", unet.len(), biases.len());
    for layer in ["conv_in.bias", "time_embedding.linear_1.bias", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.bias", "mid_block.resnets.0.conv1.bias"] {
        assert!(unet.contains(&layer), "{layer} merged (a Conv, Gemm, MatMul + Add and resnet bias): {biases:?}");
    }
}

/// A LoRA with its own text-encoder strength (ComfyUI's `strength_clip`)
/// against diffusers' `set_adapters(..., [{"unet": s, "text_encoder": t}])`
/// and `fuse_lora` (tools/make_lora_component_scale_golden.py), both file
/// layouts: U-Net 1.0 with the text encoder left alone, and U-Net 0.5 with the
/// text encoder at 1.5. The same LoRA at one strength lands 0.09-0.10 away (in
/// cases.json). At text-encoder strength 0 the view shares the base's text
/// encoder session (nothing merged there).
#[test]
fn a_text_encoder_strength_of_its_own_matches_diffusers() {
    let base = common::tiny_model();
    for name in ["style_te0_ddim", "style_te15_euler"] {
        for peft in [false, true] {
            let m = with_case_loras(base, name, peft);
            check(&m, name, if peft { "peft" } else { "kohya" });
            let (unet, text) = m.merged_initializers();
            assert!(!unet.is_empty(), "{name}: U-Net merged");
            assert_eq!(text.is_empty(), name == "style_te0_ddim", "{name}: text-encoder weights merged only at a strength other than 0");
        }
    }
    let m = with_case_loras(base, "style_te0_ddim", false);
    assert_eq!(m.adapters().loras[0].text_encoder_scale, Some(0.0));
    assert!(m.adapter_descriptions().iter().any(|d| d.contains("scale 1, text encoders 0")), "{:?}", m.adapter_descriptions());
    let nan = LoraSpec { text_encoder_scale: Some(f32::NAN), ..LoraSpec::new(lora_dir().join("style.kohya.safetensors"), 1.0) };
    let e = base.with_adapters(&Adapters { loras: vec![nan], ..Default::default() }).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{}", e.message());
    assert!(e.message().contains("text-encoder scale NaN"), "{}", e.message());
}

/// `diff_b` Kiln cannot apply: a bias the export shares between layers (the
/// tiny text encoder's zero biases, deduplicated into one tensor), and a
/// bias difference with no weight difference; each refused with its status,
/// and the model still generates.
#[test]
fn full_differences_kiln_cannot_apply_are_refused() {
    let broken = lycoris_full_dir().join("broken");
    expect_error(broken.join("shared_bias.safetensors"), ErrorKind::Unsupported, &["text_encoder", "its bias", "is shared by", "cannot be changed for one of them"]);
    expect_error(broken.join("bias_only.safetensors"), ErrorKind::Unsupported, &["bias difference without a weight difference", "diff_b"]);
    let c = cases().into_iter().find(|c| c["name"] == "full_euler").unwrap();
    common::tiny_model().generate_with(&request(&c), Hooks::default()).expect("base model still usable");
}

/// LyCORIS files Kiln cannot apply: each refused with its own status and a
/// message naming the problem, and the model still generates afterwards.
#[test]
fn bad_lycoris_files_give_specific_errors() {
    for (file, kind, words) in [
        ("loha_tucker.safetensors", ErrorKind::AdapterMismatch, &["rank mismatch", "Tucker core", "hada_t1"][..]),
        ("lokr_tucker.safetensors", ErrorKind::AdapterMismatch, &["rank mismatch", "Tucker core", "lokr_t2"]),
        ("mixed_kinds.safetensors", ErrorKind::ModelInvalid, &["mixes LoRA, LoHa, LoKr"]),
        ("loha_rank_mismatch.safetensors", ErrorKind::AdapterMismatch, &["rank mismatch", "hada_w2"]),
        ("lokr_too_wide.safetensors", ErrorKind::AdapterMismatch, &["another architecture", "LoKr", "attn1_to_q"]),
        ("lokr_missing_w2.safetensors", ErrorKind::ModelInvalid, &["neither `lokr_w2`"]),
    ] {
        expect_error(lycoris_dir().join("broken").join(file), kind, words);
    }
    let c = cases().into_iter().find(|c| c["name"] == "loha_ddim").unwrap();
    common::tiny_model().generate_with(&request(&c), Hooks::default()).expect("base model still usable");
}

#[test]
fn switching_replaces_the_set_and_an_empty_set_restores_the_base() {
    let base = common::tiny_model();
    let style = with_case_loras(base, "style_ddim_s1", false);
    // From the style model, switch to the stack: the result is the stack alone, not style + stack.
    let stack = with_case_loras(&style, "stack_ddim", false);
    assert_eq!(stack.adapters().loras.len(), 2);
    check(&stack, "stack_ddim", "switched from style");
    // Back to nothing: bit-identical to the base model.
    let plain = style.with_loras::<PathBuf>(&[]).unwrap();
    assert!(plain.adapters().loras.is_empty());
    let c = cases().into_iter().find(|c| c["name"] == "style_ddim_s1").unwrap();
    let a = plain.generate_with(&request(&c), Hooks::default()).unwrap();
    let b = base.generate_with(&request(&c), Hooks::default()).unwrap();
    assert_eq!(a.latents, b.latents, "no LoRA = the base model's output");
}

#[test]
fn a_lora_view_outlives_its_base_and_has_seamless_views() {
    let base = Model::load(common::runtime(), &common::fixture()).unwrap();
    let style = with_case_loras(&base, "style_ddim_s1", false);
    drop(base);
    check(&style, "style_ddim_s1", "base model dropped");
    let tiled = style.seamless(kiln::model::seamless::Seamless::Xy).unwrap();
    assert_eq!(tiled.adapters(), style.adapters(), "a seamless view keeps the LoRAs");
    let c = cases().into_iter().find(|c| c["name"] == "style_ddim_s1").unwrap();
    let seamless_out = tiled.generate_with(&request(&c), Hooks::default()).unwrap();
    let plain_seamless = common::tiny_model().seamless(kiln::model::seamless::Seamless::Xy).unwrap();
    let without = plain_seamless.generate_with(&request(&c), Hooks::default()).unwrap();
    let d = common::max_abs_diff(seamless_out.latents.as_slice().unwrap(), without.latents.as_slice().unwrap());
    eprintln!("seamless view with vs without the LoRA: latents differ by {d:e}");
    assert!(d > 1e-2, "the LoRA must still act in the seamless view");
}

#[test]
fn model_info_lists_the_applied_loras() {
    let m = with_case_loras(common::tiny_model(), "stack_ddim", false);
    let lines = m.adapter_descriptions();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].contains("style.kohya.safetensors") && lines[0].contains("scale 0.8") && lines[0].contains("kohya"), "{lines:?}");
    let (unet, text) = m.merged_initializers();
    assert!(!unet.is_empty() && !text.is_empty(), "both graphs adapted: {unet:?} {text:?}");
    assert!(unet.iter().any(|n| n.starts_with("onnx::MatMul_")), "transposed MatMul weights mapped: {unet:?}");
}

fn expect_error(file: impl AsRef<std::path::Path>, kind: ErrorKind, words: &[&str]) {
    let base = common::tiny_model();
    // An absolute path (another fixture folder) replaces lora_dir() in the join.
    let path = lora_dir().join(file);
    let e = match base.with_loras(&[(path.clone(), 1.0)]) {
        Ok(_) => panic!("{} applied", path.display()),
        Err(e) => e,
    };
    let file = path.display();
    eprintln!("{file}: {:?}: {}", e.kind(), e.message());
    assert_eq!(e.kind(), kind, "{file}: {}", e.message());
    for w in words {
        assert!(e.message().contains(w), "{file}: message lacks {w:?}: {}", e.message());
    }
}

#[test]
fn bad_lora_files_give_specific_errors_and_leave_the_model_usable() {
    expect_error("broken/rank_mismatch.safetensors", ErrorKind::AdapterMismatch, &["rank mismatch"]);
    expect_error("broken/loha.safetensors", ErrorKind::ModelInvalid, &["LoHa", "no `hada_w2_a`"]);
    expect_error("broken/sdxl.safetensors", ErrorKind::AdapterMismatch, &["SDXL"]);
    expect_error("broken/sd2_dims.safetensors", ErrorKind::AdapterMismatch, &["another architecture", "attn2_to_k"]);
    expect_error("broken/unknown_keys.safetensors", ErrorKind::AdapterMismatch, &["1 of 2", "lora_unet_no_such_block_0_to_q"]);
    expect_error("broken/truncated.safetensors", ErrorKind::ModelInvalid, &["safetensors"]);
    expect_error("broken/not_safetensors.safetensors", ErrorKind::ModelInvalid, &["safetensors"]);
    expect_error("no_such_file.safetensors", ErrorKind::ModelNotFound, &["no_such_file"]);
    let e = common::tiny_model().with_loras(&[(lora_dir().join("style.kohya.safetensors"), f32::NAN)]).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    // Unmatched keys can be downgraded to a warning: the matching one still applies.
    let m = common::tiny_model()
        .with_adapters(&Adapters {
            loras: vec![LoraSpec::new(lora_dir().join("broken/unknown_keys.safetensors"), 1.0)],
            allow_unmatched: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(m.merged_initializers().0.len(), 1);
    // After every failure the model still generates its golden.
    let c = cases().into_iter().find(|c| c["name"] == "style_ddim_s1").unwrap();
    common::tiny_model().generate_with(&request(&c), Hooks::default()).expect("base model still usable");
}

/// Writes the tensors of `file` whose names pass `keep` to a new file.
fn subset_of(file: &std::path::Path, keep: impl Fn(&str) -> bool) -> PathBuf {
    let bytes = std::fs::read(file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> =
        st.tensors().into_iter().filter(|(n, _)| keep(n)).collect();
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-lora-subset.safetensors");
    std::fs::write(&out, safetensors::serialize(kept, None).unwrap()).unwrap();
    out
}

fn lora_moves_output(base: &Model, with: &Model, label: &str) {
    let c = cases().into_iter().find(|c| c["name"] == "style_ddim_s1").unwrap();
    let a = with.generate_with(&request(&c), Hooks::default()).unwrap();
    let b = base.generate_with(&request(&c), Hooks::default()).unwrap();
    let d = common::max_abs_diff(a.latents.as_slice().unwrap(), b.latents.as_slice().unwrap());
    eprintln!("{label}: the LoRA moves the final latents by {d:e}");
    assert!(d > 1e-2 && a.latents.iter().all(|x| x.is_finite()), "{label}: LoRA changes the output by {d}");
}

#[test]
fn loras_map_onto_the_legacy_and_fp16_exports_and_refuse_sd2_dims() {
    let rt = common::runtime();
    let style = lora_dir().join("style.kohya.safetensors");
    let reference = common::tiny_model().with_loras(&[(&style, 1.0)]).unwrap();
    let (ru, rt_) = reference.merged_initializers();
    let want = (ru.len(), rt_.len());
    // fp16: the same architecture with float16 weights; merged in f32 and stored back as f16.
    let fp16 = Model::load(rt, &common::variant_folder("fp16")).unwrap();
    let m = fp16.with_loras(&[(&style, 1.0)]).unwrap();
    assert_eq!(m.merged_initializers().0.len(), want.0);
    assert_eq!(m.merged_initializers().1.len(), want.1);
    lora_moves_output(&fp16, &m, "fp16");
    // legacy-int64: the older torch.onnx.export script (node names under
    // `/unet/`), and another U-Net (one layer per block, 32-wide mid block):
    // the full style LoRA is refused for its dimensions, and a part of it that
    // fits this U-Net (down_blocks.0.attentions.0 and the text encoder) maps
    // completely. The 24 modules of the missing second attentions are listed.
    let legacy = Model::load(rt, &common::variant_folder("legacy-int64")).unwrap();
    let e = legacy.with_loras(&[(&style, 1.0)]).err().expect("another U-Net");
    assert_eq!(e.kind(), ErrorKind::AdapterMismatch);
    assert!(e.message().contains("24 of 85 LoRA modules match no layer"), "{}", e.message());
    let mid = subset_of(&style, |k| k.contains("mid_block_attentions_0_transformer_blocks_0_attn1_to_q"));
    let e = legacy.with_loras(&[(&mid, 1.0)]).err().expect("the mid block is 32 wide here");
    eprintln!("legacy-int64, a 64-wide module: {:?}: {}", e.kind(), e.message());
    assert_eq!(e.kind(), ErrorKind::AdapterMismatch);
    assert!(e.message().contains("another architecture") && e.message().contains("onnx::MatMul_"), "{}", e.message());
    let part = subset_of(&style, |k| k.starts_with("lora_te_") || k.contains("down_blocks_0_attentions_0_"));
    let m = legacy.with_loras(&[(&part, 1.0)]).unwrap();
    let (unet, text) = m.merged_initializers();
    eprintln!("legacy-int64: {} U-Net and {} text-encoder initializers merged", unet.len(), text.len());
    assert_eq!((unet.len(), text.len()), (12, want.1));
    lora_moves_output(&legacy, &m, "legacy-int64");
    let sd2 = Model::load(rt, &common::variant_folder("sd2-vpred")).unwrap();
    let e = sd2.with_loras(&[(&style, 1.0)]).err().expect("an SD 1.x LoRA on a 64-wide model fails");
    eprintln!("sd2-vpred: {:?}: {}", e.kind(), e.message());
    assert_eq!(e.kind(), ErrorKind::AdapterMismatch);
}

#[test]
fn c_api_applies_switches_and_lists_loras() {
    use kiln::ffi::lora::*;
    use kiln::ffi::model::*;
    use kiln::ffi::{kiln_status, runtime::*};
    use std::ptr;
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok);
    let dir = std::ffi::CString::new(common::fixture().to_str().unwrap()).unwrap();
    let mut base = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_load(rt, dir.as_ptr(), &mut base) }, kiln_status::Ok);
    let style = std::ffi::CString::new(lora_dir().join("style.kohya.safetensors").to_str().unwrap()).unwrap();
    let detail = std::ffi::CString::new(lora_dir().join("detail.kohya.safetensors").to_str().unwrap()).unwrap();
    let bad = std::ffi::CString::new(lora_dir().join("broken/rank_mismatch.safetensors").to_str().unwrap()).unwrap();
    let mut l = [unsafe { std::mem::zeroed::<kiln_lora>() }; 2];
    unsafe { kiln_lora_init(&mut l[0]) };
    unsafe { kiln_lora_init(&mut l[1]) };
    assert_eq!(l[0].scale, 1.0, "default scale");
    l[0].path = style.as_ptr();
    l[0].scale = 0.8;
    l[1].path = detail.as_ptr();
    l[1].scale = -0.6;
    l[1].has_text_encoder_scale = 1;
    l[1].text_encoder_scale = 0.25;
    let mut stack = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_with_loras(base, l.as_ptr(), 2, &mut stack) }, kiln_status::Ok);
    let mut count = 0usize;
    assert_eq!(unsafe { kiln_model_lora_count(stack, &mut count) }, kiln_status::Ok);
    assert_eq!(count, 2);
    // The text encoders' strength: the LoRA's own when given, else its scale.
    let mut te = 0f32;
    assert_eq!(unsafe { kiln_model_lora_text_encoder_scale(stack, 0, &mut te) }, kiln_status::Ok);
    assert_eq!(te, 0.8);
    assert_eq!(unsafe { kiln_model_lora_text_encoder_scale(stack, 1, &mut te) }, kiln_status::Ok);
    assert_eq!(te, 0.25);
    assert_eq!(unsafe { kiln_model_lora_text_encoder_scale(stack, 2, &mut te) }, kiln_status::InvalidArgument);
    assert_eq!(unsafe { kiln_model_lora_text_encoder_scale(stack, 0, ptr::null_mut()) }, kiln_status::NullArgument);
    // A non-finite text-encoder strength is refused only when it is used.
    l[1].text_encoder_scale = f32::INFINITY;
    let mut out = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_with_loras(base, l.as_ptr(), 2, &mut out) }, kiln_status::InvalidArgument);
    assert!(out.is_null());
    l[1].has_text_encoder_scale = 0;
    assert_eq!(unsafe { kiln_model_with_loras(base, l.as_ptr(), 2, &mut out) }, kiln_status::Ok);
    unsafe { kiln_model_free(out) };
    // A caller built against the first `kiln_lora` (no text-encoder fields) is still read.
    #[repr(C)]
    struct LoraV1 {
        struct_size: u32,
        scale: f32,
        path: *const std::ffi::c_char,
    }
    let old = [LoraV1 { struct_size: std::mem::size_of::<LoraV1>() as u32, scale: 0.5, path: style.as_ptr() }];
    assert_eq!(unsafe { kiln_model_with_loras(base, old.as_ptr().cast(), 1, &mut out) }, kiln_status::Ok);
    assert_eq!(unsafe { kiln_model_lora_text_encoder_scale(out, 0, &mut te) }, kiln_status::Ok);
    assert_eq!(te, 0.5, "a V1 entry has one strength");
    unsafe { kiln_model_free(out) };
    let (mut scale, mut len) = (0f32, 0usize);
    assert_eq!(unsafe { kiln_model_lora_get(stack, 1, &mut scale, ptr::null_mut(), 0, &mut len) }, kiln_status::Ok);
    let mut path = vec![0u8; len + 1];
    assert_eq!(unsafe { kiln_model_lora_get(stack, 1, &mut scale, path.as_mut_ptr().cast(), path.len(), &mut len) }, kiln_status::Ok);
    assert_eq!((scale, &path[..len]), (-0.6, detail.as_bytes()));
    assert_eq!(unsafe { kiln_model_lora_get(stack, 2, &mut scale, ptr::null_mut(), 0, &mut len) }, kiln_status::InvalidArgument);
    // Bad entries: a specific status, NULL out, the models untouched.
    l[1].path = bad.as_ptr();
    assert_eq!(unsafe { kiln_model_with_loras(base, l.as_ptr(), 2, &mut out) }, kiln_status::AdapterMismatch);
    assert!(out.is_null());
    l[1].path = ptr::null();
    assert_eq!(unsafe { kiln_model_with_loras(base, l.as_ptr(), 2, &mut out) }, kiln_status::NullArgument);
    l[1].path = detail.as_ptr();
    l[1].struct_size = 8;
    assert_eq!(unsafe { kiln_model_with_loras(base, l.as_ptr(), 2, &mut out) }, kiln_status::StructSizeMismatch);
    assert_eq!(unsafe { kiln_model_with_loras(base, ptr::null(), 1, &mut out) }, kiln_status::NullArgument);
    // Switch to one LoRA from the stacked handle; free the base first.
    assert_eq!(unsafe { kiln_model_with_loras(stack, l.as_ptr(), 1, &mut out) }, kiln_status::Ok);
    assert_eq!(unsafe { kiln_model_lora_count(out, &mut count) }, kiln_status::Ok);
    assert_eq!(count, 1);
    unsafe { kiln_model_free(base) };
    unsafe { kiln_model_free(stack) };
    let p = std::ffi::CString::new("sand").unwrap();
    let mut o = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut o) };
    o.prompt = p.as_ptr();
    o.steps = 2;
    let mut buf = vec![0u8; 64 * 64 * 4];
    assert_eq!(unsafe { kiln_model_generate_into(out, &o, buf.as_mut_ptr(), buf.len(), 0) }, kiln_status::Ok);
    // Embeddings through kiln_model_with_adapters: the token then reaches the prompt.
    let brick = std::ffi::CString::new(lora_dir().join("brick-style.safetensors").to_str().unwrap()).unwrap();
    let token = std::ffi::CString::new("<brick-style>").unwrap();
    let mut e = unsafe { std::mem::zeroed::<kiln_embedding>() };
    unsafe { kiln_embedding_init(&mut e) };
    e.path = brick.as_ptr();
    e.token = token.as_ptr();
    let mut with_tokens = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_with_adapters(out, l.as_ptr(), 1, &e, 1, &mut with_tokens) }, kiln_status::Ok);
    let p = std::ffi::CString::new("<brick-style> sand").unwrap();
    o.prompt = p.as_ptr();
    assert_eq!(unsafe { kiln_model_generate_into(with_tokens, &o, buf.as_mut_ptr(), buf.len(), 0) }, kiln_status::Ok);
    let wall = std::ffi::CString::new("wall").unwrap();
    e.token = wall.as_ptr();
    let mut refused = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_with_adapters(out, ptr::null(), 0, &e, 1, &mut refused) }, kiln_status::InvalidArgument);
    assert!(refused.is_null());
    e.struct_size = 4;
    assert_eq!(unsafe { kiln_model_with_adapters(out, ptr::null(), 0, &e, 1, &mut refused) }, kiln_status::StructSizeMismatch);
    unsafe { kiln_model_free(with_tokens) };
    unsafe { kiln_model_free(out) };
    unsafe { kiln_runtime_destroy(rt) };
}

#[test]
fn textual_inversion_embeddings_match_diffusers_and_switch_off() {
    use kiln::model::EmbeddingSpec;
    let c = cases().into_iter().find(|c| c["name"] == "embedding_ddim").expect("embedding case");
    let embeddings = vec![
        EmbeddingSpec { path: lora_dir().join("brick-style.safetensors"), token: Some("<brick-style>".into()) },
        EmbeddingSpec { path: lora_dir().join("learned_embeds.safetensors"), token: None },
    ];
    let m = common::tiny_model().with_adapters(&Adapters { embeddings: embeddings.clone(), ..Default::default() }).unwrap();
    let want: Vec<i64> = c["input_ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    assert_eq!(m.tokenizer().encode(c["prompt"].as_str().unwrap()).unwrap(), want, "prompt ids as diffusers' expanded prompt");
    check(&m, "embedding_ddim", "A1111 emb_params (2 vectors) + diffusers learned_embeds");
    // Embeddings and a LoRA together, then switched off: the original vocabulary comes back.
    let both = m
        .with_adapters(&Adapters {
            loras: vec![LoraSpec::new(lora_dir().join("style.kohya.safetensors"), 1.0)],
            embeddings,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(both.tokenizer().encode(c["prompt"].as_str().unwrap()).unwrap(), want);
    let off = both.with_loras::<PathBuf>(&[]).unwrap();
    assert!(off.tokenizer().encode("<moss>").unwrap().iter().all(|&id| id < 49408), "no embedding tokens after switching off");
    // A token the vocabulary has is refused; the model stays usable.
    let e = common::tiny_model()
        .with_adapters(&Adapters {
            embeddings: vec![EmbeddingSpec { path: lora_dir().join("learned_embeds.safetensors"), token: Some("wall".into()) }],
            ..Default::default()
        })
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{}", e.message());
}


/// The optimized-graph cache is bypassed for graphs with merged weights (an
/// optimized graph bakes its initializers in); the plain graphs still use it,
/// and the LoRA output is the golden either way.
#[test]
fn merged_graphs_bypass_the_optimized_graph_cache() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-lora-graph-cache");
    let _ = std::fs::remove_dir_all(&dir);
    let rt = kiln::Runtime::new(&kiln::RuntimeOptions { graph_cache_dir: Some(dir.clone()), ..Default::default() }).unwrap();
    let base = Model::load(&rt, &common::fixture()).unwrap();
    let before = rt.graph_cache_stats();
    assert_eq!(before.writes, 3, "text encoder, U-Net and VAE decoder cached: {before:?}");
    let style = with_case_loras(&base, "style_ddim_s1", false);
    let after = rt.graph_cache_stats();
    eprintln!("graph cache before the LoRA {before:?}, after {after:?}");
    assert_eq!((after.writes, after.hits, after.skipped - before.skipped), (3, 0, 2), "U-Net and text encoder bypass the cache");
    check(&style, "style_ddim_s1", "graph cache runtime");
}

/// Bytes this thread has read through read(2) and friends so far
/// (`rchar` of /proc/thread-self/io; memory-mapped pages are not counted).
#[cfg(target_os = "linux")]
fn thread_read_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/thread-self/io").expect("/proc/thread-self/io");
    io.lines().find_map(|l| l.strip_prefix("rchar: ")).unwrap().trim().parse().unwrap()
}

#[test]
fn loras_and_embeddings_apply_to_an_external_data_export_with_the_same_goldens() {
    let dir = common::external_data_fixture();
    let ext = Model::load(common::runtime(), &dir).expect("the external-data export loads");
    // Plain: the same weights as the single-file fixture, so the same output.
    let c = cases().into_iter().find(|c| c["name"] == "style_ddim_s1").unwrap();
    let a = ext.generate_with(&request(&c), Hooks::default()).unwrap();
    let b = common::tiny_model().generate_with(&request(&c), Hooks::default()).unwrap();
    let d = common::max_abs_diff(a.latents.as_slice().unwrap(), b.latents.as_slice().unwrap());
    common::check_margin("lora::external_data::no_lora_vs_single_file::latents_abs", d as f64, 1e-6);
    // The same initializers are merged as in the single-file export.
    for name in ["style_ddim_s1", "stack_ddim", "lcm_shaped"] {
        let m = with_case_loras(&ext, name, false);
        let want = with_case_loras(common::tiny_model(), name, false);
        assert_eq!(m.merged_initializers(), want.merged_initializers(), "{name}: same initializers as the single-file export");
        check(&m, name, "external data, kohya");
    }
    check(&with_case_loras(&ext, "style_euler_s05", true), "style_euler_s05", "external data, peft");
    // Textual inversion grows the token-embedding table, which lives in its own data file here.
    let embeddings = vec![
        kiln::model::EmbeddingSpec { path: lora_dir().join("brick-style.safetensors"), token: Some("<brick-style>".into()) },
        kiln::model::EmbeddingSpec { path: lora_dir().join("learned_embeds.safetensors"), token: None },
    ];
    let m = ext.with_adapters(&Adapters { embeddings, ..Default::default() }).unwrap();
    assert!(m.merged_initializers().1.contains(&"text_model.embeddings.token_embedding.weight"));
    check(&m, "embedding_ddim", "external data, embeddings");
}

/// A switch re-creates the adapted sessions, but the weights it does not
/// change stay on disk: ONNX Runtime maps external data instead of reading
/// it, and Kiln reads only the adapted layers. Counted with this thread's
/// read(2) bytes (session creation runs on the calling thread).
#[cfg(target_os = "linux")]
#[test]
fn switching_loras_on_an_external_data_export_reads_only_the_adapted_weights() {
    use kiln::model::lora::GraphIndex;
    let dir = common::external_data_fixture();
    let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
    let base = Model::load(common::runtime(), &dir).unwrap();
    let style = with_case_loras(&base, "style_ddim_s1", false);
    let before = thread_read_bytes();
    let stack = with_case_loras(&style, "stack_ddim", false);
    let read = thread_read_bytes() - before;
    // What a switch has to read: the LoRA files, the two graphs' structure, and the adapted weights.
    let c = cases().into_iter().find(|c| c["name"] == "stack_ddim").unwrap();
    let lora_files: u64 = c["loras"].as_array().unwrap().iter().map(|l| size(&lora_dir().join(l["file"].as_str().unwrap()))).sum();
    let graphs = size(&dir.join("unet/model.onnx")) + size(&dir.join("text_encoder/model.onnx"));
    let (unet, text) = stack.merged_initializers();
    let adapted_bytes = |graph: &str, names: &[&str]| -> u64 {
        let index = GraphIndex::read(&dir.join(graph).join("model.onnx")).unwrap();
        names.iter().map(|n| index.modules.values().find(|s| s.initializer == *n).map_or(0, |s| s.dims.iter().product::<usize>() as u64 * 4)).sum()
    };
    let adapted = adapted_bytes("unet", &unet) + adapted_bytes("text_encoder", &text);
    let data: u64 = common::walk(&dir).iter().filter(|p| p.extension().is_none_or(|e| e != "onnx" && e != "json" && e != "txt")).map(|p| size(p)).sum();
    let needed = lora_files + graphs + adapted;
    eprintln!(
        "switch style -> stack: this thread read {read} bytes; needed {needed} (LoRA files {lora_files}, graphs {graphs}, adapted weights {adapted}); the external data is {data} bytes"
    );
    // 64 KiB for configs and small reads; re-reading the base weights would add megabytes.
    assert!(read <= needed + 65536, "a switch read {read} bytes, more than the {needed} it needs: base weights re-read?");
    assert!(read < data / 2);
    // Control: the counter sees ONNX Runtime's reads. The single-file export
    // keeps its weights inside model.onnx, which a switch reads again.
    let plain_style = with_case_loras(common::tiny_model(), "style_ddim_s1", false);
    let before = thread_read_bytes();
    drop(with_case_loras(&plain_style, "stack_ddim", false));
    let plain_read = thread_read_bytes() - before;
    let plain_graphs = size(&common::fixture().join("unet/model.onnx")) + size(&common::fixture().join("text_encoder/model.onnx"));
    eprintln!("control, single-file export: a switch read {plain_read} bytes (its two graph files are {plain_graphs})");
    assert!(plain_read >= plain_graphs, "the counter must see ONNX Runtime's own reads");
    drop(stack);
}

/// A switch rebuilds only the graphs whose weights change: a U-Net-only LoRA
/// view runs the base model's own text-encoder and VAE sessions (their run
/// counters are shared) and its own U-Net.
#[test]
fn a_unet_only_lora_shares_the_text_encoder_and_vae_sessions() {
    let base = Model::load(common::runtime(), &common::fixture()).unwrap();
    let view = with_case_loras(&base, "lcm_shaped", false);
    assert!(view.merged_initializers().1.is_empty(), "U-Net only");
    let c = cases().into_iter().find(|c| c["name"] == "style_ddim_s1").unwrap();
    view.generate_with(&request(&c), Hooks::default()).unwrap();
    let calls = |m: &Model| m.graph_run_times().map(|(name, calls, _)| (name, calls));
    eprintln!("after the view's image: base {:?}, view {:?}", calls(&base), calls(&view));
    for ((name, on_base), (_, on_view)) in calls(&base).into_iter().zip(calls(&view)) {
        if name == "unet" {
            assert_eq!(on_base, 0, "the view has its own U-Net");
            assert!(on_view > 0);
        } else {
            assert_eq!(on_base, on_view, "{name}: one session for both models");
            assert!(on_base > 0, "{name} ran");
        }
    }
}
