//! Base-to-refiner hand-off in latent space against diffusers' "ensemble of
//! expert denoisers" (tools/make_sdxl_handoff_golden.py): optimum's
//! ORTStableDiffusionXLPipeline on tiny-sdxl with `denoising_end=f,
//! output_type="latent"`, then ORTStableDiffusionXLImg2ImgPipeline on the
//! refiner-style fixture with those latents and `denoising_start=f`, every
//! random draw replayed. Bounds as tests/sdxl.rs: latents ≤ 1e-3 relative,
//! image ≤ 2e-3 absolute, both stages' U-Net timesteps exact.
mod common;

use std::path::PathBuf;

use kiln::pipeline::handoff::Refiner;
use kiln::pipeline::{GenerateRequest, Hooks, StepProgress};
use kiln::{ErrorKind, Model, SchedulerKind};

/// This binary's refiner fixture folder tag.
const TAG: &str = "handoff";

use common::handoff::{case_request, refiner, refiner_folder, tiny_sdxl, check_case, check_device_loop_case, device_latents_runtime, relative, times, IMAGE_BOUND, LATENTS_BOUND};

fn case_entry(name: &str) -> serde_json::Value {
    common::golden_case(&common::golden("sdxl_handoff/cases.json"), name)
}

/// Case `name`'s request with its recorded draws, handing off to `to`.
fn request(name: &str, to: &Model) -> (GenerateRequest, serde_json::Value) {
    let c = case_entry(name);
    let (_, draws) = common::read_npy(&format!("sdxl_handoff/{name}.draws.npy"));
    let request = GenerateRequest {
        // The base's initial latents, then its per-step noise and the refiner's.
        initial_noise: Some(kiln::InitialNoise { shape: [1, 4, 8, 8], data: draws[..256].to_vec() }),
        step_noise: Some(draws[256..].to_vec()),
        ..case_request(&c, to)
    };
    (request, c)
}

fn case(name: &str) {
    let (request, c) = request(name, refiner(TAG));
    check_case("sdxl_handoff", name, &c, tiny_sdxl(), &request);
}

#[test]
fn euler_handing_off_at_0_8_matches_diffusers() {
    case("euler_08");
}

#[test]
fn dpmpp_2m_handing_off_at_0_7_matches_diffusers() {
    case("dpmpp_2m_07");
}

#[test]
fn euler_a_continues_the_noise_stream_in_the_refiner() {
    case("euler_a_06");
}

/// An SDXL embedding through the hand-off against diffusers
/// (tools/make_sdxl_embedding_handoff_golden.py): the base view takes the
/// file's `clip_l` and `clip_g`, the refiner's view its `clip_g`, as diffusers'
/// `load_textual_inversion` into each pipeline; handing off at 0.1 (1 base
/// step, 9 refiner steps) both stages' outputs meet the bounds. Handing off to
/// the plain refiner (the token's text then split into ordinary tokens) with
/// the same draws misses by ≥ 2e-2 (in cases.json; checked below too), so the
/// refiner's view really acts.
#[test]
fn an_embedding_reaches_both_stages_as_in_diffusers() {
    let golden = "sdxl_embedding_handoff";
    let c = common::golden_case(&common::golden(&format!("{golden}/cases.json")), "embedding_euler_01");
    let spec = kiln::model::EmbeddingSpec { path: common::golden(golden).join(c["file"].as_str().unwrap()), token: Some(c["token"].as_str().unwrap().into()) };
    let adapters = kiln::model::Adapters { embeddings: vec![spec], ..Default::default() };
    let base = tiny_sdxl().with_adapters(&adapters).expect("the base takes clip_l and clip_g");
    let refiner_view = refiner(TAG).with_adapters(&adapters).expect("the refiner takes clip_g");
    let (_, draws) = common::read_npy(&format!("{golden}/embedding_euler_01.draws.npy"));
    let with = |to: &Model| GenerateRequest {
        initial_noise: Some(kiln::InitialNoise { shape: [1, 4, 8, 8], data: draws[..256].to_vec() }),
        step_noise: Some(draws[256..].to_vec()),
        ..case_request(&c, to)
    };
    check_case(golden, "embedding_euler_01", &c, &base, &with(&refiner_view));
    let plain_refiner = base.generate_with(&with(refiner(TAG)), Hooks::default()).unwrap();
    let (latents, _) = common::handoff::final_misses(golden, "embedding_euler_01", &plain_refiner);
    eprintln!("embedding_euler_01 handed to the plain refiner: latents {latents:e} away (golden script: {})", c["refiner_embedding_effect"]);
    assert!(latents > 10.0 * LATENTS_BOUND, "the refiner's embedding barely matters here ({latents:e})");
}

/// The refiner's part matters: finishing the same schedule with the base
/// model's own U-Net (the same split, the base as its own "refiner") misses
/// the golden far beyond the bound.
#[test]
fn finishing_with_the_base_model_misses_the_golden() {
    let (request, _) = request("euler_08", tiny_sdxl());
    let out = tiny_sdxl().generate_with(&request, Hooks::default()).unwrap();
    let latents = relative(&out.latents.iter().copied().collect::<Vec<_>>(), "sdxl_handoff/euler_08.latents.npy");
    eprintln!("euler_08 finished by the base model: latents {latents:e} away (parity bound {LATENTS_BOUND:e})");
    assert!(latents > 10.0 * LATENTS_BOUND, "the refiner's U-Net barely matters here ({latents:e})");
}

/// With device-resident latents (`ProviderPolicy::device_latents`) both
/// stages run the device loop (every U-Net call counted in `device_steps`)
/// and still meet the deterministic goldens.
#[test]
fn both_stages_run_on_the_device_loop_and_match_diffusers() {
    let rt = device_latents_runtime();
    let dev_base = Model::load(&rt, &common::root().join("tests/fixtures/tiny-sdxl")).expect("tiny-sdxl loads");
    let dev_refiner = Model::load(&rt, refiner_folder(TAG)).expect("refiner loads");
    for name in ["euler_08", "dpmpp_2m_07"] {
        let (request, c) = request(name, &dev_refiner);
        check_device_loop_case("sdxl_handoff", name, &c, &dev_base, &request);
    }
}

/// A job asks for previews every `n` steps of the whole job (its progress
/// counts both stages). On the device loop a step's latents come back only
/// when asked for, so each stage must ask by the job's step numbers: at
/// `Interval(3)` of 8 + 2 steps, the job's step 9 is the refiner's first.
#[test]
fn device_loop_hands_back_every_asked_preview_step_across_both_stages() {
    use kiln::pipeline::StepLatents;
    let rt = device_latents_runtime();
    let dev_base = Model::load(&rt, &common::root().join("tests/fixtures/tiny-sdxl")).expect("tiny-sdxl loads");
    let dev_refiner = Model::load(&rt, refiner_folder(TAG)).expect("refiner loads");
    let (request, c) = request("euler_08", &dev_refiner);
    let total = times(&c, "base_timesteps").len() + times(&c, "refiner_timesteps").len();
    for n in [3u32, 4] {
        let mut seen = Vec::new();
        let mut on_step = |p: &StepProgress<'_>| seen.push((p.step, p.total, p.latents.len()));
        let hooks = Hooks { on_step: Some(&mut on_step), step_latents: StepLatents::Interval(n), ..Default::default() };
        let out = dev_base.generate_with(&request, hooks).unwrap();
        assert_eq!(out.device_steps, total, "every step on the device loop");
        let missing: Vec<usize> =
            seen.iter().filter(|&&(step, t, len)| StepLatents::Interval(n).wants(step, t) && len != 4 * 8 * 8).map(|s| s.0).collect();
        eprintln!("Interval({n}) over {total} steps: steps reported {:?}; asked-for steps without latents {missing:?}", seen.iter().map(|s| (s.0, s.2)).collect::<Vec<_>>());
        assert!(missing.is_empty(), "Interval({n}): steps {missing:?} were asked for and came without latents");
    }
}

/// Rolls `[1, 4, 8, 8]` latents by `d` latent pixels on both axes (wrapping).
fn roll_latents(data: &[f32], d: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for c in 0..4 {
        for y in 0..8 {
            for x in 0..8 {
                out[c * 64 + ((y + d) % 8) * 8 + (x + d) % 8] = data[c * 64 + y * 8 + x];
            }
        }
    }
    out
}

/// A seamless (xy) view of the base hands off to a refiner loaded plain: the
/// texture must still tile, i.e. rolling the initial noise by 2 latent pixels
/// rolls the image by 16 pixels (tests/sdxl_features.rs's measure, same bound).
#[test]
fn a_seamless_base_hands_off_to_a_refiner_that_wraps_too() {
    let tiled = tiny_sdxl().seamless(kiln::model::seamless::Seamless::Xy).unwrap();
    let noise = kiln::pipeline::noise::NoiseRng::new(2024).normals(4 * 8 * 8);
    let image = |noise: Vec<f32>| {
        let r = GenerateRequest {
            prompt: "cobblestone".into(),
            negative_prompt: "blurry".into(),
            width: 64,
            height: 64,
            steps: 4,
            scheduler: SchedulerKind::Ddim,
            initial_noise: Some(kiln::InitialNoise { shape: [1, 4, 8, 8], data: noise }),
            refiner: Some(Refiner { model: refiner(TAG).clone(), start: 0.8 }),
            ..Default::default()
        };
        tiled.generate_with(&r, Hooks::default()).unwrap().image.data
    };
    let (a, b) = (image(noise.clone()), image(roll_latents(&noise, 2)));
    let mut worst = 0.0f32;
    for y in 0..64 {
        for x in 0..64 {
            for ch in 0..3 {
                worst = worst.max((a[(y * 64 + x) * 3 + ch] - b[(((y + 16) % 64) * 64 + (x + 16) % 64) * 3 + ch]).abs());
            }
        }
    }
    common::check_margin("sdxl_handoff::seamless_xy::shift_abs", worst as f64, 2.0 / 255.0);
}

/// `folder` plus the TAESDXL-shaped `preview_decoder/` of tests/fixtures/sdxl-preview,
/// copied to a temp folder named by `tag`.
fn with_preview_decoder(folder: &std::path::Path, tag: &str) -> Model {
    let dest = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kiln-handoff-preview-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dest);
    common::copy_tree(folder, &dest);
    common::copy_tree(&common::root().join("tests/fixtures/sdxl-preview/preview_decoder"), &dest.join("preview_decoder"));
    Model::load(common::runtime(), &dest).expect("model with a preview decoder loads")
}

/// The fast final decode (`FinalDecoder::Preview`) is the refiner's, which
/// decodes: a base without a preview decoder hands off to a refiner with one
/// (the image is the refiner's preview decode of the final latents), and a
/// refiner without one is refused before the base runs a step.
#[test]
fn the_fast_final_decode_is_the_refiners() {
    use kiln::pipeline::FinalDecoder;
    let refiner_p = with_preview_decoder(refiner_folder(TAG), "refiner");
    let (mut r, _) = request("euler_08", &refiner_p);
    let full = tiny_sdxl().generate_with(&r, Hooks::default()).unwrap();
    r.decoder = FinalDecoder::Preview;
    let fast = tiny_sdxl().generate_with(&r, Hooks::default()).unwrap();
    let want = refiner_p.decode_latents(&full.latents, &Default::default(), FinalDecoder::Preview).unwrap();
    let diff = common::max_abs_diff(&fast.image.data, &want.data);
    eprintln!("refiner's preview decode of the hand-off's latents: {diff:e} away (bound 0: the same graph on the same latents)");
    assert_eq!(diff, 0.0);

    let base_p = with_preview_decoder(&common::root().join("tests/fixtures/tiny-sdxl"), "base");
    let (mut r, _) = request("euler_08", refiner(TAG));
    r.decoder = FinalDecoder::Preview;
    let mut steps = 0;
    let mut on_step = |_: &StepProgress<'_>| steps += 1;
    let e = base_p.generate_with(&r, Hooks { on_step: Some(&mut on_step), ..Default::default() }).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.message().contains("refiner"), "{e}");
    assert_eq!(steps, 0, "refused before the base ran: {e}");
}

/// A size left to the model (0) is the base's: the refiner continues the
/// base's picture even when its own native size differs (here a copy of the
/// refiner fixture whose U-Net config says 128 pixels, the base's 64).
#[test]
fn a_native_size_is_the_base_models_in_both_stages() {
    let dir = common::sdxl_refiner_folder("handoff-size");
    let config = dir.join("unet/config.json");
    let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    c["sample_size"] = serde_json::json!(16);
    std::fs::write(&config, c.to_string()).unwrap();
    let bigger = Model::load(common::runtime(), &dir).expect("resized refiner loads");
    assert_eq!(bigger.info().default_size, 128);
    let (explicit, _) = request("euler_08", &bigger);
    let want = tiny_sdxl().generate_with(&explicit, Hooks::default()).unwrap();
    let native = GenerateRequest { width: 0, height: 0, ..explicit };
    let got = tiny_sdxl().generate_with(&native, Hooks::default()).unwrap();
    assert_eq!((got.image.width, got.image.height), (64, 64));
    let diff = common::max_abs_diff(&got.image.data, &want.image.data);
    eprintln!("native size vs explicit 64x64: {diff:e} (same computation: 0)");
    assert_eq!(diff, 0.0);
}

/// img2img with `lcm` on an LCM-distilled U-Net runs a schedule shortened by
/// the strength (diffusers' `LatentConsistencyModelImg2ImgPipeline`, which has
/// no `denoising_end`), while the refiner would cut the full LCM schedule: the
/// two halves would not split one schedule, so the pair is refused.
#[test]
fn lcm_distilled_img2img_does_not_hand_off() {
    let lcm = Model::load(common::runtime(), &common::variant_folder("lcm-unet")).expect("lcm-unet loads");
    let request = GenerateRequest {
        prompt: "mossy stone brick wall".into(),
        steps: 4,
        strength: 0.6,
        scheduler: SchedulerKind::Lcm,
        init_image: Some(kiln::pipeline::inputs::read_init_image(&common::golden("ddim_cfg.png")).unwrap()),
        refiner: Some(Refiner { model: common::tiny_model().clone(), start: 0.7 }),
        ..Default::default()
    };
    let out = lcm.generate_with(&request, Hooks::default());
    let e = match out {
        Ok(g) => panic!("handed off with timesteps {:?}", g.timesteps),
        Err(e) => e,
    };
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.message().contains("lcm"), "{e}");
    // Without the refiner it runs.
    lcm.generate_with(&GenerateRequest { refiner: None, ..request }, Hooks::default()).unwrap();
}

#[test]
fn unusable_hand_offs_are_specific_errors() {
    let plain = common::tiny_model();
    let (mut r, _) = request("euler_08", plain);
    let e = tiny_sdxl().generate_with(&r, Hooks::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.message().contains("SD 1.x/2.x"), "{e}");
    for start in [0.0, 1.0, -0.5, f32::NAN] {
        let (mut r, _) = request("euler_08", refiner(TAG));
        r.refiner.as_mut().unwrap().start = start;
        let e = tiny_sdxl().generate_with(&r, Hooks::default()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{start}: {e}");
    }
    // 0.05 of 10 steps leaves the base none (its first timestep, 901, is below the 950 cutoff).
    r = request("euler_08", refiner(TAG)).0;
    r.refiner.as_mut().unwrap().start = 0.05;
    let e = tiny_sdxl().generate_with(&r, Hooks::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.message().contains("base model no step"), "{e}");
    r = request("euler_08", refiner(TAG)).0;
    r.scheduler = SchedulerKind::Heun;
    assert_eq!(tiny_sdxl().generate_with(&r, Hooks::default()).unwrap_err().kind(), ErrorKind::Unsupported);
    // (Inpainting and ControlNet hand-offs: tests/sdxl_inpaint_handoff.rs, tests/sdxl_controlnet_handoff.rs.)
    // Both models still generate.
    let (ok, _) = request("euler_08", refiner(TAG));
    tiny_sdxl().generate_with(&ok, Hooks::default()).unwrap();
}

/// The hand-off through `kiln_model_generate_into` with `options->refiner`:
/// the Euler case (its only draw is the initial noise, given as
/// `initial_noise`) within half an 8-bit step plus the parity bound; a
/// mismatched refiner and a bad fraction are INVALID_ARGUMENT with the
/// handles still usable.
mod c_api {
    use super::common;
    use kiln::ffi::{kiln_status, model::*, runtime::*};
    use std::ptr;

    use common::{ffi_last_error as last_error, ffi_load_model as load};

    const QUANTUM: f64 = 0.5 / 255.0;

    #[test]
    fn refiner_through_c_matches_the_golden_and_bad_refiners_are_refused() {
        let mut rt = ptr::null_mut();
        assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok, "{}", last_error());
        let base = load(rt, &common::root().join("tests/fixtures/tiny-sdxl"));
        let refiner = load(rt, super::refiner_folder(super::TAG));
        let plain = load(rt, &common::fixture());
        let c = super::case_entry("euler_08");
        let (_, draws) = common::read_npy("sdxl_handoff/euler_08.draws.npy");
        let (_, want) = common::read_npy("sdxl_handoff/euler_08.image.npy");
        let mut keep = Vec::new();
        let mut o = common::ffi_case_options(&c, &draws, &mut keep);
        assert_eq!(o.refiner_start, 0.8);
        o.refiner = refiner;
        o.refiner_start = c["refiner_start"].as_f64().unwrap() as f32;
        let mut buf = vec![0u8; 64 * 64 * 4];
        let mut run = |o: &kiln_generate_options| {
            let s = unsafe { kiln_model_generate_into(base, o, buf.as_mut_ptr(), buf.len(), 0) };
            (s, buf.chunks_exact(4).flat_map(|p| p[..3].iter().map(|&v| v as f32 / 255.0)).collect::<Vec<f32>>())
        };
        let (s, got) = run(&o);
        assert_eq!(s, kiln_status::Ok, "{}", last_error());
        let d = (common::max_abs_diff(&got, &want) as f64 - QUANTUM).max(0.0);
        common::check_margin("sdxl_handoff::c_api::euler_08::image_abs_past_8bit", d, super::IMAGE_BOUND);
        // Control: the base alone (NULL refiner) is far from the hand-off's image.
        o.refiner = ptr::null();
        let (s, alone) = run(&o);
        assert_eq!(s, kiln_status::Ok, "{}", last_error());
        let dc = common::max_abs_diff(&alone, &want) as f64 - QUANTUM;
        eprintln!("euler_08 through C: {d:e} past 8-bit rounding (bound 2e-3); the base alone {dc:e}");
        assert!(dc > super::IMAGE_BOUND, "the refiner field barely matters ({dc:e})");
        // An SD 1.x model cannot continue SDXL latents.
        o.refiner = plain;
        let (s, _) = run(&o);
        let msg = last_error();
        assert_eq!(s, kiln_status::InvalidArgument, "{msg}");
        assert!(msg.contains("options->refiner"), "{msg}");
        o.refiner = refiner;
        for bad in [0.0f32, 1.0, f32::INFINITY] {
            o.refiner_start = bad;
            let (s, _) = run(&o);
            let msg = last_error();
            assert_eq!(s, kiln_status::InvalidArgument, "{bad}: {msg}");
            assert!(msg.contains("options->refiner_start"), "{msg}");
        }
        // The aesthetic score is for the refiner-style U-Net: accepted in a hand-off.
        o.refiner_start = 0.8;
        o.aesthetic_score = 7.0;
        let (s, _) = run(&o);
        assert_eq!(s, kiln_status::Ok, "{}", last_error());
        // A job keeps its own reference to the refiner: a handle freed right
        // after submit still finishes the job, with the same pixels.
        let (s, sync) = run(&o);
        assert_eq!(s, kiln_status::Ok, "{}", last_error());
        let short_lived = load(rt, super::refiner_folder(super::TAG));
        o.refiner = short_lived;
        let mut job = 0u64;
        assert_eq!(unsafe { kiln::ffi::job::kiln_job_submit(base, &o, ptr::null(), &mut job) }, kiln_status::Ok, "{}", last_error());
        unsafe { kiln_model_free(short_lived) };
        let mut state = 0u32;
        assert_eq!(unsafe { kiln::ffi::job::kiln_job_wait(job, 600_000, &mut state) }, kiln_status::Ok);
        assert_eq!(state, kiln::ffi::job::kiln_job_state::Succeeded as u32);
        let mut from_job = vec![0u8; 64 * 64 * 4];
        assert_eq!(unsafe { kiln::ffi::job::kiln_job_copy_image(job, from_job.as_mut_ptr(), from_job.len(), 0) }, kiln_status::Ok);
        let from_job: Vec<f32> = from_job.chunks_exact(4).flat_map(|p| p[..3].iter().map(|&v| v as f32 / 255.0)).collect();
        assert_eq!(common::max_abs_diff(&from_job, &sync), 0.0, "the job's image is the synchronous one");
        assert_eq!(kiln::ffi::job::kiln_job_free(job), kiln_status::Ok);
        unsafe {
            kiln_model_free(plain);
            kiln_model_free(refiner);
            kiln_model_free(base);
            kiln_runtime_destroy(rt);
        }
    }
}
