//! The VAE passes: tiled decode and encode against whole ones, tiling on
//! seamless axes, the float32 retry of an overflowing float16 decoder, and the
//! fast final decode through the preview decoder.
mod common;

use kiln::image::seam::{seam_score, Axis};
use kiln::model::seamless::Seamless;
use kiln::pipeline::noise::NoiseRng;
use kiln::pipeline::{FinalDecoder, GenerateRequest, Hooks, InitImage, VaeTiling};
use kiln::{ErrorKind, FloatImage, Model, SchedulerKind};
use ndarray::{ArrayD, IxDyn};

/// U-Net-scale latents `[1, 4, side, side]` of unit variance (what a denoising run ends near).
fn latents(side: usize, seed: u64) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(&[1, 4, side, side]), NoiseRng::new(seed).normals(4 * side * side)).unwrap()
}

fn tiles(tile_size: usize, overlap: usize) -> VaeTiling {
    VaeTiling { tile_size, overlap, memory_budget: 0 }
}

/// (max, mean) |a - b| over all values.
fn diff(a: &FloatImage, b: &FloatImage) -> (f64, f64) {
    assert_eq!((a.width, a.height), (b.width, b.height));
    let d: Vec<f64> = a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs() as f64).collect();
    (d.iter().cloned().fold(0.0, f64::max), d.iter().sum::<f64>() / d.len() as f64)
}

fn decode(m: &Model, z: &ArrayD<f32>, t: VaeTiling) -> FloatImage {
    m.decode_latents(z, &t, FinalDecoder::Vae).unwrap()
}

/// Tiles of 128 px (16 latents) over a 256 px image with half a tile of
/// overlap stay close to the whole decode. They cannot match it exactly: the
/// VAE's GroupNorms take their statistics per tile and its mid-block attention
/// sees only the tile (as in every tiled VAE, diffusers' and
/// stable-diffusion.cpp's included). The bounds are in [0, 1] image units.
#[test]
fn tiled_decode_is_close_to_the_whole_decode() {
    let m = common::tiny_model();
    let z = latents(32, 11);
    let whole = decode(m, &z, VaeTiling::default());
    assert_eq!((whole.width, whole.height), (256, 256));
    let tiled = decode(m, &z, tiles(128, 64));
    let (max, mean) = diff(&whole, &tiled);
    common::check_margin("vae::tiled_decode::overlap64_mean_abs", mean, 0.02);
    common::check_margin("vae::tiled_decode::overlap64_max_abs", max, 0.25);
    // A one-latent overlap blends over 8 pixels only: measurably worse, so the
    // overlap is what brings the tiles together.
    let thin = decode(m, &z, tiles(128, 8));
    let (thin_max, thin_mean) = diff(&whole, &thin);
    eprintln!("overlap 8 px: max {thin_max:.4} mean {thin_mean:.5}; overlap 64 px: max {max:.4} mean {mean:.5}");
    assert!(mean < thin_mean, "more overlap must bring the tiled decode closer to the whole one");
    // A tile as large as the image is the whole decode, bit for bit.
    assert_eq!(decode(m, &z, tiles(256, 64)).data, whole.data);
}

/// A memory budget tiles only when the whole decode would not fit, and then
/// decodes exactly as the explicit tile size it chose.
#[test]
fn memory_budget_chooses_the_tile() {
    let m = common::tiny_model();
    let z = latents(32, 12);
    let whole = decode(m, &z, VaeTiling::default());
    let roomy = decode(m, &z, VaeTiling { memory_budget: 1 << 40, ..Default::default() });
    assert_eq!(roomy.data, whole.data, "a budget the whole decode fits in must not tile");
    let c = m.layout().vae_config.full_res_channels;
    // Budget for a 128 px tile exactly: the plan picks 16 latents.
    let budget = kiln::model::vae::estimate_decode_bytes(128, 128, c, 8);
    let tight = decode(m, &z, VaeTiling { memory_budget: budget, ..Default::default() });
    assert_eq!(tight.data, decode(m, &z, tiles(128, 32)).data, "budget {budget} bytes must pick 128 px tiles (overlap a quarter)");
}

/// On seamless axes the tiles wrap around the edge. With a tile grid of equal
/// steps, rolling the latents by one step rolls the image by 8 steps exactly,
/// and the image keeps tiling: its wrap seam scores like the whole seamless
/// decode's, far below a plain model's.
#[test]
fn tiled_seamless_decode_wraps_and_still_tiles() {
    let plain = common::tiny_model();
    let m = plain.seamless(Seamless::Xy).unwrap();
    // Smooth latents that are periodic on the 32-latent torus (what a
    // seamless U-Net produces), so the decoded image itself has small
    // neighbour differences and a zero-padded border shows as a seam.
    let tau = std::f32::consts::TAU;
    let z = ArrayD::from_shape_fn(IxDyn(&[1, 4, 32, 32]), |i| {
        let (c, y, x) = (i[1] as f32, i[2] as f32, i[3] as f32);
        1.5 * (tau * (x + 5.0 * c) / 32.0).sin() + 1.2 * (tau * 2.0 * (y + 3.0 * c) / 32.0).cos() + 0.5 * (tau * (x + y) / 32.0).sin()
    });
    // 16-latent tiles, 8 overlap: starts 0, 8, 16, 24 around the circle.
    let t = tiles(128, 64);
    let image = decode(&m, &z, t);
    let mut rolled_z = z.clone();
    for c in 0..4 {
        for y in 0..32 {
            for x in 0..32 {
                rolled_z[[0, c, (y + 8) % 32, (x + 8) % 32]] = z[[0, c, y, x]];
            }
        }
    }
    let rolled = decode(&m, &rolled_z, t);
    let mut worst = 0f64;
    for y in 0..256 {
        for x in 0..256 {
            for c in 0..3 {
                let a = image.data[(y * 256 + x) * 3 + c];
                let b = rolled.data[(((y + 64) % 256) * 256 + (x + 64) % 256) * 3 + c];
                worst = worst.max((a - b).abs() as f64);
            }
        }
    }
    common::check_margin("vae::tiled_seamless::roll_by_one_step_abs", worst, 1e-5);
    let whole = decode(&m, &z, VaeTiling::default());
    let score = |img: &FloatImage, axis| seam_score(&img.to_rgba8(), axis).unwrap() as f64;
    for axis in [Axis::X, Axis::Y] {
        let (tiled_s, whole_s, plain_s) = (score(&image, axis), score(&whole, axis), score(&decode(plain, &z, t), axis));
        eprintln!("seam score {axis:?}: tiled seamless {tiled_s:.3}, whole seamless {whole_s:.3}, tiled plain {plain_s:.3}");
        common::check_margin(&format!("vae::tiled_seamless::seam_score_{axis:?}"), tiled_s, 1.5);
        assert!(plain_s > 2.0 * tiled_s, "a plain model's tiles must not tile ({plain_s} vs {tiled_s})");
    }
    // Smooth latents vary in their statistics from tile to tile, so the
    // GroupNorms make these tiles differ more from the whole decode than in
    // the random-latent test above; printed, not bounded here.
    let (max, mean) = diff(&whole, &image);
    eprintln!("tiled vs whole seamless (smooth latents): max {max:.4} mean {mean:.4}");
}

/// img2img with tiled encode and decode: a wider overlap brings it closer to
/// the untiled run. (On the random tiny model the difference is large, ~0.07
/// mean at overlap 64, because its encoder's GroupNorms amplify per-tile
/// statistics; it is printed, not bounded.)
#[test]
fn tiled_img2img_is_close_to_the_whole_run() {
    let m = common::tiny_model();
    let side = 256;
    // A texture-like picture whose statistics are the same everywhere (tiles
    // see similar GroupNorm statistics, as on real textures): a checker with
    // seeded noise.
    let mut rng = NoiseRng::new(21);
    let rgb: Vec<u8> = (0..side * side * 3)
        .map(|i| {
            let (x, y) = ((i / 3) % side, (i / 3) / side);
            let base = if (x / 16 + y / 16) % 2 == 0 { 90.0 } else { 170.0 };
            (base + 30.0 * rng.normal()).clamp(0.0, 255.0) as u8
        })
        .collect();
    let request = GenerateRequest {
        prompt: "stone".into(),
        width: side,
        height: side,
        steps: 4,
        strength: 0.3,
        posterior_mean: true,
        guidance_scale: 1.0,
        scheduler: SchedulerKind::Ddim,
        init_image: Some(InitImage { width: side, height: side, rgb }),
        ..Default::default()
    };
    let whole = m.generate_with(&request, Hooks::default()).unwrap();
    let tiled = m.generate_with(&GenerateRequest { vae_tiling: tiles(128, 64), ..request.clone() }, Hooks::default()).unwrap();
    let thin = m.generate_with(&GenerateRequest { vae_tiling: tiles(128, 8), ..request }, Hooks::default()).unwrap();
    let (max, mean) = diff(&whole.image, &tiled.image);
    let (thin_max, thin_mean) = diff(&whole.image, &thin.image);
    eprintln!("tiled img2img vs whole: overlap 64 px max {max:.4} mean {mean:.4}; overlap 8 px max {thin_max:.4} mean {thin_mean:.4}");
    assert!(mean < thin_mean, "more overlap must bring tiled img2img closer to the whole run");
}

#[test]
fn bad_tilings_are_refused_and_the_model_stays_usable() {
    let m = common::tiny_model();
    let z = latents(8, 1);
    for (t, what) in [(tiles(16, 0), "too small"), (tiles(64, 64), "overlap")] {
        let e = m.decode_latents(&z, &t, FinalDecoder::Vae).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{what}: {e}");
    }
    let e = m.decode_latents(&latents(8, 1).into_shape_with_order(IxDyn(&[1, 2, 16, 8])).unwrap(), &VaeTiling::default(), FinalDecoder::Vae).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSize, "{e}");
    decode(m, &z, VaeTiling::default());
}

/// The fixture's float16 decoder overflows (inf, then NaN: black pixels if
/// nobody looked). Kiln notices, upcasts the graph to float32 and decodes
/// again: the image is the float32 network's (torch, golden).
#[test]
fn fp16_overflow_is_retried_in_float32() {
    let dir = common::variant_folder("vae-fp16-overflow");
    let m = Model::load(common::runtime(), &dir).unwrap();
    let (shape, z) = kiln::image::npy::read_f32(&dir.join("golden/latents.npy")).unwrap();
    let z = ArrayD::from_shape_vec(IxDyn(&shape), z).unwrap();
    let (gshape, golden) = kiln::image::npy::read_f32(&dir.join("golden/image.npy")).unwrap();
    let (h, w) = (gshape[2], gshape[3]);
    let want: Vec<f32> = (0..h * w * 3)
        .map(|i| {
            let (p, c) = (i / 3, i % 3);
            (golden[c * h * w + p] / 2.0 + 0.5).clamp(0.0, 1.0)
        })
        .collect();
    let image = decode(&m, &z, VaeTiling::default());
    let got_max = image.data.iter().zip(&want).map(|(a, b)| (a - b).abs() as f64).fold(0.0, f64::max);
    common::check_margin("vae::fp16_overflow::retry_vs_torch_f32_abs", got_max, 1e-4);
    let mean = image.data.iter().map(|&v| v as f64).sum::<f64>() / image.data.len() as f64;
    assert!(mean > 0.1, "the retried image must not be black (mean {mean})");
    // Tiled, the retry decodes the tiles in float32 as well (how close tiles
    // come to the whole decode is the tiling tests' business).
    let tiled = decode(&m, &z, tiles(64, 32));
    let tiled_mean = tiled.data.iter().map(|&v| v as f64).sum::<f64>() / tiled.data.len() as f64;
    assert!(tiled.data.iter().all(|v| v.is_finite()) && tiled_mean > 0.1, "tiled retry: mean {tiled_mean}");
    eprintln!("tiled retry vs whole retry: mean abs {:.4}", diff(&tiled, &image).1);
    // A whole generation on the overflowing model gives a finite, non-black image too.
    let g = m.generate(&GenerateRequest { prompt: "x".into(), steps: 2, scheduler: SchedulerKind::Ddim, ..Default::default() }).unwrap();
    assert!(g.data.iter().all(|v| v.is_finite()) && g.data.iter().any(|&v| v > 0.05));
}

/// `FinalDecoder::Preview` decodes with the tiny preview decoder: the same
/// image as its golden (torch AutoencoderTiny), and UNSUPPORTED on a model
/// without one, which stays usable.
#[test]
fn fast_final_decode_uses_the_preview_decoder() {
    let dir = common::variant_folder("taesd-preview");
    let m = Model::load(common::runtime(), &dir).unwrap();
    let (shape, z) = kiln::image::npy::read_f32(&dir.join("golden/latents.npy")).unwrap();
    let z = ArrayD::from_shape_vec(IxDyn(&shape), z).unwrap();
    let (_, want) = kiln::image::npy::read_f32(&dir.join("golden/preview.npy")).unwrap();
    let image = m.decode_latents(&z, &VaeTiling::default(), FinalDecoder::Preview).unwrap();
    let max = image.data.iter().zip(&want).map(|(a, b)| (a - b).abs() as f64).fold(0.0, f64::max);
    common::check_margin("vae::fast_decode::preview_vs_torch_abs", max, 1e-4);
    let request = GenerateRequest { prompt: "x".into(), steps: 2, scheduler: SchedulerKind::Ddim, ..Default::default() };
    let fast = m.generate_with(&GenerateRequest { decoder: FinalDecoder::Preview, ..request.clone() }, Hooks::default()).unwrap();
    let again = m.decode_latents(&fast.latents, &VaeTiling::default(), FinalDecoder::Preview).unwrap();
    assert_eq!(fast.image.data, again.data, "a generation's fast decode is the preview decoder's image of its latents");
    let e = common::tiny_model().generate(&GenerateRequest { decoder: FinalDecoder::Preview, ..request.clone() }).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    common::tiny_model().generate(&request).unwrap();
}

/// The C fields: a bad `final_decoder` or tile size is INVALID_ARGUMENT, the
/// fast decode without a preview decoder UNSUPPORTED, a tiled request draws an
/// image; an options struct of the previous size (without the VAE fields) is
/// still accepted; the model stays usable throughout.
#[test]
fn c_fields_are_checked_and_work() {
    use kiln::ffi::kiln_status;
    use kiln::ffi::model::*;
    use kiln::ffi::runtime::*;
    use std::ptr;
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok);
    let dir = std::ffi::CString::new(common::fixture().to_str().unwrap()).unwrap();
    let mut model = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_load(rt, dir.as_ptr(), &mut model) }, kiln_status::Ok);
    let prompt = std::ffi::CString::new("stone").unwrap();
    let options = || {
        let mut o = unsafe { std::mem::zeroed::<kiln_generate_options>() };
        unsafe { kiln_generate_options_init(&mut o) };
        o.prompt = prompt.as_ptr();
        o.steps = 2;
        o.width = 128;
        o.height = 128;
        o
    };
    let generate = |o: &kiln_generate_options| {
        let mut image = ptr::null_mut();
        let s = unsafe { kiln_model_generate(model, o, &mut image) };
        unsafe { kiln::ffi::image::kiln_image_free(image) };
        s
    };
    assert_eq!(generate(&kiln_generate_options { final_decoder: 7, ..options() }), kiln_status::InvalidArgument);
    assert_eq!(generate(&kiln_generate_options { vae_tile_size: 8, ..options() }), kiln_status::InvalidArgument);
    assert_eq!(generate(&kiln_generate_options { final_decoder: 1, ..options() }), kiln_status::Unsupported);
    assert_eq!(generate(&kiln_generate_options { vae_tile_size: 64, vae_tile_overlap: 16, ..options() }), kiln_status::Ok);
    assert_eq!(generate(&kiln_generate_options { vae_memory_budget_mib: 1, ..options() }), kiln_status::Ok);
    let old_size = std::mem::offset_of!(kiln_generate_options, vae_tile_size) as u32;
    assert_eq!(generate(&kiln_generate_options { struct_size: old_size, ..options() }), kiln_status::Ok);
    unsafe { kiln_model_free(model) };
    unsafe { kiln_runtime_destroy(rt) };
}
