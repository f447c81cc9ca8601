//! Micro-benchmarks of the CPU work Kiln does around ONNX Runtime: tokenizing a
//! prompt, a scheduler's steps (every sampler), and the image post-processing,
//! at the sizes a game uses (SD 1.5: 4×64×64 latents, 512² images). No graph
//! runs here, so `cargo bench --bench micro` needs no ONNX Runtime; what a
//! whole image costs is `examples/bench.rs` and `tools/bench_compare.py`
//! (docs/benchmarks.md). Criterion keeps the last run under
//! `target/criterion` and prints the change against it.
use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kiln::image::{material, pixel_art, seam, sprite};
use kiln::pipeline::noise::NoiseRng;
use kiln::scheduler::{self, NoiseSource, SchedulerKind};
use kiln::tokenizer::ClipTokenizer;
use kiln::{FloatImage, Rgba8Image};
use ndarray::{ArrayD, IxDyn};

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/kiln-tiny-textures")
}

fn tokenizer(c: &mut Criterion) {
    // The bundled model carries the real CLIP vocabulary and merges (49408 tokens).
    let tok = ClipTokenizer::from_dir(&model_dir().join("tokenizer"), 77).expect("bundled tokenizer");
    let short = "mossy stone brick wall, seamless texture, highly detailed";
    let long = [short; 12].join(", ");
    let mut g = c.benchmark_group("tokenizer");
    g.bench_function("encode 12-token prompt", |b| b.iter(|| tok.encode(black_box(short)).unwrap()));
    g.bench_function("weighted chunks, 150-token prompt", |b| {
        b.iter(|| tok.weighted_chunks(black_box(&long)).unwrap())
    });
    g.finish();
}

fn schedulers(c: &mut Criterion) {
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model_dir().join("scheduler/scheduler_config.json")).expect("scheduler config"),
    )
    .unwrap();
    const STEPS: usize = 20;
    let shape = [1usize, 4, 64, 64]; // SD 1.5 latents of a 512² image
    let mut rng = NoiseRng::new(1);
    let sample = rng.draw(&shape).unwrap();
    let model_output = rng.draw(&shape).unwrap();
    let mut g = c.benchmark_group("scheduler, 20 steps on 4x64x64 latents");
    // Throughput in steps: criterion's "elem/s" is steps per second.
    g.throughput(Throughput::Elements(STEPS as u64));
    for name in SchedulerKind::NAMES.iter().filter(|n| **n != "default") {
        let kind = SchedulerKind::from_name(name).unwrap();
        g.bench_function(*name, |b| {
            b.iter_batched(
                || (scheduler::build(kind, &config, STEPS).unwrap(), NoiseRng::new(7)),
                |(mut s, mut noise)| {
                    let mut x = sample.clone();
                    for i in 0..s.timesteps().len() {
                        let scaled = s.scale_model_input(&x, i);
                        black_box(&scaled);
                        x = s.step(&model_output, i, &x, &mut noise).unwrap();
                    }
                    x
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// A 512² texture-like RGBA image: smooth colour bands plus noise.
fn test_image(size: usize) -> Rgba8Image {
    let mut rng = NoiseRng::new(3);
    let mut pixels = Vec::with_capacity(size * size * 4);
    for y in 0..size {
        for x in 0..size {
            let n = (rng.normal() * 12.0) as i32;
            let v = |base: i32| (base + n).clamp(0, 255) as u8;
            pixels.extend_from_slice(&[v((x * 255 / size) as i32), v((y * 255 / size) as i32), v(96), 255]);
        }
    }
    Rgba8Image { width: size, height: size, pixels }
}

/// The same image on a flat magenta key, as a sprite prompt produces.
fn keyed_image(size: usize) -> Rgba8Image {
    let mut img = test_image(size);
    for y in 0..size {
        for x in 0..size {
            let (dx, dy) = (x as i64 - size as i64 / 2, y as i64 - size as i64 / 2);
            if dx * dx + dy * dy > (size as i64 / 3).pow(2) {
                img.pixels[(y * size + x) * 4..][..3].copy_from_slice(&[255, 0, 255]);
            }
        }
    }
    img
}

fn post_processing(c: &mut Criterion) {
    const SIZE: usize = 512;
    let mut rng = NoiseRng::new(5);
    let float = FloatImage {
        width: SIZE,
        height: SIZE,
        data: (0..SIZE * SIZE * 3).map(|_| rng.uniform() as f32).collect(),
    };
    let texture = test_image(SIZE);
    let keyed = keyed_image(SIZE);
    let mut g = c.benchmark_group("post-processing, 512x512");
    g.bench_function("float RGB to RGBA8", |b| b.iter(|| black_box(&float).to_rgba8()));
    g.bench_function("copy RGBA8 into a caller buffer (row pitch 2048)", |b| {
        let mut dst = vec![0u8; texture.required_len(SIZE * 4).expect("fits")];
        b.iter(|| texture.copy_to(black_box(&mut dst), SIZE * 4).unwrap())
    });
    g.bench_function("seam score, both axes", |b| {
        b.iter(|| {
            let x = seam::seam_score(black_box(&texture), seam::Axis::X).unwrap();
            x + seam::seam_score(&texture, seam::Axis::Y).unwrap()
        })
    });
    g.bench_function("sprite: key detection, alpha, despill, trim", |b| {
        b.iter(|| sprite::make_sprite(black_box(&keyed), &sprite::SpriteOptions::default()).unwrap())
    });
    g.bench_function("pixel art: 8 px cells, 16-colour k-means", |b| {
        b.iter(|| pixel_art::pixel_art(black_box(&texture), &pixel_art::PixelArtOptions::default()).unwrap())
    });
    g.bench_function("height and normal maps", |b| {
        b.iter(|| material::material_maps(black_box(&texture), &material::MaterialOptions::default()).unwrap())
    });
    g.bench_function("mask resize 512 to 64 (bilinear)", |b| {
        let mask: Vec<f32> = (0..SIZE * SIZE).map(|i| (i % 7) as f32 / 7.0).collect();
        b.iter(|| kiln::image::resize::resize_bilinear(black_box(&mask), 1, SIZE, SIZE, 64, 64))
    });
    g.finish();
}

fn latents_noise(c: &mut Criterion) {
    // Initial noise for a 512² image, from Kiln's portable generator.
    c.bench_function("initial noise, 4x64x64 normals", |b| {
        b.iter(|| {
            let mut rng = NoiseRng::new(black_box(42));
            ArrayD::from_shape_vec(IxDyn(&[1, 4, 64, 64]), rng.normals(4 * 64 * 64)).unwrap()
        })
    });
}

criterion_group!(benches, tokenizer, schedulers, post_processing, latents_noise);
criterion_main!(benches);
