//! Step previews: the latent→RGB projection is fitted from the model's own VAE
//! and tracks the decoded image at latent resolution.
mod common;

use kiln::pipeline::{GenerateRequest, Hooks};
use kiln::SchedulerKind;

/// Mean absolute difference between a preview and the decoded image averaged
/// over the same 8×8 blocks, against the same for a flat grey guess.
#[test]
fn preview_tracks_the_decoded_image() {
    let m = common::tiny_model();
    let proj = m.preview_projection().expect("fit succeeds");
    eprintln!("preview fit R² = {:.3}", proj.r_squared);
    assert!(proj.r_squared > 0.0 && proj.r_squared <= 1.0, "R² {}", proj.r_squared);

    let request = GenerateRequest { prompt: "rusty iron plate".into(), steps: 8, seed: 5, scheduler: SchedulerKind::Ddim, ..Default::default() };
    let mut previews = Vec::new();
    let mut on_step = |p: &kiln::pipeline::StepProgress<'_>| previews.push(m.preview(p.latents).unwrap());
    let out = m.generate_with(&request, Hooks { on_step: Some(&mut on_step), ..Default::default() }).unwrap();
    assert_eq!(previews.len(), 8);
    let last = previews.last().unwrap();
    assert_eq!((last.width, last.height), (8, 8));
    let (w, f) = (out.image.width, 8);
    let (mut err_preview, mut err_flat) = (0.0f64, 0.0f64);
    for by in 0..8 {
        for bx in 0..8 {
            for c in 0..3 {
                let mut mean = 0.0f64;
                for y in 0..f {
                    for x in 0..f {
                        mean += out.image.data[((by * f + y) * w + bx * f + x) * 3 + c] as f64;
                    }
                }
                mean /= (f * f) as f64;
                let p = last.pixels[(by * 8 + bx) * 4 + c] as f64 / 255.0;
                err_preview += (p - mean).abs();
                err_flat += (0.5 - mean).abs();
            }
        }
    }
    eprintln!("preview error {err_preview:.2} vs flat grey {err_flat:.2}");
    assert!(err_preview < err_flat, "the preview must beat a flat guess ({err_preview} vs {err_flat})");
}

/// tiny-sd plus the taesd-preview variant's `preview_decoder/` in a temp folder.
fn taesd_model() -> kiln::Model {
    let dst = std::env::temp_dir().join(format!("kiln-taesd-{}", std::process::id()));
    fn copy(src: &std::path::Path, dst: &std::path::Path) {
        std::fs::create_dir_all(dst).unwrap();
        for e in std::fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &dst.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
            }
        }
    }
    copy(&common::fixture(), &dst);
    copy(&common::root().join("tests/fixtures/variants/taesd-preview/preview_decoder"), &dst.join("preview_decoder"));
    kiln::Model::load(common::runtime(), &dst).unwrap()
}

/// With a `preview_decoder/` (TAESD-style AutoencoderTiny decoder), previews are
/// its full-size decode, equal to diffusers' AutoencoderTiny on the same latents
/// (tools/make_preview_decoder_fixture.py) up to 8-bit rounding.
#[test]
fn preview_decoder_matches_autoencoder_tiny() {
    let m = taesd_model();
    assert!(m.has_preview_decoder());
    let dir = common::root().join("tests/fixtures/variants/taesd-preview/golden");
    let (shape, latents) = kiln::image::npy::read_f32(&dir.join("latents.npy")).unwrap();
    let latents = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), latents).unwrap();
    let (_, want) = kiln::image::npy::read_f32(&dir.join("preview.npy")).unwrap();
    let got = m.preview(&latents).unwrap();
    assert_eq!((got.width, got.height), (64, 64));
    // Kiln's preview is 8-bit, the reference float: rounding alone accounts
    // for up to half a step (0.5 / 255). What is measured is the excess over
    // that rounding, i.e. the decoder's own float difference, bound 1e-4.
    let mut worst = 0.0f32;
    for (i, w) in want.iter().enumerate() {
        let g = got.pixels[(i / 3) * 4 + i % 3] as f32 / 255.0;
        worst = worst.max(((g - w).abs() - 0.5 / 255.0).max(0.0));
    }
    common::check_margin("preview::taesd_decoder::beyond_rounding_abs", worst as f64, 1e-4);
    // Jobs deliver full-size previews from it.
    let request = GenerateRequest { prompt: "ice".into(), steps: 3, scheduler: SchedulerKind::Ddim, ..Default::default() };
    let mut sizes = Vec::new();
    let mut on_step = |p: &kiln::pipeline::StepProgress<'_>| sizes.push(m.preview(p.latents).unwrap().width);
    m.generate_with(&request, Hooks { on_step: Some(&mut on_step), ..Default::default() }).unwrap();
    assert_eq!(sizes, vec![64, 64, 64]);
}
