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
