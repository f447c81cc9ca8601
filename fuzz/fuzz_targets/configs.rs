//! Every JSON config a model folder holds, read the way `Model::load` reads
//! it: the fuzz input is split at NUL bytes into model_index.json,
//! scheduler/scheduler_config.json, unet/, vae_decoder/ and text_encoder/
//! config.json and a matting config.json (a missing part is a missing file).
//! A layout that opens must then build and step every scheduler from its
//! scheduler config without a panic and with finite sizes.
#![no_main]
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use kiln::model::layout::ModelLayout;
use kiln::model::matting::MattingConfig;
use kiln::scheduler::{self, NoiseSource, SchedulerKind};
use libfuzzer_sys::fuzz_target;

const FILES: [&str; 5] = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "unet/config.json",
    "vae_decoder/config.json",
    "text_encoder/config.json",
];

/// A model folder whose graphs and tokenizer are empty placeholders (the
/// layout only checks that they exist), one per fuzzing process.
static FOLDER: LazyLock<PathBuf> = LazyLock::new(|| {
    let root = std::env::temp_dir().join(format!("kiln-fuzz-configs-{}", std::process::id()));
    for dir in ["text_encoder", "unet", "vae_decoder", "scheduler", "tokenizer"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for f in ["text_encoder/model.onnx", "unet/model.onnx", "vae_decoder/model.onnx", "tokenizer/tokenizer.json"] {
        std::fs::write(root.join(f), b"").unwrap();
    }
    root
});

struct Zeros;
impl NoiseSource for Zeros {
    fn fill_normals(&mut self, out: &mut [f32]) -> kiln::Result<()> {
        out.fill(0.0);
        Ok(())
    }
}

fn write_or_remove(path: &Path, part: Option<&[u8]>) {
    match part {
        Some(bytes) => std::fs::write(path, bytes).unwrap(),
        None => {
            let _ = std::fs::remove_file(path);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&steps, rest)) = data.split_first() else { return };
    let mut parts = rest.split(|&b| b == 0);
    let root = &*FOLDER;
    for f in FILES {
        write_or_remove(&root.join(f), parts.next());
    }
    if let Some(matting) = parts.next() {
        if let Ok(text) = std::str::from_utf8(matting) {
            let _ = MattingConfig::from_json(text);
        }
    }
    let Ok(layout) = ModelLayout::open(root) else { return };
    let _ = (layout.default_size(), layout.size_multiple());
    let steps = 1 + steps as usize % 30;
    for kind in (0..16).filter_map(SchedulerKind::from_u32) {
        let Ok(mut s) = scheduler::build(kind, &layout.scheduler_config, steps) else { continue };
        let shape = [1usize, 4, 2, 2];
        let mut x = ndarray::ArrayD::<f32>::from_elem(ndarray::IxDyn(&shape), 0.5);
        let out = ndarray::ArrayD::<f32>::from_elem(ndarray::IxDyn(&shape), 0.1);
        let calls = s.timesteps().len();
        let _ = s.add_noise(&x, &out, 0);
        let _ = s.add_noise(&x, &out, calls.saturating_sub(1));
        for i in 0..calls {
            let _ = s.scale_model_input(&x, i);
            match s.step(&out, i, &x, &mut Zeros) {
                Ok(next) => x = next,
                Err(_) => break,
            }
        }
    }
});
