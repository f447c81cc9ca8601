//! CLIP skip by text-encoder rewrite, against diffusers' definition computed
//! with the PyTorch text encoder the fixture was exported from
//! (tools/make_clip_skip_golden.py): final_layer_norm(hidden_states[-(k+1)]),
//! within 1e-4.
mod common;

use kiln::pipeline::{GenerateRequest, Hooks};
use kiln::SchedulerKind;

#[test]
fn clip_skip_matches_diffusers() {
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::golden("clip_skip/index.json")).unwrap()).unwrap();
    let base = common::tiny_model();
    for row in index.as_array().unwrap() {
        let prompt = row["prompt"].as_str().unwrap();
        let k = row["clip_skip"].as_u64().unwrap() as u32;
        let got = base.clip_skip(k).unwrap().encode_prompt(prompt).unwrap();
        let (shape, want) = common::read_npy(&format!("clip_skip/{}", row["file"].as_str().unwrap()));
        assert_eq!(got.shape(), &shape[..]);
        let d = common::max_abs_diff(&got.iter().copied().collect::<Vec<_>>(), &want);
        common::check_margin(&format!("clip_skip::{prompt:?}::skip{k}::embeds_abs"), d as f64, 1e-4);
        // And it differs from the plain embeddings.
        let plain = base.encode_prompt(prompt).unwrap();
        assert!(common::max_abs_diff(&plain.iter().copied().collect::<Vec<_>>(), &want) > 1e-2);
    }
}

#[test]
fn clip_skip_in_requests_and_errors() {
    let m = common::tiny_model();
    let r = GenerateRequest { prompt: "snow".into(), steps: 2, scheduler: SchedulerKind::Ddim, clip_skip: 1, ..Default::default() };
    let a = m.generate_with(&r, Hooks::default()).unwrap();
    let b = m.generate_with(&GenerateRequest { clip_skip: 0, ..r.clone() }, Hooks::default()).unwrap();
    assert_ne!(a.image.data, b.image.data, "clip skip changes the image");
    // The tiny text encoder has 2 layers: skipping 2 leaves nothing.
    let e = m.generate_with(&GenerateRequest { clip_skip: 2, ..r }, Hooks::default()).unwrap_err();
    assert_eq!(e.kind(), kiln::ErrorKind::InvalidArgument, "{e}");
}
