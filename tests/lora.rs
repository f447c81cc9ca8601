//! LoRA adapters: parity with diffusers' `load_lora_weights` + `fuse_lora`
//! (goldens by tools/make_lora_fixture.py), both file layouts, stacking,
//! switching, views, and every bad file giving its own status.
//!
//! Tolerances as tests/parity.rs: final latents max|Δ| ≤ 1e-3 × max|reference|,
//! decoded image max|Δ| ≤ 2e-3 absolute.
mod common;

use std::path::PathBuf;

use kiln::model::{Adapters, LoraSpec};
use kiln::pipeline::{GenerateRequest, Hooks, InitialNoise};
use kiln::{ErrorKind, Model, SchedulerKind};

fn lora_dir() -> PathBuf {
    common::root().join("tests/fixtures/lora")
}

fn cases() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(lora_dir().join("cases.json")).expect("tests/fixtures/lora/cases.json");
    serde_json::from_str::<serde_json::Value>(&text).unwrap().as_array().unwrap().clone()
}

fn npy(name: &str) -> (Vec<usize>, Vec<f32>) {
    kiln::image::npy::read_f32(&lora_dir().join(name)).expect("golden file")
}

fn request(c: &serde_json::Value) -> GenerateRequest {
    let (shape, noise) = npy("noise_1x4x8x8.npy");
    let step_noise = c["files"]["step_noise"].as_str().map(|f| npy(f).1);
    GenerateRequest {
        prompt: c["prompt"].as_str().unwrap().into(),
        negative_prompt: c["negative_prompt"].as_str().unwrap_or("").into(),
        width: c["width"].as_u64().unwrap() as usize,
        height: c["height"].as_u64().unwrap() as usize,
        steps: c["steps"].as_u64().unwrap() as usize,
        guidance_scale: c["guidance_scale"].as_f64().unwrap() as f32,
        seed: 0,
        scheduler: SchedulerKind::from_name(c["kiln_scheduler"].as_str().unwrap()).unwrap(),
        initial_noise: Some(InitialNoise { shape: [shape[0], shape[1], shape[2], shape[3]], data: noise }),
        step_noise,
        scheduler_overrides: Some(c["scheduler_config"].clone()),
        ..Default::default()
    }
}

/// Runs case `name` on `model` and compares with the golden; returns (latents rel, image abs).
fn check(model: &Model, name: &str, label: &str) -> (f32, f32) {
    let c = cases().into_iter().find(|c| c["name"] == name).expect("case in cases.json");
    let out = model.generate_with(&request(&c), Hooks::default()).expect("generation succeeds");
    let want_t: Vec<f64> = c["unet_timestep_feed"]["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(out.timesteps, want_t, "{name}: U-Net timesteps");
    let (_, want_latents) = npy(c["files"]["latents"].as_str().unwrap());
    let got: Vec<f32> = out.latents.iter().copied().collect();
    let scale = want_latents.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let rel = common::max_abs_diff(&got, &want_latents) / scale;
    let (_, want_image) = npy(c["files"]["image"].as_str().unwrap());
    let d = common::max_abs_diff(&out.image.data, &want_image);
    eprintln!(
        "{name} ({label}): latents rel {rel:e} (bound 1e-3), image abs {d:e} (bound 2e-3); the LoRA itself moves the latents by {:e}",
        c["latent_effect"].as_f64().unwrap()
    );
    assert!(rel <= 1e-3, "{name} ({label}): final latents differ by {rel:e} relative");
    assert!(d <= 2e-3, "{name} ({label}): decoded image differs by {d:e}");
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
            LoraSpec { path: lora_dir().join(file), scale: l["scale"].as_f64().unwrap() as f32 }
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

fn expect_error(file: &str, kind: ErrorKind, words: &[&str]) {
    let base = common::tiny_model();
    let e = match base.with_loras(&[(lora_dir().join(file), 1.0)]) {
        Ok(_) => panic!("{file} applied"),
        Err(e) => e,
    };
    eprintln!("{file}: {:?}: {}", e.kind(), e.message());
    assert_eq!(e.kind(), kind, "{file}: {}", e.message());
    for w in words {
        assert!(e.message().contains(w), "{file}: message lacks {w:?}: {}", e.message());
    }
}

#[test]
fn bad_lora_files_give_specific_errors_and_leave_the_model_usable() {
    expect_error("broken/rank_mismatch.safetensors", ErrorKind::AdapterMismatch, &["rank mismatch"]);
    expect_error("broken/loha.safetensors", ErrorKind::Unsupported, &["LoHa"]);
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
            loras: vec![LoraSpec { path: lora_dir().join("broken/unknown_keys.safetensors"), scale: 1.0 }],
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
    let mut stack = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_with_loras(base, l.as_ptr(), 2, &mut stack) }, kiln_status::Ok);
    let mut count = 0usize;
    assert_eq!(unsafe { kiln_model_lora_count(stack, &mut count) }, kiln_status::Ok);
    assert_eq!(count, 2);
    let (mut scale, mut len) = (0f32, 0usize);
    assert_eq!(unsafe { kiln_model_lora_get(stack, 1, &mut scale, ptr::null_mut(), 0, &mut len) }, kiln_status::Ok);
    let mut path = vec![0u8; len + 1];
    assert_eq!(unsafe { kiln_model_lora_get(stack, 1, &mut scale, path.as_mut_ptr().cast(), path.len(), &mut len) }, kiln_status::Ok);
    assert_eq!((scale, &path[..len]), (-0.6, detail.as_bytes()));
    assert_eq!(unsafe { kiln_model_lora_get(stack, 2, &mut scale, ptr::null_mut(), 0, &mut len) }, kiln_status::InvalidArgument);
    // Bad entries: a specific status, NULL out, the models untouched.
    let mut out = ptr::null_mut();
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
            loras: vec![LoraSpec { path: lora_dir().join("style.kohya.safetensors"), scale: 1.0 }],
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
