//! Times one VAE decode and reports this process's peak memory: the numbers
//! behind docs/benchmarks.md's "VAE decode: memory and the fast decoder".
//!
//! `vae_bench MODEL SIZE [--tile PX] [--overlap PX] [--fast] [--runs N] [--threads N]`
//! decodes seeded `[1, 4, SIZE/8, SIZE/8]` latents (whole, tiled, or with the
//! preview decoder) and prints one JSON line: seconds per decode (the fastest
//! of the runs after one warm-up when runs > 1) and the process's peak resident
//! memory (`VmHWM`) after loading and after decoding. Run one configuration per
//! process, so each peak is its own (tools/vae_memory.sh does).
use std::time::Instant;

use kiln::model::vae::{FinalDecoder, VaeTiling};
use kiln::pipeline::noise::NoiseRng;
use kiln::{Model, Runtime, RuntimeOptions};

fn vm_hwm_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err("usage: vae_bench MODEL SIZE [--tile PX] [--overlap PX] [--fast] [--runs N] [--threads N]".into());
    }
    let (model_dir, size): (&str, usize) = (&args[0], args[1].parse()?);
    let (mut tiling, mut decoder, mut runs, mut threads) = (VaeTiling::default(), FinalDecoder::Vae, 1usize, 0usize);
    let mut i = 2;
    while i < args.len() {
        let v = || args.get(i + 1).cloned().ok_or("missing value");
        match args[i].as_str() {
            "--tile" => tiling.tile_size = v()?.parse()?,
            "--overlap" => tiling.overlap = v()?.parse()?,
            "--runs" => runs = v()?.parse()?,
            "--threads" => threads = v()?.parse()?,
            "--fast" => {
                decoder = FinalDecoder::Preview;
                i += 1;
                continue;
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
        i += 2;
    }
    let runtime = Runtime::new(&RuntimeOptions { intra_op_threads: threads, ..Default::default() })?;
    let model = Model::load(&runtime, std::path::Path::new(model_dir))?;
    let side = size / 8;
    let z = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[1, 4, side, side]), NoiseRng::new(1).normals(4 * side * side))?;
    let loaded = vm_hwm_mib();
    let mut best = f64::INFINITY;
    for _ in 0..runs.max(1) + usize::from(runs > 1) {
        let t = Instant::now();
        let image = model.decode_latents(&z, &tiling, decoder)?;
        best = best.min(t.elapsed().as_secs_f64());
        assert_eq!(image.width, size);
    }
    println!(
        "{{\"size\": {size}, \"tile\": {}, \"overlap\": {}, \"decoder\": \"{decoder:?}\", \"seconds\": {best:.3}, \"peak_mib_after_load\": {loaded:.0}, \"peak_mib\": {:.0}}}",
        tiling.tile_size,
        tiling.overlap,
        vm_hwm_mib()
    );
    Ok(())
}
