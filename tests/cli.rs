//! `examples/generate.rs`, the README's first command: it reproduces the
//! reference when given the same initial noise, writes PNG metadata, and
//! rejects bad flags with a usage error.
mod common;

use std::path::PathBuf;
use std::process::Command;

fn generate_bin() -> PathBuf {
    example_bin("generate")
}

fn example_bin(name: &str) -> PathBuf {
    // cargo test builds examples into target/<profile>/examples/.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let bin = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: plain `cargo test` builds the examples; with a target filter run `cargo build --example {name}` first",
        bin.display()
    );
    bin
}

#[test]
fn cli_reproduces_the_reference_from_its_noise() {
    let out = std::env::temp_dir().join(format!("kiln-cli-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let r = Command::new(generate_bin())
        .args(["--model"])
        .arg(common::fixture())
        .args(["--prompt", "mossy stone brick wall", "--negative-prompt", "blurry", "--steps", "10", "--guidance", "7.5"])
        .args(["--scheduler", "euler", "--init-noise"])
        .arg(common::golden("noise_1x4x8x8.npy"))
        .arg("--out")
        .arg(out.join("a.png"))
        .arg("--out-latents")
        .arg(out.join("l.npy"))
        .arg("--out-npy")
        .arg(out.join("i.npy"))
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (_, got) = kiln::image::npy::read_f32(&out.join("l.npy")).unwrap();
    let (_, want) = common::read_npy("euler_cfg.latents.npy");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    common::check_margin("cli::generate_npy::euler_cfg::latents_rel", (common::max_abs_diff(&got, &want) / scale) as f64, 1e-3);
    let (_, img) = kiln::image::npy::read_f32(&out.join("i.npy")).unwrap();
    let (_, want_img) = common::read_npy("euler_cfg.image.npy");
    common::check_margin("cli::generate_npy::euler_cfg::image_abs", common::max_abs_diff(&img, &want_img) as f64, 2e-3);
    let png = std::fs::read(out.join("a.png")).unwrap();
    let text = String::from_utf8_lossy(&png);
    assert!(text.contains("mossy stone brick wall") && text.contains("steps=10"), "PNG carries the settings");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn cli_noise_torch_gives_diffusers_image_for_the_seed() {
    // tests/fixtures/golden/torch-seed and torch-cuda-seed: diffusers with
    // only a CPU or CUDA generator seeded with 2026 (tests/torch_seed.rs).
    let out = std::env::temp_dir().join(format!("kiln-cli-torch-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    for (noise, golden) in [("torch", "torch-seed"), ("torch_cuda", "torch-cuda-seed")] {
        let r = Command::new(generate_bin())
            .args(["--model"])
            .arg(common::fixture())
            .args(["--prompt", "mossy stone brick wall", "--negative-prompt", "blurry", "--steps", "6", "--guidance", "7.5"])
            .args(["--scheduler", "euler_a", "--width", "64", "--height", "64", "--seed", "2026", "--noise", noise, "--out"])
            .arg(out.join("a.png"))
            .arg("--out-npy")
            .arg(out.join("i.npy"))
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let (_, img) = kiln::image::npy::read_f32(&out.join("i.npy")).unwrap();
        let (_, want) = common::read_npy(&format!("{golden}/euler_a_64.image.npy"));
        common::check_margin(&format!("cli::noise_{noise}::euler_a_64::image_abs"), common::max_abs_diff(&img, &want) as f64, 2e-3);
        let png = std::fs::read(out.join("a.png")).unwrap();
        let reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().unwrap();
        let settings = &reader.info().uncompressed_latin1_text.iter().find(|t| t.keyword == "kiln:settings").unwrap().text;
        assert!(settings.split(' ').any(|w| w == format!("noise={noise}")), "the PNG records the generator: {settings}");
    }
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn cli_variation_seed_gives_the_blended_image() {
    // tests/fixtures/golden/variation, case euler_a_64_cpu (tests/variation.rs).
    let out = std::env::temp_dir().join(format!("kiln-cli-variation-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let run = |strength: &str| {
        Command::new(generate_bin())
            .args(["--model"])
            .arg(common::fixture())
            .args(["--prompt", "mossy stone brick wall", "--negative-prompt", "blurry", "--steps", "6", "--guidance", "7.5"])
            .args(["--scheduler", "euler_a", "--width", "64", "--height", "64", "--seed", "2026", "--noise", "torch"])
            .args(["--variation-seed", "7", "--variation-strength", strength, "--out"])
            .arg(out.join("v.png"))
            .arg("--out-npy")
            .arg(out.join("v.npy"))
            .output()
            .unwrap()
    };
    let r = run("0.3");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (_, img) = kiln::image::npy::read_f32(&out.join("v.npy")).unwrap();
    let (_, want) = common::read_npy("variation/euler_a_64_cpu.image.npy");
    common::check_margin("cli::variation::euler_a_64_cpu::image_abs", common::max_abs_diff(&img, &want) as f64, 2e-3);
    let r = run("2");
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("variation_strength 2"), "{}", String::from_utf8_lossy(&r.stderr));
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn cli_quantize_int8_gives_the_int8_picture_and_records_it() {
    // tests/fixtures/golden/quantize, case euler_cfg (tests/quantize.rs): the
    // CLI's int8 picture is the Rust API's, bit for bit.
    let out = std::env::temp_dir().join(format!("kiln-cli-int8-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let r = Command::new(generate_bin())
        .args(["--model"])
        .arg(common::fixture())
        .args(["--prompt", "mossy stone brick wall", "--negative-prompt", "blurry", "--steps", "8", "--guidance", "7.5"])
        .args(["--scheduler", "euler", "--width", "64", "--height", "64", "--seed", "42", "--noise", "torch", "--quantize", "int8", "--out"])
        .arg(out.join("q.png"))
        .arg("--out-latents")
        .arg(out.join("q.npy"))
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (_, got) = kiln::image::npy::read_f32(&out.join("q.npy")).unwrap();
    let options = kiln::ModelOptions { quantization: kiln::model::quantize::Quantization::Int8, ..Default::default() };
    let model = kiln::Model::load_with(common::runtime(), &common::fixture(), &options).unwrap();
    let c = common::golden_case(&common::golden("quantize/cases.json"), "euler_cfg");
    let want = model.generate_with(&common::seeded_golden_request(&c, 42, kiln::pipeline::NoiseGenerator::TorchCpu), kiln::pipeline::Hooks::default()).unwrap().latents;
    assert!(got.iter().zip(want.iter()).all(|(a, b)| a.to_bits() == b.to_bits()), "CLI and Rust int8 latents differ");
    let png = std::fs::read(out.join("q.png")).unwrap();
    let reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().unwrap();
    let settings = &reader.info().uncompressed_latin1_text.iter().find(|t| t.keyword == "kiln:settings").unwrap().text;
    assert!(settings.split(' ').any(|w| w == "quantization=int8"), "the PNG records int8: {settings}");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn cli_attention_modes_give_the_rust_pictures() {
    // Each --attention mode's latents are the Rust API's with that mode, bit for bit.
    let out = std::env::temp_dir().join(format!("kiln-cli-attention-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let c = common::golden_case(&common::golden("quantize/cases.json"), "euler_cfg");
    let request = common::seeded_golden_request(&c, 42, kiln::pipeline::NoiseGenerator::TorchCpu);
    for (flag, mode) in [("exported", kiln::model::attention::Attention::Exported), ("fused", kiln::model::attention::Attention::Fused)] {
        let npy = out.join(format!("{flag}.npy"));
        let r = Command::new(generate_bin())
            .args(["--model"])
            .arg(common::fixture())
            .args(["--prompt", "mossy stone brick wall", "--negative-prompt", "blurry", "--steps", "8", "--guidance", "7.5"])
            .args(["--scheduler", "euler", "--width", "64", "--height", "64", "--seed", "42", "--noise", "torch", "--attention", flag, "--out"])
            .arg(out.join(format!("{flag}.png")))
            .arg("--out-latents")
            .arg(&npy)
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let (_, got) = kiln::image::npy::read_f32(&npy).unwrap();
        let options = kiln::ModelOptions { attention: mode, ..Default::default() };
        let model = kiln::Model::load_with(common::runtime(), &common::fixture(), &options).unwrap();
        let want = model.generate_with(&request, kiln::pipeline::Hooks::default()).unwrap().latents;
        assert!(got.iter().zip(want.iter()).all(|(a, b)| a.to_bits() == b.to_bits()), "--attention {flag}: CLI and Rust latents differ");
    }
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn cli_rejects_bad_flags_and_values() {
    for args in [&["--bogus"][..], &["--steps", "ten"], &["--scheduler", "warp"], &["--steps"], &["--noise", "numpy"], &["--quantize", "int4"], &["--attention", "flash"]] {
        let r = Command::new(generate_bin()).args(args).output().unwrap();
        assert_eq!(r.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&r.stderr).contains("usage:"), "{args:?}");
    }
    // Jobs on a picture that exclude each other, or sizes the picture sets, are refused before any load.
    for (args, want) in [
        (&["--init-image", "a.png", "--mask", "m.png", "--extend", "8,8,0,0"][..], "--mask and --extend are different jobs"),
        (&["--init-image", "a.png", "--extend", "8,8,0,0", "--make-tileable", "8"], "--extend and --make-tileable are different jobs"),
        (&["--init-image", "a.png", "--make-tileable", "8", "--width", "64"], "drop --width and --height"),
        (&["--init-image", "a.png", "--make-tileable", "8", "--seamless", "x"], "--seamless must be xy or left out"),
    ] {
        let r = Command::new(generate_bin()).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let r = Command::new(generate_bin()).args(["--width", "100", "--out", "/tmp/kiln-never.png"]).output().unwrap();
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("multiple of 16"));
}

#[test]
fn cli_makes_seamless_and_img2img_textures() {
    let out = std::env::temp_dir().join(format!("kiln-cli2-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let r = Command::new(generate_bin())
        .arg("--model")
        .arg(common::fixture())
        .args(["--prompt", "lava", "--steps", "4", "--scheduler", "ddim", "--seamless", "xy"])
        .arg("--out")
        .arg(out.join("tile.png"))
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let r = Command::new(generate_bin())
        .arg("--model")
        .arg(common::fixture())
        .args(["--prompt", "lava", "--steps", "4", "--scheduler", "euler", "--strength", "0.5", "--init-image"])
        .arg(out.join("tile.png"))
        .arg("--out")
        .arg(out.join("again.png"))
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let png = String::from_utf8_lossy(&std::fs::read(out.join("again.png")).unwrap()).into_owned();
    assert!(png.contains("strength=0.5") && png.contains("tile.png"), "settings recorded");
    let r = Command::new(generate_bin())
        .arg("--model")
        .arg(common::fixture())
        .args(["--prompt", "gem", "--steps", "2", "--sprite", "--pixel-art", "8:4"])
        .arg("--normal-map")
        .arg(out.join("n.png"))
        .arg("--out")
        .arg(out.join("sprite.png"))
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(out.join("n.png").exists());
    let r = Command::new(generate_bin()).args(["--pixel-art", "8"]).output().unwrap();
    assert_eq!(r.status.code(), Some(2));
    let r = Command::new(generate_bin()).args(["--seamless", "diagonal"]).output().unwrap();
    assert_eq!(r.status.code(), Some(2));
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn cli_batch_makes_each_line_like_a_single_run_and_names_bad_lines() {
    let out = std::env::temp_dir().join(format!("kiln-cli-batch-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let batch = out.join("batch.tsv");
    std::fs::write(
        &batch,
        format!("# out\tseed\tprompt\n\n{}\t3\tred brick wall\n{}\t4\tgreen moss\n", out.join("a.png").display(), out.join("b.png").display()),
    )
    .unwrap();
    let common_args = ["--steps", "3", "--scheduler", "ddim"];
    let r = Command::new(generate_bin()).arg("--model").arg(common::fixture()).args(common_args).arg("--batch").arg(&batch).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // the second line equals a single run with the same seed and prompt
    let single = out.join("single.png");
    let r = Command::new(generate_bin())
        .arg("--model")
        .arg(common::fixture())
        .args(common_args)
        .args(["--seed", "4", "--prompt", "green moss", "--out"])
        .arg(&single)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let pixels = |p: &std::path::Path| image::open(p).unwrap().to_rgb8().into_raw();
    assert_eq!(pixels(&out.join("b.png")), pixels(&single));
    assert_ne!(pixels(&out.join("a.png")), pixels(&single), "seed and prompt come from each line");
    // a malformed line is named by its line number
    std::fs::write(&batch, format!("{}\tnot-a-seed\tprompt\n", out.join("c.png").display())).unwrap();
    let r = Command::new(generate_bin()).arg("--model").arg(common::fixture()).arg("--batch").arg(&batch).output().unwrap();
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("batch.tsv:1"), "{}", String::from_utf8_lossy(&r.stderr));
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn cli_sprite_uses_a_matting_graph_when_named() {
    let out = std::env::temp_dir().join(format!("kiln-cli-matting-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let matting = common::root().join("tests/fixtures/matting/fixed");
    let run = |extra: &[&std::ffi::OsStr], png: &str| {
        Command::new(generate_bin())
            .arg("--model")
            .arg(common::fixture())
            .args(["--prompt", "gem", "--steps", "2", "--sprite"])
            .args(extra)
            .arg("--out")
            .arg(out.join(png))
            .output()
            .unwrap()
    };
    let r = run(&["--matting".as_ref(), matting.as_os_str()], "matted.png");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stderr).contains("sprite: matting graph"), "{}", String::from_utf8_lossy(&r.stderr));
    let r = run(&[], "keyed.png");
    assert!(String::from_utf8_lossy(&r.stderr).contains("sprite: chroma key"), "{}", String::from_utf8_lossy(&r.stderr));

    // The PNG holds exactly what the Rust API makes from the same request.
    let options = kiln::ModelOptions { matting: Some(matting.clone()), ..Default::default() };
    let model = kiln::Model::load_with(common::runtime(), &common::fixture(), &options).unwrap();
    let request = kiln::GenerateRequest { prompt: "gem".into(), steps: 2, ..Default::default() };
    let image = model.generate(&request).unwrap().to_rgba8();
    let want = model.make_sprite(&image, &Default::default(), kiln::model::matting::Matte::Graph).unwrap();
    let got = image::open(out.join("matted.png")).unwrap().to_rgba8().into_raw();
    assert!(got == want.image.pixels, "the CLI's sprite differs from Model::make_sprite");
    assert!(got.chunks_exact(4).any(|p| p[3] < 255), "the matte made something transparent");

    let r = Command::new(generate_bin()).arg("--matting").arg(&matting).output().unwrap();
    assert_eq!(r.status.code(), Some(2), "--matting without --sprite");
    let r = run(&["--matting".as_ref(), "/nonexistent/rmbg.onnx".as_ref()], "never.png");
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("/nonexistent/rmbg.onnx"));
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn cli_upscales_seamless_textures_and_sprites_like_the_rust_api() {
    let out = std::env::temp_dir().join(format!("kiln-cli-upscale-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let x4 = common::root().join("tests/fixtures/upscaler/x4");
    let run = |extra: &[&str], png: &str| {
        Command::new(generate_bin())
            .arg("--model")
            .arg(common::fixture())
            .args(["--prompt", "lava", "--steps", "3", "--scheduler", "ddim", "--upscale"])
            .arg(&x4)
            .args(extra)
            .arg("--out")
            .arg(out.join(png))
            .output()
            .unwrap()
    };
    let r = run(&["--seamless", "xy", "--upscale-tile", "24", "--upscale-context", "20"], "tile.png");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // The PNG holds what the Rust API makes: the seamless generation, upscaled
    // wrapping on both axes (the CLI passes --seamless on to the upscale).
    let runtime = common::runtime();
    let model = kiln::Model::load_with(runtime, &common::fixture(), &kiln::ModelOptions { seamless: kiln::model::seamless::Seamless::Xy, ..Default::default() }).unwrap();
    let request = kiln::GenerateRequest { prompt: "lava".into(), steps: 3, scheduler: kiln::SchedulerKind::Ddim, ..Default::default() };
    let image = model.generate(&request).unwrap().to_rgba8();
    let up = kiln::model::upscaler::Upscaler::load(runtime, &x4).unwrap();
    let options = kiln::model::upscaler::UpscaleOptions { tile: 24, context: 20, seamless: kiln::model::seamless::Seamless::Xy, ..Default::default() };
    let want = up.upscale(&image, &options).unwrap();
    let got = image::open(out.join("tile.png")).unwrap().to_rgba8();
    assert_eq!(got.dimensions(), (256, 256));
    assert!(got.into_raw() == want.pixels, "the CLI's upscale differs from Upscaler::upscale");
    let png = String::from_utf8_lossy(&std::fs::read(out.join("tile.png")).unwrap()).into_owned();
    assert!(png.contains("size=256x256") && png.contains("upscale_tile=24 upscale_context=20") && png.contains("upscaler/x4"), "settings recorded");
    // A sprite is cut from the upscaled image.
    let r = run(&["--sprite"], "sprite.png");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(image::open(out.join("sprite.png")).unwrap().to_rgba8().dimensions(), (256, 256));
    // Pixel art refuses an upscale; a missing graph is a runtime error naming it.
    let r = run(&["--pixel-art", "8:4"], "never.png");
    assert_eq!(r.status.code(), Some(2), "{}", String::from_utf8_lossy(&r.stderr));
    let r = Command::new(generate_bin())
        .arg("--model")
        .arg(common::fixture())
        .args(["--steps", "1", "--upscale", "/nonexistent/x4.onnx", "--out"])
        .arg(out.join("never.png"))
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("/nonexistent/x4.onnx"), "{}", String::from_utf8_lossy(&r.stderr));
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn the_upscale_example_upscales_a_png_like_the_rust_api() {
    let out = std::env::temp_dir().join(format!("kiln-cli-upscale-png-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    // A sprite-like input: transparent corners, so alpha takes the graph path too.
    let (w, h) = (20u32, 12u32);
    let input = image::RgbaImage::from_fn(w, h, |x, y| image::Rgba([(x * 12) as u8, (y * 20) as u8, 90, if (x + y) % 7 == 0 { 0 } else { 255 }]));
    input.save(out.join("in.png")).unwrap();
    let graph = common::root().join("tests/fixtures/upscaler/x2-fixed.onnx");
    let r = Command::new(example_bin("upscale"))
        .arg("--graph")
        .arg(&graph)
        .arg("--in")
        .arg(out.join("in.png"))
        .args(["--seamless", "x", "--context", "3", "--out"])
        .arg(out.join("out.png"))
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stdout).contains("(40x24, 2x, 4 tiles of 256)"), "{}", String::from_utf8_lossy(&r.stdout));
    let up = kiln::model::upscaler::Upscaler::load(common::runtime(), &graph).unwrap();
    let picture = kiln::Rgba8Image { width: w as usize, height: h as usize, pixels: input.into_raw() };
    let options = kiln::model::upscaler::UpscaleOptions { context: 3, seamless: kiln::model::seamless::Seamless::X, ..Default::default() };
    let want = up.upscale(&picture, &options).unwrap();
    assert!(image::open(out.join("out.png")).unwrap().to_rgba8().into_raw() == want.pixels, "the example differs from Upscaler::upscale");
    for bad in [&["--in", "x.png"][..], &["--graph", "g", "--in", "x.png", "--alpha", "nearest"], &["--graph", "g", "--in", "x.png", "--seamless", "z"]] {
        let r = Command::new(example_bin("upscale")).args(bad).output().unwrap();
        assert_eq!(r.status.code(), Some(2), "{bad:?}");
    }
    std::fs::remove_dir_all(&out).ok();
}

/// `--noise-draws`: diffusers' own draws, recorded into an .npz by
/// tools/make_noise_draws_golden.py, replayed by the CLI: a stochastic sampler
/// in txt2img (with `--init-noise` for the initial latents) and in img2img
/// (posterior sample and add-noise draw from the file too, no `--init-noise`).
#[test]
fn noise_draws_replay_diffusers_exactly() {
    let dir = common::golden("noise_draws");
    let cases: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let out = std::env::temp_dir().join(format!("kiln-cli-draws-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    for c in cases.as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let mut cmd = Command::new(generate_bin());
        cmd.arg("--model").arg(common::fixture());
        cmd.args(["--prompt", c["prompt"].as_str().unwrap(), "--negative-prompt", c["negative_prompt"].as_str().unwrap()]);
        cmd.args(["--steps", &c["steps"].to_string(), "--guidance", &c["guidance_scale"].to_string()]);
        cmd.args(["--scheduler", c["kiln_scheduler"].as_str().unwrap()]);
        cmd.arg("--noise-draws").arg(dir.join(c["draws"].as_str().unwrap()));
        if let Some(init) = c["init_noise"].as_str() {
            cmd.arg("--init-noise").arg(dir.join(init));
        }
        if let Some(image) = c["init_image"].as_str() {
            cmd.arg("--init-image").arg(common::root().join(image));
            cmd.args(["--strength", &c["strength"].to_string()]);
        }
        let (l, i) = (out.join(format!("{name}.l.npy")), out.join(format!("{name}.i.npy")));
        cmd.arg("--out").arg(out.join(format!("{name}.png"))).arg("--out-latents").arg(&l).arg("--out-npy").arg(&i);
        let r = cmd.output().unwrap();
        assert!(r.status.success(), "{name}: {}", String::from_utf8_lossy(&r.stderr));
        let (_, got) = kiln::image::npy::read_f32(&l).unwrap();
        let (_, want) = kiln::image::npy::read_f32(&dir.join(format!("{name}.latents.npy"))).unwrap();
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        common::check_margin(&format!("cli::noise_draws::{name}::latents_rel"), (common::max_abs_diff(&got, &want) / scale) as f64, 1e-3);
        let (_, img) = kiln::image::npy::read_f32(&i).unwrap();
        let (_, want_img) = kiln::image::npy::read_f32(&dir.join(format!("{name}.image.npy"))).unwrap();
        common::check_margin(&format!("cli::noise_draws::{name}::image_abs"), common::max_abs_diff(&img, &want_img) as f64, 2e-3);
    }
    // One draw too few is an error that says so, not a silently different image.
    let r = Command::new(generate_bin())
        .arg("--model")
        .arg(common::fixture())
        .args(["--prompt", "x", "--steps", "9", "--scheduler", "euler_a"])
        .arg("--noise-draws")
        .arg(dir.join("euler_a_txt2img.draws.npz"))
        .arg("--out")
        .arg(out.join("short.png"))
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("step noise ran out"), "{}", String::from_utf8_lossy(&r.stderr));
    // Not an archive: a clear error naming the flag.
    let r = Command::new(generate_bin())
        .arg("--model")
        .arg(common::fixture())
        .args(["--prompt", "x", "--scheduler", "euler_a", "--noise-draws"])
        .arg(common::golden("noise_1x4x8x8.npy"))
        .arg("--out")
        .arg(out.join("bad.png"))
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("not an .npz"), "{}", String::from_utf8_lossy(&r.stderr));
    let _ = std::fs::remove_dir_all(&out);
}

/// `--lora FILE:SCALE` and `--embedding FILE[:TOKEN]` reproduce the LoRA
/// fixture's diffusers goldens (tests/fixtures/lora, DDIM with the fixture's
/// own scheduler config), and a bad LoRA file fails with Kiln's reason.
#[test]
fn cli_applies_loras_and_embeddings_like_diffusers() {
    let lora = common::root().join("tests/fixtures/lora");
    let out = std::env::temp_dir().join(format!("kiln-cli-lora-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let run = |name: &str, prompt: &str, extra: &[String]| {
        let r = Command::new(generate_bin())
            .arg("--model")
            .arg(common::fixture())
            .args(["--prompt", prompt, "--negative-prompt", "blurry", "--steps", "8", "--guidance", "7.5", "--scheduler", "ddim"])
            .arg("--init-noise")
            .arg(lora.join("noise_1x4x8x8.npy"))
            .args(extra)
            .arg("--out")
            .arg(out.join(format!("{name}.png")))
            .arg("--out-latents")
            .arg(out.join(format!("{name}.latents.npy")))
            .arg("--out-npy")
            .arg(out.join(format!("{name}.image.npy")))
            .output()
            .unwrap();
        assert!(r.status.success(), "{name}: {}", String::from_utf8_lossy(&r.stderr));
        let (_, got) = kiln::image::npy::read_f32(&out.join(format!("{name}.latents.npy"))).unwrap();
        let (_, want) = kiln::image::npy::read_f32(&lora.join(format!("{name}.latents.npy"))).unwrap();
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        common::check_margin(&format!("cli::lora::{name}::latents_rel"), (common::max_abs_diff(&got, &want) / scale) as f64, 1e-3);
        let (_, img) = kiln::image::npy::read_f32(&out.join(format!("{name}.image.npy"))).unwrap();
        let (_, want_img) = kiln::image::npy::read_f32(&lora.join(format!("{name}.image.npy"))).unwrap();
        common::check_margin(&format!("cli::lora::{name}::image_abs"), common::max_abs_diff(&img, &want_img) as f64, 2e-3);
    };
    let file = |f: &str| lora.join(f).to_str().unwrap().to_string();
    run(
        "stack_ddim",
        "mossy stone brick wall",
        &["--lora".into(), format!("{}:0.8", file("style.kohya.safetensors")), "--lora".into(), format!("{}:-0.6", file("detail.peft.safetensors"))],
    );
    run(
        "embedding_ddim",
        "<brick-style> wall, <moss>",
        &["--embedding".into(), format!("{}:<brick-style>", file("brick-style.safetensors")), "--embedding".into(), file("learned_embeds.safetensors")],
    );
    let r = Command::new(generate_bin())
        .arg("--model")
        .arg(common::fixture())
        .args(["--prompt", "wall", "--steps", "1", "--lora", &file("broken/sd2_dims.safetensors")])
        .arg("--out")
        .arg(out.join("bad.png"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("another architecture"), "{:?}: {err}", r.status);
    std::fs::remove_dir_all(&out).ok();
}

/// The CLI runs the SDXL fixture unchanged, and its SDXL flags give
/// optimum's result (tests/sdxl.rs `nonsquare_sizes` case, from its noise).
#[test]
fn cli_runs_sdxl_with_its_size_conditioning_flags() {
    let out = std::env::temp_dir().join(format!("kiln-cli-sdxl-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    // Euler draws only the initial latents.
    let (_, draws) = common::read_npy("sdxl/nonsquare_sizes.draws.npy");
    kiln::image::npy::write_f32(&out.join("noise.npy"), &[1, 4, 8, 12], &draws).unwrap();
    let r = Command::new(generate_bin())
        .arg("--model")
        .arg(common::root().join("tests/fixtures/tiny-sdxl"))
        .args(["--prompt", "mossy stone brick wall", "--steps", "6", "--guidance", "5", "--scheduler", "euler"])
        .args(["--width", "96", "--height", "64", "--original-size", "160x128", "--crop-top-left", "8,16"])
        .args(["--negative-original-size", "48x32", "--negative-crop-top-left", "0,4", "--negative-target-size", "80x48"])
        .arg("--init-noise")
        .arg(out.join("noise.npy"))
        .arg("--out")
        .arg(out.join("a.png"))
        .arg("--out-latents")
        .arg(out.join("l.npy"))
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (_, got) = kiln::image::npy::read_f32(&out.join("l.npy")).unwrap();
    let (_, want) = common::read_npy("sdxl/nonsquare_sizes.latents.npy");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    common::check_margin("cli::sdxl::nonsquare_sizes::latents_rel", (common::max_abs_diff(&got, &want) / scale) as f64, 1e-3);
    let bad = Command::new(generate_bin()).args(["--original-size", "160by128"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    std::fs::remove_dir_all(&out).ok();
}

/// `--controlnet` with its `--control-*` flags gives the latents of the same
/// request made through the library; a `--control-*` flag without a
/// `--controlnet` before it is a usage error.
#[test]
fn cli_controlnet_flags_reach_the_pipeline() {
    use kiln::image::control::{ControlImage, Preprocess};
    use kiln::pipeline::control::Control;
    let model = common::controlnet_folder("cli");
    let out = std::env::temp_dir().join(format!("kiln-cli-cn-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let control = common::golden("controlnet/control_a.png");
    let r = Command::new(generate_bin())
        .arg("--model")
        .arg(&model)
        .args(["--prompt", "mossy stone", "--steps", "4", "--scheduler", "ddim", "--seed", "3"])
        .args(["--controlnet", "tiny", "--control-image"])
        .arg(&control)
        .args(["--control-scale", "0.7", "--control-start", "0.25", "--control-preprocess", "canny"])
        .arg("--out")
        .arg(out.join("a.png"))
        .arg("--out-latents")
        .arg(out.join("l.npy"))
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (_, got) = kiln::image::npy::read_f32(&out.join("l.npy")).unwrap();
    let img = image::open(&control).unwrap().to_rgb8();
    let image = ControlImage { width: img.width() as usize, height: img.height() as usize, channels: 3, data: img.into_raw() };
    let m = kiln::Model::load(common::runtime(), &model).unwrap();
    let request = kiln::GenerateRequest {
        prompt: "mossy stone".into(),
        steps: 4,
        scheduler: kiln::SchedulerKind::Ddim,
        seed: 3,
        controls: vec![Control { scale: 0.7, start: 0.25, preprocess: Preprocess::Canny { low: 100.0, high: 200.0 }, ..Control::new("tiny", image) }],
        ..Default::default()
    };
    let want: Vec<f32> = m.generate_with(&request, Default::default()).unwrap().latents.iter().copied().collect();
    assert_eq!(got, want, "the CLI's latents are the library's for the same request");
    for args in [&["--control-scale", "0.5"][..], &["--controlnet", "tiny", "--control-preprocess", "sobel"]] {
        let r = Command::new(generate_bin()).args(args).output().unwrap();
        assert_eq!(r.status.code(), Some(2), "{args:?}");
    }
    std::fs::remove_dir_all(&out).ok();
}

/// `generate --controlnet` on the SDXL model gives the library's latents for
/// the same request, and a kiln-bake asset with `control = {…}` gives
/// generate's pixels.
#[test]
fn cli_and_kiln_bake_carry_an_sdxl_controlnet() {
    use kiln::image::control::{ControlImage, Preprocess};
    use kiln::pipeline::control::Control;
    let model_folder = common::sdxl_controlnet_folder("cli");
    let model = kiln::Model::load(common::runtime(), &model_folder).unwrap();
    let png_rgba = |p: &std::path::Path| image::open(p).unwrap().to_rgba8().into_raw();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-sdxl-controlnet-cli");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let control = dir.join("control.png");
    std::fs::copy(common::golden("controlnet/control_b.png"), &control).unwrap();
    let r = Command::new(generate_bin())
        .arg("--model")
        .arg(&model_folder)
        .args(["--prompt", "mossy stone wall", "--seed", "7", "--steps", "4", "--scheduler", "ddim"])
        .args(["--controlnet", "xl", "--control-image"])
        .arg(&control)
        .args(["--control-scale", "0.8", "--control-end", "0.8", "--out"])
        .arg(dir.join("gen.png"))
        .arg("--out-latents")
        .arg(dir.join("gen.npy"))
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (_, got) = kiln::image::npy::read_f32(&dir.join("gen.npy")).unwrap();
    let img = image::open(&control).unwrap().to_rgb8();
    let control_b = ControlImage { width: img.width() as usize, height: img.height() as usize, channels: 3, data: img.into_raw() };
    let request = kiln::GenerateRequest {
        prompt: "mossy stone wall".into(),
        steps: 4,
        scheduler: kiln::SchedulerKind::Ddim,
        seed: 7,
        controls: vec![Control { scale: 0.8, end: 0.8, preprocess: Preprocess::None, ..Control::new("xl", control_b) }],
        ..Default::default()
    };
    let want: Vec<f32> = model.generate_with(&request, Default::default()).unwrap().latents.iter().copied().collect();
    assert_eq!(got, want, "the CLI's latents are the library's for the same request");
    let plain = kiln::GenerateRequest { controls: Vec::new(), ..request };
    let off: Vec<f32> = model.generate_with(&plain, Default::default()).unwrap().latents.iter().copied().collect();
    assert_ne!(off, want, "the ControlNet must act, so the comparison can fail");

    let manifest = dir.join("control.toml");
    std::fs::write(
        &manifest,
        format!(
            "[defaults]\nmodel = {:?}\nformat = \"png\"\nprompt = \"mossy stone wall\"\nseed = 7\nsteps = 4\nscheduler = \"ddim\"\n\
             [[asset]]\nname = \"edged\"\ncontrol = {{ controlnet = \"xl\", image = \"control.png\", scale = 0.8, end = 0.8 }}\n",
            model_folder.display().to_string()
        ),
    )
    .unwrap();
    let out = dir.join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_kiln-bake")).arg(&manifest).arg("--out").arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let baked = png_rgba(&out.join("edged.png"));
    assert!(baked == png_rgba(&dir.join("gen.png")), "kiln-bake's pixels differ from generate --controlnet's");
}
