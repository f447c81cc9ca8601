//! PyTorch-compatible seeds (`NoiseGenerator::TorchCpu`): a seed gives what
//! `torch.Generator("cpu").manual_seed(seed)` gives, so a user's diffusers
//! seed makes the same image in Kiln, with no noise passed in; and
//! `NoiseGenerator::TorchCuda`, what PyTorch's CUDA generator gives for a seed
//! (AUTOMATIC1111's default seeds, diffusers with a CUDA generator).
//!
//! Goldens: tests/fixtures/golden/torch-seed (tools/make_torch_seed_golden.py:
//! `torch.randn` draws, and optimum's ORTStableDiffusionPipeline on tiny-sd,
//! and its SDXL pipeline on tiny-sdxl, called with only a generator), plus the draws the other golden scripts
//! recorded from their seeded generators (parity, img2img, inpainting).
//! CUDA: tests/fixtures/golden/torch-cuda-seed: values NVIDIA GPUs gave,
//! published by others (published.json), and tools/make_torch_cuda_seed_golden.py's
//! model of the stream (checked there against those values) answering every
//! `randn_tensor` call of the same pipelines.
//!
//! Tolerances: each noise value within 1e-6 of torch's (the uniforms and the
//! Box–Muller arithmetic are the same; torch's vector math library and Rust's
//! `libm` each round log/sin/cos within about an ulp, and 1e-6 is two ulps of
//! the largest normals, |z| in [4, 8); the ulps are printed too);
//! generations as tests/parity.rs: final latents ≤ 1e-3 × max|reference|,
//! image ≤ 2e-3 absolute. CUDA: the GPU's printed values within half their
//! last printed digit plus 1e-6 (the GPU's fast sine is about 1e-6 from
//! the exact one); AUTOMATIC1111's documented values within 1e-6 (it forms
//! Box–Muller's inputs in float64 where cuRAND rounds them to float32).
mod common;

use kiln::pipeline::noise::{NoiseGenerator, TorchCpuRng, TorchCudaRng};
use kiln::pipeline::{GenerateRequest, Hooks, InitImage, Mask};
use kiln::scheduler::NoiseSource;

const NOISE_ABS_TOL: f64 = 1e-6;
const LATENT_TOL: f64 = 1e-3;
const IMAGE_TOL: f64 = 2e-3;

fn cases() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(common::golden("torch-seed/cases.json")).unwrap()).unwrap()
}

/// Largest distance between `got` and torch's `want`, in ulps of torch's value.
fn max_ulps(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    got.iter()
        .zip(want)
        .map(|(&g, &w)| {
            let ulp = f32::from_bits(w.abs().to_bits() + 1) - w.abs();
            ((g - w).abs() / ulp) as f64
        })
        .fold(0.0, f64::max)
}

/// `count` values of blocks of `block` draws from `seed`'s generator.
fn draws(seed: u64, block: usize, count: usize) -> Vec<f32> {
    let mut rng = TorchCpuRng::new(seed);
    let mut out = vec![0.0f32; count];
    for chunk in out.chunks_mut(block) {
        rng.fill_normals(chunk).unwrap();
    }
    out
}

#[test]
fn torch_randn_draws_are_pytorchs() {
    let (_, want) = common::read_npy("torch-seed/randn.npy");
    let mut at = 0;
    for g in cases()["draws"].as_array().unwrap() {
        let seed = g["seed"].as_u64().unwrap();
        let mut rng = TorchCpuRng::new(seed);
        for shape in g["shapes"].as_array().unwrap() {
            let n: usize = shape.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).product();
            let mut got = vec![0.0f32; n];
            rng.fill_normals(&mut got).unwrap();
            let ulps = max_ulps(&got, &want[at..at + n]);
            let abs = common::max_abs_diff(&got, &want[at..at + n]);
            eprintln!("seed {seed} shape {shape}: {abs:e} absolute, at most {ulps} ulps");
            common::check_margin(&format!("torch_seed::randn::{seed}::{n}_abs"), abs as f64, NOISE_ABS_TOL);
            at += n;
        }
    }
    assert_eq!(at, want.len(), "every golden value checked");
}

#[test]
fn the_other_goldens_recorded_draws_are_this_generators_stream() {
    // Each script seeded a torch.Generator and recorded every randn_tensor
    // call, all of one latent's size (tiny-sd at 64x64: 256 values).
    for (file, seed) in [
        ("euler_a_cfg.step_noise.npy", 4321),
        ("dpmpp_2m_sde_cfg.step_noise.npy", 4321),
        ("img2img/euler_s06.draws.npy", 777),
        ("img2img/dpmpp_2m_sde_s06.draws.npy", 777),
        ("inpaint/ddim_s075.draws.npy", 31),
    ] {
        let (_, want) = common::read_npy(file);
        let got = draws(seed, 256, want.len());
        eprintln!("{file}: at most {} ulps", max_ulps(&got, &want));
        common::check_margin(&format!("torch_seed::recorded::{file}_abs"), common::max_abs_diff(&got, &want) as f64, NOISE_ABS_TOL);
    }
}

/// Golden case `c`'s request from `seed` alone, through PyTorch's CPU generator.
fn seeded_request(c: &serde_json::Value, seed: u64) -> GenerateRequest {
    common::seeded_golden_request(c, seed, NoiseGenerator::TorchCpu)
}

#[test]
fn a_seed_gives_diffusers_image_for_that_seed() {
    for c in cases()["cases"].as_array().unwrap() {
        let request = GenerateRequest {
            width: c["width"].as_u64().unwrap() as usize,
            height: c["height"].as_u64().unwrap() as usize,
            scheduler_overrides: Some(c["scheduler_overrides"].clone()),
            ..seeded_request(c, c["seed"].as_u64().unwrap())
        };
        let model = if c["name"].as_str().unwrap().starts_with("sdxl_") { sdxl_model() } else { common::tiny_model() };
        check_golden_generation(model, &request, c, "torch-seed", "torch_seed");
    }
}

/// Generates `request` and checks it against golden case `c` in `dir`
/// (margins named `prefix::<case>::…`); Kiln's own noise must give another
/// picture from the same seed.
fn check_golden_generation(model: &kiln::Model, request: &GenerateRequest, c: &serde_json::Value, dir: &str, prefix: &str) {
    let name = c["name"].as_str().unwrap();
    let out = model.generate_with(request, Hooks::default()).unwrap();
    let (_, want) = common::read_npy(&format!("{dir}/{}", c["latents"].as_str().unwrap()));
    let got: Vec<f32> = out.latents.iter().copied().collect();
    let rel = common::max_abs_diff(&got, &want) / want.iter().fold(0f32, |m, v| m.max(v.abs()));
    common::check_margin(&format!("{prefix}::{name}::latents_rel"), rel as f64, LATENT_TOL);
    let (_, want_img) = common::read_npy(&format!("{dir}/{}", c["image"].as_str().unwrap()));
    let d = common::max_abs_diff(&out.image.data, &want_img);
    common::check_margin(&format!("{prefix}::{name}::image_abs"), d as f64, IMAGE_TOL);
    let own = model.generate_with(&GenerateRequest { noise: NoiseGenerator::Kiln, ..request.clone() }, Hooks::default()).unwrap();
    assert!(common::max_abs_diff(&own.image.data, &want_img) > 0.05, "{name}: Kiln's stream is not torch's");
}

/// tests/fixtures/tiny-sdxl, loaded once per test process.
fn sdxl_model() -> &'static kiln::Model {
    static M: std::sync::OnceLock<kiln::Model> = std::sync::OnceLock::new();
    M.get_or_init(|| kiln::Model::load(common::runtime(), &common::root().join("tests/fixtures/tiny-sdxl")).expect("tiny-sdxl loads"))
}

fn init_image() -> InitImage {
    kiln::pipeline::inputs::read_init_image(&common::golden("ddim_cfg.png")).unwrap()
}

fn inpaint_mask() -> Mask {
    let (w, h, ch, buf) = common::png_samples(common::golden("inpaint/mask.png"));
    Mask { width: w, height: h, data: buf.chunks(ch).map(|p| p[0]).collect() }
}

/// Golden case `name` of `dir` (img2img or inpaint) run from its seed, with
/// no draws given; returns the latents' relative error.
fn seeded_case(dir: &str, name: &str, seed: u64, mask: Option<Mask>) -> f32 {
    let c = common::golden_case(&common::golden(&format!("{dir}/cases.json")), name);
    let request = GenerateRequest {
        strength: c["strength"].as_f64().unwrap() as f32,
        init_image: Some(init_image()),
        mask,
        ..seeded_request(&c, seed)
    };
    let out = common::tiny_model().generate_with(&request, Hooks::default()).unwrap();
    let (_, want) = common::read_npy(&format!("{dir}/{name}.latents.npy"));
    let got: Vec<f32> = out.latents.iter().copied().collect();
    let rel = common::max_abs_diff(&got, &want) / want.iter().fold(0f32, |m, v| m.max(v.abs()));
    common::check_margin(&format!("torch_seed::{dir}::{name}::latents_rel"), rel as f64, LATENT_TOL);
    rel
}

#[test]
fn img2img_from_a_seed_draws_the_posterior_start_and_step_noise_as_diffusers() {
    // tools/make_img2img_golden.py called the pipeline with manual_seed(777).
    seeded_case("img2img", "euler_s06", 777, None);
    seeded_case("img2img", "dpmpp_2m_sde_s06", 777, None);
}

#[test]
fn inpainting_from_a_seed_draws_as_diffusers() {
    // tools/make_inpaint_golden.py: manual_seed(31); four draws before the steps.
    seeded_case("inpaint", "ddim_s075", 31, Some(inpaint_mask()));
}

#[test]
fn the_c_api_takes_the_generators_and_refuses_an_unknown_one() {
    use kiln::ffi::kiln_status;
    use kiln::ffi::model::*;
    use kiln::ffi::runtime::*;
    let c = &cases()["cases"][0];
    assert_eq!((c["name"].as_str(), c["kiln_scheduler"].as_str()), (Some("euler_a_64"), Some("euler_a")));
    let mut g = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut g) };
    assert_eq!(g.noise_generator, kiln_noise_generator::Kiln as u32, "Kiln's noise by default");
    let mut o = unsafe { std::mem::zeroed::<kiln_runtime_options>() };
    unsafe { kiln_runtime_options_init(&mut o) };
    let mut rt = std::ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(&o, &mut rt) }, kiln_status::Ok);
    let model = common::ffi_load_model(rt, &common::fixture());
    let text = |key: &str| std::ffi::CString::new(c[key].as_str().unwrap()).unwrap();
    let (prompt, negative) = (text("prompt"), text("negative_prompt"));
    (g.prompt, g.negative_prompt) = (prompt.as_ptr(), negative.as_ptr());
    (g.width, g.height) = (c["width"].as_u64().unwrap() as u32, c["height"].as_u64().unwrap() as u32);
    (g.steps, g.guidance_scale) = (c["steps"].as_u64().unwrap() as u32, c["guidance_scale"].as_f64().unwrap() as f32);
    (g.seed, g.scheduler) = (c["seed"].as_u64().unwrap(), kiln_scheduler::EulerA as u32);
    g.noise_generator = kiln_noise_generator::TorchCpu as u32;
    let got = common::ffi_generate_rgb_64(model, &g);
    let (_, want) = common::read_npy("torch-seed/euler_a_64.image.npy");
    // 8-bit output: half a step of rounding on top of the float bound.
    common::check_margin("torch_seed::c_api::euler_a_64_abs", common::max_abs_diff(&got, &want) as f64, IMAGE_TOL + 0.5 / 255.0);

    g.noise_generator = 3;
    let mut buf = vec![0u8; 64 * 64 * 4];
    let s = unsafe { kiln_model_generate_into(model, &g, buf.as_mut_ptr(), buf.len(), 0) };
    assert_eq!(s, kiln_status::InvalidArgument);
    assert!(common::ffi_last_error().contains("noise_generator 3"), "{}", common::ffi_last_error());
    // The handle stays usable after the refusal: the same pixels again.
    g.noise_generator = kiln_noise_generator::TorchCpu as u32;
    assert_eq!(common::ffi_generate_rgb_64(model, &g), got);
    // PyTorch's CUDA generator: the same request's CUDA golden.
    let cuda = &cuda_cases()["cases"][0];
    for key in ["name", "prompt", "negative_prompt", "kiln_scheduler", "steps", "guidance_scale", "width", "height", "seed"] {
        assert_eq!(cuda[key], c[key], "the CUDA golden's first case is the same request");
    }
    g.noise_generator = kiln_noise_generator::TorchCuda as u32;
    let (_, want) = common::read_npy("torch-cuda-seed/euler_a_64.image.npy");
    let d = common::max_abs_diff(&common::ffi_generate_rgb_64(model, &g), &want);
    common::check_margin("torch_cuda_seed::c_api::euler_a_64_abs", d as f64, IMAGE_TOL + 0.5 / 255.0);
    unsafe { kiln_model_free(model) };
    unsafe { kiln_runtime_destroy(rt) };
}

fn cuda_cases() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(common::golden("torch-cuda-seed/cases.json")).unwrap()).unwrap()
}

/// `seed`'s first draws of `sizes` values each from the CUDA generator.
fn cuda_draws(seed: u64, sizes: &[usize]) -> Vec<Vec<f32>> {
    let mut rng = TorchCudaRng::new(seed);
    sizes
        .iter()
        .map(|&n| {
            let mut v = vec![0.0f32; n];
            rng.fill_normals(&mut v).unwrap();
            v
        })
        .collect()
}

#[test]
fn cuda_noise_is_what_nvidia_gpus_printed() {
    let published: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::golden("torch-cuda-seed/published.json")).unwrap()).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f64> { v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect() };
    // Three draws in a row after manual_seed(0): a and b of 8x8, then bias of 1x8.
    let p = &published["cuda_printout"];
    let [a, b, bias]: [Vec<f32>; 3] = cuda_draws(p["seed"].as_u64().unwrap(), &[64, 64, 8]).try_into().unwrap();
    let half_step = 0.5 * 10f64.powi(-(p["a_decimals"].as_i64().unwrap() as i32));
    let printed_a = floats(&p["a_printed"]);
    let err_a = a.iter().zip(&printed_a).map(|(&g, w)| (g as f64 - w).abs()).fold(0.0, f64::max);
    eprintln!("first draw: {err_a:e} from the 4-decimal printout (half its step: {half_step:e})");
    common::check_margin("torch_cuda_seed::printed::first_draw_abs", (err_a - half_step).max(0.0), 1e-6);
    // Each value beyond the half step of its printing. The later draws only
    // show through relu(a + b/2 + bias), printed to 5 significant digits.
    let digits = p["out_significant_digits"].as_i64().unwrap() as i32;
    let mut past = 0.0f64;
    for (i, want) in floats(&p["out_printed"]).into_iter().enumerate() {
        let got = (a[i] as f64 + 0.5 * b[i] as f64 + bias[i % 8] as f64).max(0.0);
        let step = if want > 0.0 { 10f64.powi(want.log10().floor() as i32 - (digits - 1)) } else { 0.0 };
        past = past.max((got - want).abs() - 0.5 * step);
    }
    common::check_margin("torch_cuda_seed::printed::second_and_third_draws_abs", past.max(0.0), 1e-6);
    // AUTOMATIC1111's documented output of its "NV" source for seed 0.
    let d = &published["a1111_docstring"];
    let n: usize = d["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).product();
    let got = &cuda_draws(d["seed"].as_u64().unwrap(), &[n])[0];
    let err = got.iter().zip(floats(&d["values"])).map(|(&g, w)| (g as f64 - w).abs()).fold(0.0, f64::max);
    common::check_margin("torch_cuda_seed::a1111_documented_abs", err, NOISE_ABS_TOL);
}

#[test]
fn cuda_noise_draws_match_the_golden_stream() {
    let (_, want) = common::read_npy("torch-cuda-seed/randn.npy");
    let mut at = 0;
    for g in cuda_cases()["draws"].as_array().unwrap() {
        let seed = g["seed"].as_u64().unwrap();
        let sizes: Vec<usize> = g["shapes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).product())
            .collect();
        for got in cuda_draws(seed, &sizes) {
            let n = got.len();
            let abs = common::max_abs_diff(&got, &want[at..at + n]);
            eprintln!("seed {seed}, {n} values: {abs:e} absolute, at most {} ulps", max_ulps(&got, &want[at..at + n]));
            common::check_margin(&format!("torch_cuda_seed::randn::{seed}::{n}_abs"), abs as f64, NOISE_ABS_TOL);
            at += n;
        }
    }
    assert_eq!(at, want.len(), "every golden value checked");
}

#[test]
fn a_cuda_seed_gives_diffusers_image_for_that_seed() {
    for c in cuda_cases()["cases"].as_array().unwrap() {
        let kind = c["kind"].as_str().unwrap();
        let request = GenerateRequest {
            width: c["width"].as_u64().unwrap() as usize,
            height: c["height"].as_u64().unwrap() as usize,
            scheduler_overrides: Some(c["scheduler_overrides"].clone()),
            strength: c["strength"].as_f64().unwrap_or(1.0) as f32,
            init_image: matches!(kind, "img2img" | "inpaint").then(init_image),
            mask: (kind == "inpaint").then(inpaint_mask),
            // diffusers returns the decoded image as is: compare all of it.
            paste_unmasked: Some(false),
            ..common::seeded_golden_request(c, c["seed"].as_u64().unwrap(), NoiseGenerator::TorchCuda)
        };
        let model = if kind == "sdxl" { sdxl_model() } else { common::tiny_model() };
        check_golden_generation(model, &request, c, "torch-cuda-seed", "torch_cuda_seed");
    }
}
