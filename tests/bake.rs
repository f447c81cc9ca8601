//! `kiln-bake`'s acceptance tests (issue 15), run on the binary as a build
//! machine would: the example manifest bakes, a rerun skips everything, an
//! edited asset alone is redone, a killed bake leaves no truncated file, two
//! shards cover the manifest exactly once, the DDS files load in a reader that
//! shares no code with the writer and every mip level tiles, an asset with
//! `generate`'s settings gives `generate`'s pixels, with and without LoRAs, and
//! a LoRA's scale or bytes re-bake exactly the assets that use it, and so
//! does a control image's (an asset with a ControlNet gives `generate
//! --controlnet`'s pixels), an upscaled asset gives the Rust API's upscale
//! and re-bakes when its upscaler or its tile and context change, and an
//! asset that starts from a picture (img2img, inpainting, outpainting,
//! make-tileable) gives `generate --init-image`'s pixels and re-bakes when
//! the picture or its mask changes; a `source` asset finishes a picture that
//! exists exactly as the library's finishing steps do, and re-bakes only
//! when the picture or its finishing settings change.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kiln::image::seam::{seam_score, Axis};
use kiln::Rgba8Image;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kiln-bake")
}

/// A fresh folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kiln-bake-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn bundled_model() -> PathBuf {
    common::root().join("models/kiln-tiny-textures")
}

/// The example manifest, copied into `dir` with its model path made absolute.
fn example_manifest_in(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(common::root().join("examples/bake/textures.toml")).unwrap();
    let text = text.replace("\"../../models/kiln-tiny-textures\"", &format!("{:?}", bundled_model().display().to_string()));
    let pictures = common::root().join("examples/bake/pictures");
    let text = text.replace("\"pictures/", &format!("\"{}/", pictures.display()));
    let path = dir.join("textures.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn bake(manifest: &Path, out: &Path, extra: &[&str]) -> (Output, serde_json::Value) {
    let report = out.with_extension("report.json");
    let _ = std::fs::remove_file(&report);
    let output = Command::new(bin()).arg(manifest).arg("--out").arg(out).arg("--report").arg(&report).args(extra).output().unwrap();
    let json = std::fs::read_to_string(&report).map(|t| serde_json::from_str(&t).unwrap()).unwrap_or(serde_json::Value::Null);
    (output, json)
}

/// [`bake`], asserting that it succeeded (its stderr in the message).
fn bake_ok(manifest: &Path, out: &Path, extra: &[&str]) -> (Output, serde_json::Value) {
    let (output, report) = bake(manifest, out, extra);
    assert!(output.status.success(), "{}", stderr(&output));
    (output, report)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// name → status, over assets and atlases.
fn statuses(report: &serde_json::Value) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for list in ["assets", "atlases"] {
        for e in report[list].as_array().unwrap() {
            m.insert(e["name"].as_str().unwrap().to_string(), e["status"].as_str().unwrap().to_string());
        }
    }
    m
}

fn names_with(report: &serde_json::Value, status: &str) -> BTreeSet<String> {
    statuses(report).into_iter().filter(|(_, s)| s == status).map(|(n, _)| n).collect()
}

const EXAMPLE_ASSETS: [&str; 8] =
    ["decal_cliff", "floor_planks_pixel", "ground_cliff", "ground_cobblestone", "ground_grass", "ground_sand_bc1", "item_gem", "item_lava_rock"];

/// Every output file in `out` is whole: PNGs decode, DDS files hold as many
/// bytes as their header promises, key files parse. Returns how many it checked.
fn assert_no_truncated_file(out: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(out).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".kiln-tmp") {
            continue; // hidden temporaries, never read by an engine; the next bake removes them
        }
        match p.extension().and_then(|e| e.to_str()) {
            Some("png") => {
                image::open(&p).unwrap_or_else(|e| panic!("{name} does not decode: {e}"));
            }
            Some("dds") => {
                read_dds(&p);
            }
            Some("kiln-key") | Some("json") => {
                serde_json::from_slice::<serde_json::Value>(&std::fs::read(&p).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            _ => continue,
        }
        n += 1;
    }
    n
}

/// A DDS file as an independent reader sees it: the header parsed here by
/// hand (not with `ddsfile`, which writes it) and the blocks decoded with
/// `texture2ddecoder` (not `intel_tex_2`, which encodes them).
struct DdsFile {
    dxgi_format: u32,
    levels: Vec<Rgba8Image>,
}

fn read_dds(path: &Path) -> DdsFile {
    let bytes = std::fs::read(path).unwrap();
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    assert_eq!(&bytes[0..4], b"DDS ", "{}: magic", path.display());
    assert_eq!(u32_at(4), 124, "header size");
    let (height, width) = (u32_at(12) as usize, u32_at(16) as usize);
    let mips = (u32_at(28) as usize).max(1);
    assert_eq!(&bytes[84..88], b"DX10", "pixel format FourCC");
    let dxgi_format = u32_at(128);
    assert_eq!(u32_at(132), 3, "resource dimension: 2D texture");
    let mut offset = 148;
    let mut levels = Vec::new();
    for l in 0..mips {
        let (w, h) = ((width >> l).max(1), (height >> l).max(1));
        let block_bytes = match dxgi_format {
            71 | 72 | 80 => 8,  // BC1, BC4
            77 | 78 | 83 | 98 | 99 => 16, // BC3, BC5, BC7
            f => panic!("unexpected DXGI format {f}"),
        };
        let size = w.div_ceil(4) * h.div_ceil(4) * block_bytes;
        assert!(offset + size <= bytes.len(), "{}: level {l} is cut off ({} of {} bytes)", path.display(), bytes.len() - offset, size);
        let data = &bytes[offset..offset + size];
        let mut bgra = vec![0u32; w * h];
        match dxgi_format {
            71 | 72 => texture2ddecoder::decode_bc1(data, w, h, &mut bgra),
            77 | 78 => texture2ddecoder::decode_bc3(data, w, h, &mut bgra),
            80 => texture2ddecoder::decode_bc4(data, w, h, &mut bgra),
            83 => texture2ddecoder::decode_bc5(data, w, h, &mut bgra),
            _ => texture2ddecoder::decode_bc7(data, w, h, &mut bgra),
        }
        .unwrap();
        let pixels = bgra.iter().flat_map(|p| {
            let [b, g, r, a] = p.to_le_bytes();
            [r, g, b, a]
        });
        levels.push(Rgba8Image { width: w, height: h, pixels: pixels.collect() });
        offset += size;
    }
    assert_eq!(offset, bytes.len(), "{}: bytes after the last level", path.display());
    DdsFile { dxgi_format, levels }
}

#[test]
fn example_bakes_then_skips_then_redoes_only_the_edited_asset() {
    let dir = scratch("rerun");
    let manifest = example_manifest_in(&dir);
    let out = dir.join("out");
    let (o, report) = bake_ok(&manifest, &out, &[]);
    let mut all: BTreeSet<String> = EXAMPLE_ASSETS.iter().map(|s| s.to_string()).collect();
    all.insert("items".into());
    assert_eq!(names_with(&report, "baked"), all, "first run bakes everything");
    assert_eq!(stderr(&o).matches("loading model").count(), 1, "one model load for all assets: {}", stderr(&o));
    for e in report["assets"].as_array().unwrap() {
        for p in e["outputs"].as_array().unwrap() {
            assert!(Path::new(p.as_str().unwrap()).is_file(), "{p} listed but missing");
        }
        assert!(e["seconds"].as_f64().unwrap() > 0.0 && e["error"].is_null());
    }
    for f in ["ground_cobblestone.dds", "ground_cobblestone_normal.dds", "ground_cobblestone_height.dds", "ground_cliff_normal.dds", "decal_cliff.dds", "items.png", "items.json"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // The atlas JSON holds one rectangle per sprite, inside the sheet.
    let atlas: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("items.json")).unwrap()).unwrap();
    let sheet = image::open(out.join("items.png")).unwrap();
    assert_eq!(atlas["width"].as_u64().unwrap(), sheet.width() as u64);
    let rects = atlas["sprites"].as_array().unwrap();
    assert_eq!(rects.iter().map(|r| r["name"].as_str().unwrap()).collect::<Vec<_>>(), vec!["item_gem", "item_lava_rock"]);
    for r in rects {
        assert!(r["x"].as_u64().unwrap() + r["width"].as_u64().unwrap() <= sheet.width() as u64);
        assert!(r["y"].as_u64().unwrap() + r["height"].as_u64().unwrap() <= sheet.height() as u64);
    }
    let snapshot = |names: &[&str]| -> Vec<Vec<u8>> { names.iter().map(|n| std::fs::read(out.join(n)).unwrap()).collect() };
    let others = ["ground_cobblestone.dds", "ground_sand_bc1.dds", "floor_planks_pixel.png", "item_gem.png", "items.png", "ground_cliff.dds", "decal_cliff.dds"];
    let before = snapshot(&others);
    let grass_before = std::fs::read(out.join("ground_grass.dds")).unwrap();

    let (o, report) = bake_ok(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "skipped"), all, "second run skips everything");
    assert!(!stderr(&o).contains("loading model"), "nothing to bake loads no model");

    // Edit one asset's seed: only it is redone.
    let text = std::fs::read_to_string(&manifest).unwrap();
    let edited = text.replace("prompt = \"green grass\"\nseed = 7", "prompt = \"green grass\"\nseed = 8");
    assert_ne!(text, edited);
    std::fs::write(&manifest, edited).unwrap();
    let (_, report) = bake_ok(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "baked"), BTreeSet::from(["ground_grass".to_string()]));
    assert_eq!(names_with(&report, "skipped").len(), all.len() - 1);
    assert_ne!(std::fs::read(out.join("ground_grass.dds")).unwrap(), grass_before, "the new seed made a new texture");
    assert_eq!(snapshot(&others), before, "the other outputs were not rewritten");

    // --force redoes an up-to-date asset and gives the same bytes (the bake is reproducible).
    let (_, report) = bake_ok(&manifest, &out, &["--force"]);
    assert_eq!(names_with(&report, "baked"), all);
    assert_eq!(snapshot(&others), before, "a forced rebake reproduces every file byte for byte");
    assert_eq!(assert_no_truncated_file(&out), 22);
}

#[test]
fn two_shards_cover_the_manifest_exactly_once() {
    let dir = scratch("shards");
    let manifest = example_manifest_in(&dir);
    let out = dir.join("out");
    let (_, r1) = bake_ok(&manifest, &out, &["--shard", "1/2"]);
    let (_, r2) = bake_ok(&manifest, &out, &["--shard", "2/2"]);
    let (b1, b2) = (names_with(&r1, "baked"), names_with(&r2, "baked"));
    println!("shard 1/2: {b1:?}\nshard 2/2: {b2:?}");
    assert!(b1.is_disjoint(&b2), "shards overlap: {:?}", b1.intersection(&b2).collect::<Vec<_>>());
    let union: BTreeSet<String> = b1.union(&b2).cloned().collect();
    assert_eq!(union, EXAMPLE_ASSETS.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
    assert!(!b1.is_empty() && !b2.is_empty(), "both shards got work");
    // The gather step: an unsharded run finds every asset baked and makes the atlas.
    let (_, r) = bake_ok(&manifest, &out, &[]);
    assert_eq!(names_with(&r, "baked"), BTreeSet::from(["items".to_string()]));
    assert_eq!(names_with(&r, "skipped").len(), EXAMPLE_ASSETS.len());

    // On a bigger manifest, by dry run: 3 shards partition 60 names.
    let mut text = format!("[defaults]\nmodel = {:?}\n", bundled_model().display().to_string());
    for i in 0..60 {
        text += &format!("[[asset]]\nname = \"tex_{i:02}\"\nprompt = \"brick {i}\"\n");
    }
    let big = dir.join("big.toml");
    std::fs::write(&big, text).unwrap();
    let mut seen = BTreeMap::<String, u32>::new();
    for i in 1..=3 {
        let (_, r) = bake_ok(&big, &dir.join("big-out"), &["--dry-run", "--shard", &format!("{i}/3")]);
        let planned = names_with(&r, "planned");
        println!("shard {i}/3: {} assets", planned.len());
        for n in planned {
            *seen.entry(n).or_default() += 1;
        }
    }
    assert!(!dir.join("big-out").exists(), "a dry run writes nothing");
    assert_eq!(seen.len(), 60, "every asset is in some shard");
    assert!(seen.values().all(|&c| c == 1), "every asset is in exactly one shard");
}

#[test]
fn dds_files_load_in_an_independent_reader_and_every_mip_level_tiles() {
    let dir = scratch("dds");
    let model = format!("{:?}", bundled_model().display().to_string());
    let manifest = dir.join("dds.toml");
    std::fs::write(
        &manifest,
        format!(
            "[defaults]\nmodel = {model}\nprompt = \"mossy cobblestone\"\nseed = 3\nsteps = 12\nscheduler = \"euler_a\"\nguidance = 5.0\n\
             [[asset]]\nname = \"tile\"\nseamless = \"xy\"\nformat = \"dds\"\nnormal_map = true\nheight_map = true\n\
             [[asset]]\nname = \"tile_png\"\nseamless = \"xy\"\nformat = \"png\"\n\
             [[asset]]\nname = \"plain\"\nformat = \"dds-bc3\"\n\
             [[asset]]\nname = \"grass\"\nprompt = \"green grass\"\nseed = 7\nseamless = \"xy\"\nformat = \"dds\"\n\
             [[asset]]\nname = \"sand\"\nprompt = \"dry sand\"\nseed = 11\nseamless = \"xy\"\nformat = \"dds\"\n"
        ),
    )
    .unwrap();
    let out = dir.join("out");
    let (_, report) = bake_ok(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "baked").len(), 5);

    let tile = read_dds(&out.join("tile.dds"));
    assert_eq!(tile.dxgi_format, 99, "BC7 sRGB");
    let sizes: Vec<usize> = tile.levels.iter().map(|l| l.width).collect();
    assert_eq!(sizes, vec![64, 32, 16, 8, 4, 2, 1], "a full mip chain");
    // Level 0 against the PNG of the same settings: the reader decodes what was encoded.
    let png = image::open(out.join("tile_png.png")).unwrap().to_rgba8().into_raw();
    let err: f64 = png.iter().zip(&tile.levels[0].pixels).map(|(a, b)| a.abs_diff(*b) as f64).sum::<f64>() / png.len() as f64;
    println!("BC7 level 0 vs PNG: mean abs error {err:.2} (bound 3.0 of 255)");
    assert!(err <= 3.0, "BC7 mean abs error {err}");
    assert_eq!(read_dds(&out.join("tile_normal.dds")).dxgi_format, 83, "BC5 normal map");
    assert_eq!(read_dds(&out.join("tile_height.dds")).dxgi_format, 80, "BC4 height map");
    assert_eq!(read_dds(&out.join("plain.dds")).dxgi_format, 78, "BC3 sRGB");

    // Every mip level tiles as well as the texture itself. The seam score is
    // edge difference / mean interior difference (1 = the wrap edge looks like
    // any other column); levels under 8 pixels are left out, their few
    // columns make it noise. Grass and sand tile by this measure at level 0
    // (checked: <= 1.2), so every level must stay <= 1.5. The cobblestone's
    // mortar lines happen to lie near its edge, so its level 0 scores higher
    // (yet below the same texture made without seamless); there each level
    // must stay within 20 % of its own level 0: filtering adds no seam.
    let plain = read_dds(&out.join("plain.dds"));
    for name in ["grass.dds", "sand.dds", "tile.dds", "tile_normal.dds", "tile_height.dds"] {
        let dds = read_dds(&out.join(name));
        for axis in [Axis::X, Axis::Y] {
            let base = seam_score(&dds.levels[0], axis).unwrap();
            let bound = if name.starts_with("tile") { 1.2 * base } else { 1.5 };
            if !name.starts_with("tile") {
                assert!(base <= 1.2, "{name} {axis:?}: the texture itself scores {base}");
            }
            for (l, level) in dds.levels.iter().enumerate().filter(|(_, l)| l.width >= 8) {
                let s = seam_score(level, axis).unwrap();
                let p = if name == "tile.dds" { format!(", same texture not seamless: {:.2}", seam_score(&plain.levels[l], axis).unwrap()) } else { String::new() };
                println!("{name} level {l} ({0}x{0}) {axis:?}: seam score {s:.2} (bound {bound:.2}){p}", level.width);
                assert!(s <= bound, "{name} level {l} {axis:?}: seam score {s} over {bound}");
            }
        }
    }
}

/// Spawns a bake with stderr piped; returns the child and a reader of its lines.
fn spawn_bake(manifest: &Path, out: &Path, env: &[(&str, &str)]) -> (std::process::Child, std::io::Lines<BufReader<std::process::ChildStderr>>) {
    let report = out.with_extension("report.json");
    let mut cmd = Command::new(bin());
    cmd.arg(manifest).arg("--out").arg(out).arg("--report").arg(&report).stderr(Stdio::piped()).stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    (child, lines)
}

#[test]
fn a_bake_killed_midway_leaves_no_truncated_file_and_a_rerun_completes() {
    let dir = scratch("kill");
    let manifest = example_manifest_in(&dir);
    let out = dir.join("out");
    // The hook pauses between a complete temporary file and its rename, and
    // says so: the kill lands in the middle of the second asset's writes.
    let (mut child, mut lines) = spawn_bake(&manifest, &out, &[("KILN_BAKE_PAUSE_BEFORE_RENAME_MS", "2000")]);
    let mut temporaries = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(tmp) = line.strip_prefix("kiln-bake: wrote temporary ") {
            temporaries.push(PathBuf::from(tmp));
            if temporaries.len() == 5 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL: no cleanup runs
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert_eq!(temporaries.len(), 5, "the bake wrote five files before the kill");
    let pending = temporaries.last().unwrap();
    println!("killed while {} waited for its rename", pending.display());
    assert!(pending.is_file(), "the temporary is whole and hidden");
    assert!(pending.file_name().unwrap().to_string_lossy().starts_with('.'));
    assert!(!out.join("ground_grass.dds").exists(), "the asset in flight has no output under its real name");
    assert!(!out.join("ground_grass.kiln-key").exists(), "and no key, so it is redone");
    assert!(out.join("ground_cobblestone.kiln-key").is_file(), "the first asset finished, key last");
    let checked = assert_no_truncated_file(&out);
    println!("{checked} files checked whole after the kill");

    let (o, report) = bake_ok(&manifest, &out, &[]);
    assert!(stderr(&o).contains("removed 1 temporary file"), "{}", stderr(&o));
    assert_eq!(statuses(&report)["ground_cobblestone"], "skipped", "finished before the kill");
    assert_eq!(names_with(&report, "baked").len(), EXAMPLE_ASSETS.len(), "the other five assets and the atlas");
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".kiln-tmp")).collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(assert_no_truncated_file(&out), 22);
}

#[cfg(unix)]
#[test]
fn ctrl_c_cancels_the_running_job_and_exits_cleanly() {
    let dir = scratch("interrupt");
    let manifest = example_manifest_in(&dir);
    let out = dir.join("out");
    let (mut child, mut lines) = spawn_bake(&manifest, &out, &[]);
    for line in lines.by_ref() {
        if line.unwrap().contains("ground_grass: generating") {
            break;
        }
    }
    // SAFETY: signalling our own child by its pid.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    println!("{}", rest.join("\n"));
    assert_eq!(status.code(), Some(130), "interrupted bakes exit 130");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.with_extension("report.json")).unwrap()).unwrap();
    let interrupted: Vec<&str> = report["assets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["error"].as_str().is_some_and(|m| m.contains("interrupted")))
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    println!("interrupted: {interrupted:?}");
    assert!(!interrupted.is_empty() && !interrupted.contains(&"ground_cobblestone"));
    assert!(std::fs::read_dir(&out).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".kiln-tmp")), "no temporaries left");
    assert_no_truncated_file(&out);
    let (_, report) = bake_ok(&manifest, &out, &[]);
    for name in interrupted {
        assert_eq!(statuses(&report)[name], "baked", "{name} is finished by the rerun");
    }
}

/// Ctrl-C during an upscale: the upscale is a job like the generation, so
/// the bake cancels it within one graph run, writes nothing for the asset
/// and exits 130; a rerun bakes it. (Many small tiles make the upscale last
/// long enough for the signal to land in it.)
#[cfg(unix)]
#[test]
fn ctrl_c_cancels_a_running_upscale_and_exits_cleanly() {
    let dir = scratch("interrupt-upscale");
    let ups = dir.join("upscalers/x4");
    std::fs::create_dir_all(&ups).unwrap();
    std::fs::copy(common::root().join("tests/fixtures/upscaler/x4/model.onnx"), ups.join("model.onnx")).unwrap();
    let manifest = dir.join("slow.toml");
    let body = |tile: u32| {
        format!(
            "[defaults]\nmodel = {:?}\nformat = \"png\"\nprompt = \"lava\"\nsteps = 2\nscheduler = \"ddim\"\n\
             [[asset]]\nname = \"big\"\nseamless = \"xy\"\nupscale = {{ path = \"upscalers/x4\", tile = {tile}, context = 28 }}\n",
            common::fixture().display().to_string()
        )
    };
    std::fs::write(&manifest, body(2)).unwrap();
    let out = dir.join("out");
    let (mut child, mut lines) = spawn_bake(&manifest, &out, &[]);
    let t0 = std::time::Instant::now();
    for line in lines.by_ref() {
        if line.unwrap().contains("big: upscaling") {
            break;
        }
    }
    // SAFETY: signalling our own child by its pid.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    println!("{}\nexited {:.2} s after the upscale began", rest.join("\n"), t0.elapsed().as_secs_f64());
    assert_eq!(status.code(), Some(130), "interrupted bakes exit 130");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.with_extension("report.json")).unwrap()).unwrap();
    let error = report["assets"][0]["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("interrupted (Ctrl-C): the upscale was cancelled"), "{report}");
    assert!(!out.join("big.png").exists() && !out.join("big.kiln-key").exists(), "nothing written for the asset");
    // A rerun with bigger tiles (quicker) bakes it; the progress counts tiles.
    std::fs::write(&manifest, body(32)).unwrap();
    let (o, report) = bake_ok(&manifest, &out, &[]);
    assert_eq!(statuses(&report)["big"], "baked");
    let log = stderr(&o);
    assert!(log.contains("big: upscaling") && log.contains("big: tile 4/4"), "{log}");
}

fn generate_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("examples").join(if cfg!(windows) { "generate.exe" } else { "generate" });
    assert!(bin.exists(), "{} is missing: plain `cargo test` builds the examples; else `cargo build --release --example generate`", bin.display());
    bin
}

/// Runs `cmd` (a CLI of this package) and asserts that it succeeded.
fn succeeds(cmd: &mut Command) -> Output {
    let r = cmd.output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    r
}

/// A PNG's pixels (RGBA8) and its text chunks.
fn read_png(path: &Path) -> (Vec<u8>, BTreeMap<String, String>) {
    let decoder = png::Decoder::new(BufReader::new(std::fs::File::open(path).unwrap()));
    let reader = decoder.read_info().unwrap();
    let text = reader.info().uncompressed_latin1_text.iter().map(|t| (t.keyword.clone(), t.text.clone())).collect();
    (image::open(path).unwrap().to_rgba8().into_raw(), text)
}

/// An SDXL asset (tests/fixtures/tiny-sdxl) with `prompt_2`, `original_size`,
/// `crop_top_left` and `target_size` bakes the pixels and text chunks the
/// `generate` CLI makes from the same flags, and the SDXL settings change them.
#[test]
fn an_sdxl_asset_gives_generates_pixels_and_metadata() {
    let dir = scratch("sdxl");
    let model = common::root().join("tests/fixtures/tiny-sdxl");
    let manifest = dir.join("sdxl.toml");
    std::fs::write(
        &manifest,
        format!(
            "[defaults]\nmodel = {:?}\nformat = \"png\"\nsteps = 4\nscheduler = \"euler\"\nseed = 3\nsize = [96, 64]\nprompt = \"mossy stone brick wall\"\n\
             [[asset]]\nname = \"xl\"\nprompt_2 = \"rusty metal plate\"\noriginal_size = [160, 128]\ncrop_top_left = [8, 16]\ntarget_size = [96, 64]\n\
             [[asset]]\nname = \"plain\"\n",
            model.display().to_string()
        ),
    )
    .unwrap();
    let out = dir.join("out");
    bake_ok(&manifest, &out, &[]);
    let png = dir.join("generated.png");
    succeeds(
        Command::new(generate_bin())
            .arg("--model")
            .arg(&model)
            .args(["--prompt", "mossy stone brick wall", "--prompt-2", "rusty metal plate", "--steps", "4", "--scheduler", "euler", "--seed", "3"])
            .args(["--width", "96", "--height", "64", "--original-size", "160x128", "--crop-top-left", "8,16", "--target-size", "96x64", "--out"])
            .arg(&png),
    );
    let (a, ta) = read_png(&out.join("xl.png"));
    let (b, tb) = read_png(&png);
    assert!(a == b, "kiln-bake's SDXL pixels differ from generate's");
    for key in ["prompt", "prompt_2", "negative_prompt", "kiln:settings", "Software"] {
        assert_eq!(ta.get(key), tb.get(key), "text chunk {key}");
    }
    assert_eq!(ta["prompt_2"], "rusty metal plate");
    assert!(ta["kiln:settings"].contains("xl_original_size=Some([160, 128]) xl_crop_top_left=[8, 16]"), "{ta:?}");
    let (plain, tp) = read_png(&out.join("plain.png"));
    assert!(plain != a, "the SDXL settings changed nothing");
    assert!(!tp.contains_key("prompt_2") && !tp["kiln:settings"].contains("xl_"), "{tp:?}");
}

#[test]
fn an_asset_with_generates_settings_gives_generates_pixels_and_metadata() {
    let dir = scratch("parity");
    let model = bundled_model();
    let manifest = dir.join("parity.toml");
    std::fs::write(
        &manifest,
        format!(
            "[defaults]\nmodel = {:?}\nformat = \"png\"\n\
             [[asset]]\nname = \"brick\"\nprompt = \"red brick wall\"\nnegative_prompt = \"blurry\"\nseed = 4\nnoise = \"torch\"\nsteps = 6\nscheduler = \"euler_a\"\nguidance = 5.0\nseamless = \"xy\"\nnormal_map = true\nheight_map = true\n\
             [[asset]]\nname = \"gem\"\nprompt = \"red gem\"\nseed = 2\nvariation_seed = 5\nvariation_strength = 0.4\nsteps = 5\nscheduler = \"ddim\"\nsize = [48, 32]\nsprite = true\npixel_art = \"4:8\"\n\
             [[asset]]\nname = \"brick_int8\"\nprompt = \"red brick wall\"\nnegative_prompt = \"blurry\"\nseed = 4\nnoise = \"torch\"\nsteps = 6\nscheduler = \"euler_a\"\nguidance = 5.0\nseamless = \"xy\"\nquantize = \"int8\"\n",
            model.display().to_string()
        ),
    )
    .unwrap();
    let out = dir.join("out");
    bake_ok(&manifest, &out, &[]);
    let generate = |args: &[&str], files: &[(&str, &str)]| {
        let mut cmd = Command::new(generate_bin());
        cmd.arg("--model").arg(&model).args(args);
        for (flag, name) in files {
            cmd.arg(flag).arg(dir.join(name));
        }
        succeeds(&mut cmd);
    };
    generate(
        &["--prompt", "red brick wall", "--negative-prompt", "blurry", "--seed", "4", "--noise", "torch", "--steps", "6", "--scheduler", "euler_a", "--guidance", "5", "--seamless", "xy"],
        &[("--out", "brick.png"), ("--normal-map", "brick_n.png"), ("--height-map", "brick_h.png")],
    );
    generate(
        &["--prompt", "red gem", "--seed", "2", "--variation-seed", "5", "--variation-strength", "0.4", "--steps", "5", "--scheduler", "ddim", "--width", "48", "--height", "32", "--sprite", "--pixel-art", "4:8"],
        &[("--out", "gem.png")],
    );
    // The same model with int8 weights in the same bake: its own load.
    generate(
        &["--prompt", "red brick wall", "--negative-prompt", "blurry", "--seed", "4", "--noise", "torch", "--steps", "6", "--scheduler", "euler_a", "--guidance", "5", "--seamless", "xy", "--quantize", "int8"],
        &[("--out", "brick_int8.png")],
    );
    for (baked, generated) in [
        ("brick.png", "brick.png"),
        ("brick_normal.png", "brick_n.png"),
        ("brick_height.png", "brick_h.png"),
        ("gem.png", "gem.png"),
        ("brick_int8.png", "brick_int8.png"),
    ] {
        let (a, ta) = read_png(&out.join(baked));
        let (b, tb) = read_png(&dir.join(generated));
        assert!(a == b, "{baked}: kiln-bake's pixels differ from generate's");
        for key in ["prompt", "negative_prompt", "kiln:settings", "Software"] {
            assert_eq!(ta.get(key), tb.get(key), "{baked}: text chunk {key}");
        }
    }
    let (_, brick) = read_png(&out.join("brick.png"));
    assert!(brick["kiln:settings"].contains(" noise=torch"), "{brick:?}");
    let (_, text) = read_png(&out.join("gem.png"));
    assert!(!text["kiln:settings"].contains(" noise="), "Kiln's own noise is not named: {text:?}");
    assert!(text["kiln:settings"].contains("seed=2") && text["kiln:settings"].contains("pixel_art=Some((4, 8))"), "{text:?}");
    assert!(text["kiln:settings"].contains(" variation_seed=5 variation_strength=0.4"), "{text:?}");
    assert!(!brick["kiln:settings"].contains("variation"), "no variation, no text: {brick:?}");
    assert!(!brick["kiln:settings"].contains("quantization"), "{brick:?}");
    let (int8_pixels, int8_text) = read_png(&out.join("brick_int8.png"));
    assert!(int8_text["kiln:settings"].ends_with(" quantization=int8"), "{int8_text:?}");
    assert!(int8_pixels != read_png(&out.join("brick.png")).0, "the int8 asset is not the float one");
}

/// `variants = 3` bakes three assets, `<name>_1..3`, each `generate`'s picture
/// for the next variation seed; an atlas listing the name packs all three.
#[test]
fn variants_bake_generates_variations_and_fill_an_atlas() {
    let dir = scratch("variants");
    let model = bundled_model();
    let manifest = dir.join("variants.toml");
    std::fs::write(
        &manifest,
        format!(
            "[defaults]\nmodel = {:?}\nformat = \"png\"\n\
             [[asset]]\nname = \"brick\"\nprompt = \"red brick wall\"\nseed = 4\nsteps = 4\nscheduler = \"ddim\"\nvariants = 3\nvariation_strength = 0.3\n\
             [[atlas]]\nname = \"bricks\"\nassets = [\"brick\"]\npadding = 0\n",
            model.display().to_string()
        ),
    )
    .unwrap();
    let out = dir.join("out");
    let (_, report) = bake_ok(&manifest, &out, &[]);
    let mut pictures = Vec::new();
    for k in 1..=3 {
        let png = dir.join(format!("g{k}.png"));
        let mut cmd = Command::new(generate_bin());
        cmd.arg("--model").arg(&model);
        cmd.args(["--prompt", "red brick wall", "--seed", "4", "--steps", "4", "--scheduler", "ddim"]);
        cmd.args(["--variation-seed", &(4 + k).to_string(), "--variation-strength", "0.3", "--out"]).arg(&png);
        succeeds(&mut cmd);
        let (a, ta) = read_png(&out.join(format!("brick_{k}.png")));
        let (b, tb) = read_png(&png);
        assert!(a == b, "brick_{k}: kiln-bake's pixels differ from generate's with variation seed {}", 4 + k);
        assert_eq!(ta.get("kiln:settings"), tb.get("kiln:settings"), "brick_{k}: settings text");
        pictures.push(a);
    }
    assert!(pictures[0] != pictures[1] && pictures[1] != pictures[2], "the variants are different pictures");
    let atlas: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("bricks.json")).unwrap()).unwrap();
    let packed: Vec<&str> = atlas["sprites"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(packed, ["brick_1", "brick_2", "brick_3"], "the atlas packs the three variants");
    let text = report.to_string();
    assert!(["brick_1", "brick_2", "brick_3"].iter().all(|n| text.contains(n)), "{report}");
}

#[test]
fn a_failed_asset_does_not_stop_the_others_and_the_exit_status_says_so() {
    let dir = scratch("failure");
    let manifest = dir.join("f.toml");
    // 24 px passes the manifest's check (a multiple of 8) but this model needs multiples of 16.
    std::fs::write(
        &manifest,
        format!(
            "[defaults]\nmodel = {:?}\nsteps = 2\nformat = \"png\"\n[[asset]]\nname = \"odd_size\"\nsize = [24, 24]\n[[asset]]\nname = \"fine\"\nprompt = \"sand\"\n",
            bundled_model().display().to_string()
        ),
    )
    .unwrap();
    let out = dir.join("out");
    let (o, report) = bake(&manifest, &out, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(statuses(&report)["fine"], "baked");
    assert_eq!(statuses(&report)["odd_size"], "failed");
    let error = report["assets"][0]["error"].as_str().unwrap();
    println!("odd_size: {error}");
    assert!(error.contains("16"), "the report says why: {error}");
    assert!(!out.join("odd_size.png").exists() && !out.join("odd_size.kiln-key").exists());

    // Without ONNX Runtime nothing bakes, and the report says so for each asset.
    let (o, report) = bake(&manifest, &dir.join("out2"), &["--onnxruntime", "/nonexistent/libonnxruntime.so"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    for e in report["assets"].as_array().unwrap() {
        assert_eq!(e["status"], "failed");
        assert!(e["error"].as_str().unwrap().contains("/nonexistent/libonnxruntime.so"), "{e}");
    }
}

#[test]
fn manifest_errors_name_asset_key_and_line_and_nothing_is_baked() {
    let dir = scratch("errors");
    let model = format!("{:?}", bundled_model().display().to_string());
    // LoRA files are found relative to the manifest, and checked before anything bakes.
    let missing_lora = format!("line 3, asset \"a\", key `lora`: {} is not a file", dir.join("moss.safetensors").display());
    let cases = [
        (format!("[defaults]\nmodel = {model}\n[[asset]]\nname = \"grass\"\nprompt = \"grass\"\ncolour = \"green\"\n"), "line 6, asset \"grass\", key `colour`: unknown field"),
        (format!("[defaults]\nmodel = {model}\n[[asset]]\nname = \"grass\"\nsteps = 0\n"), "line 5, asset \"grass\", key `steps`: 0 is outside 1..=1000"),
        (
            format!("[defaults]\nmodel = {model}\nlora = {{ path = \"moss.safetensors\", scale = 0.8 }}\n[[asset]]\nname = \"a\"\n"),
            missing_lora.as_str(),
        ),
        (format!("[defaults]\nmodel = {model}\n[[asset]]\nname = \"a\"\n[[asset]]\nname = \"a\"\n"), "line 6, asset \"a\", key `name`: an earlier asset has this name"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let manifest = dir.join(format!("m{i}.toml"));
        std::fs::write(&manifest, text).unwrap();
        let out = dir.join(format!("out{i}"));
        let (o, _) = bake(&manifest, &out, &[]);
        assert_eq!(o.status.code(), Some(2), "case {i}");
        assert!(stderr(&o).contains(want), "case {i}: wanted {want:?} in\n{}", stderr(&o));
        assert!(!out.exists(), "case {i}: nothing is written for an invalid manifest");
    }
}

#[test]
fn version_names_the_onnx_runtime_it_finds_and_fails_when_none_loads() {
    let run = |extra: &[&str]| Command::new(bin()).arg("--version").args(extra).output().unwrap();
    let o = run(&[]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{text}{}", stderr(&o));
    assert!(text.starts_with(&format!("kiln-bake {}: writes DDS", kiln::VERSION)), "{text}");
    // The search finds the runtime the project's setup fetched (or ORT_DYLIB_PATH's), and says where.
    let line = text.lines().nth(1).unwrap_or_default();
    assert!(line.starts_with("ONNX Runtime 1.") && line.contains(" from ") && line.contains("onnxruntime"), "{text}");

    // An explicit runtime that is not there: said, and exit 1 (a setup check in a build script).
    let missing = scratch("version").join("libonnxruntime.so");
    let o = run(&["--onnxruntime", missing.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("ONNX Runtime: none loads") && text.contains(&missing.display().to_string()), "{text}");
}

/// The LoRA fixtures (made for tests/fixtures/tiny-sd; see their README).
fn lora_fixture(name: &str) -> PathBuf {
    common::root().join("tests/fixtures/lora").join(name)
}

/// A manifest beside copies of the LoRA files (so paths are relative to it and
/// a test can change a file): `style` at `style_scale` on a plain and on a
/// seamless asset (one LoRA view, and a seamless view of it), a plain asset
/// with the same prompt and seed, and two assets whose LoRA cannot load.
fn write_lora_manifest(dir: &Path, style_scale: &str) -> PathBuf {
    let manifest = dir.join("lora.toml");
    std::fs::write(
        &manifest,
        format!(
            "[defaults]\nmodel = {:?}\nformat = \"png\"\nprompt = \"mossy stone brick wall\"\nnegative_prompt = \"blurry\"\nseed = 7\nsteps = 4\nscheduler = \"ddim\"\n\
             [[asset]]\nname = \"plain\"\n\
             [[asset]]\nname = \"styled\"\nlora = {{ path = \"loras/style.safetensors\", scale = {style_scale} }}\n\
             [[asset]]\nname = \"truncated\"\nlora = {{ path = \"loras/truncated.safetensors\" }}\n\
             [[asset]]\nname = \"styled_tiled\"\nseamless = \"xy\"\nseed = 8\nlora = {{ path = \"loras/style.safetensors\", scale = {style_scale} }}\n\
             [[asset]]\nname = \"sd2_lora\"\nlora = [{{ path = \"loras/style.safetensors\" }}, {{ path = \"loras/sd2_dims.safetensors\", scale = 0.5 }}]\n",
            common::fixture().display().to_string()
        ),
    )
    .unwrap();
    manifest
}

#[test]
fn lora_assets_give_generates_pixels_rebake_on_scale_or_file_change_and_fail_alone() {
    let dir = scratch("lora");
    let loras = dir.join("loras");
    std::fs::create_dir_all(&loras).unwrap();
    std::fs::copy(lora_fixture("style.kohya.safetensors"), loras.join("style.safetensors")).unwrap();
    std::fs::copy(lora_fixture("broken/truncated.safetensors"), loras.join("truncated.safetensors")).unwrap();
    std::fs::copy(lora_fixture("broken/sd2_dims.safetensors"), loras.join("sd2_dims.safetensors")).unwrap();
    let manifest = write_lora_manifest(&dir, "0.5");
    let out = dir.join("out");

    // A bad LoRA fails only its asset, with the reason in the report.
    let (o, report) = bake(&manifest, &out, &[]);
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert_eq!(names_with(&report, "baked"), BTreeSet::from(["plain".into(), "styled".into(), "styled_tiled".into()]), "{log}");
    assert_eq!(names_with(&report, "failed"), BTreeSet::from(["truncated".into(), "sd2_lora".into()]), "{log}");
    for e in report["assets"].as_array().unwrap().iter().filter(|e| e["status"] == "failed") {
        let (name, error) = (e["name"].as_str().unwrap(), e["error"].as_str().unwrap());
        println!("{name}: {error}");
        let file = if name == "truncated" { "truncated.safetensors" } else { "sd2_dims.safetensors" };
        assert!(error.contains(file), "{name}: the report names the bad file: {error}");
        assert!(!out.join(format!("{name}.png")).exists() && !out.join(format!("{name}.kiln-key")).exists(), "{name}: nothing written");
    }
    // One view for the two assets that share `style` at 0.5 (the seamless one is a view of it).
    let merges = log.lines().filter(|l| l.contains("merging LoRA") && l.contains("style.safetensors scale 0.5")).count();
    assert_eq!(merges, 1, "the style view is built once and reused:\n{log}");

    // The same pixels as `generate --lora FILE:SCALE` with the same settings.
    let generate = |extra: &[&str], file: &str| {
        succeeds(
            Command::new(generate_bin())
                .arg("--model")
                .arg(common::fixture())
                .args(["--prompt", "mossy stone brick wall", "--negative-prompt", "blurry", "--steps", "4", "--scheduler", "ddim"])
                .args(extra)
                .arg("--out")
                .arg(dir.join(file)),
        );
        read_png(&dir.join(file)).0
    };
    let style_arg = format!("{}:0.5", loras.join("style.safetensors").display());
    let styled = generate(&["--seed", "7", "--lora", &style_arg], "styled_gen.png");
    let tiled = generate(&["--seed", "8", "--seamless", "xy", "--lora", &style_arg], "tiled_gen.png");
    let plain = generate(&["--seed", "7"], "plain_gen.png");
    assert!(read_png(&out.join("styled.png")).0 == styled, "styled: kiln-bake's pixels differ from generate --lora's");
    assert!(read_png(&out.join("styled_tiled.png")).0 == tiled, "styled_tiled: kiln-bake's pixels differ from generate --seamless xy --lora's");
    assert!(read_png(&out.join("plain.png")).0 == plain, "plain: kiln-bake's pixels differ from generate's");
    let changed = styled.iter().zip(&plain).filter(|(a, b)| a != b).count();
    println!("the LoRA changes {changed} of {} channel values", plain.len());
    assert!(changed > 0, "the LoRA must act, so the comparison can fail");

    // A new scale re-bakes exactly the assets with that LoRA; the good rest is skipped.
    write_lora_manifest(&dir, "0.8");
    let (o, report) = bake(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "baked"), BTreeSet::from(["styled".into(), "styled_tiled".into()]), "{}", stderr(&o));
    assert_eq!(names_with(&report, "skipped"), BTreeSet::from(["plain".into()]), "{}", stderr(&o));
    let styled_08 = read_png(&out.join("styled.png")).0;
    assert!(styled_08 != styled, "scale 0.8 makes other pixels than 0.5");

    // Only the scale of one asset: only that asset.
    let text = std::fs::read_to_string(&manifest).unwrap();
    let text = text.replacen("seed = 8\nlora = { path = \"loras/style.safetensors\", scale = 0.8 }", "seed = 8\nlora = { path = \"loras/style.safetensors\", scale = 0.9 }", 1);
    std::fs::write(&manifest, text).unwrap();
    let (o, report) = bake(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "baked"), BTreeSet::from(["styled_tiled".into()]), "{}", stderr(&o));
    assert_eq!(names_with(&report, "skipped"), BTreeSet::from(["plain".into(), "styled".into()]), "{}", stderr(&o));

    // Other bytes under the same file name re-bake its assets too.
    std::fs::copy(lora_fixture("detail.kohya.safetensors"), loras.join("style.safetensors")).unwrap();
    let (o, report) = bake(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "baked"), BTreeSet::from(["styled".into(), "styled_tiled".into()]), "{}", stderr(&o));
    assert_eq!(names_with(&report, "skipped"), BTreeSet::from(["plain".into()]), "{}", stderr(&o));
    assert!(read_png(&out.join("styled.png")).0 != styled_08, "another LoRA file makes other pixels");
    let styled_detail = read_png(&out.join("styled.png")).0;

    // The text encoders' own strength: only that asset re-bakes, with the
    // pixels of `generate --lora FILE:SCALE:TEXT_ENCODER_SCALE`.
    let text = std::fs::read_to_string(&manifest).unwrap();
    let text = text.replacen(
        "name = \"styled\"\nlora = { path = \"loras/style.safetensors\", scale = 0.8 }",
        "name = \"styled\"\nlora = { path = \"loras/style.safetensors\", scale = 0.8, text_encoder_scale = 0 }",
        1,
    );
    std::fs::write(&manifest, text).unwrap();
    let (o, report) = bake(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "baked"), BTreeSet::from(["styled".into()]), "{}", stderr(&o));
    let te_arg = format!("{}:0.8:0", loras.join("style.safetensors").display());
    let te0 = generate(&["--seed", "7", "--lora", &te_arg], "styled_te0_gen.png");
    assert!(read_png(&out.join("styled.png")).0 == te0, "styled: kiln-bake's pixels differ from generate --lora FILE:0.8:0's");
    assert!(te0 != styled_detail, "the text encoders' strength acts");
}

/// A manifest on the ControlNet fixture: `plain`, `edged` (a ControlNet on a
/// control image with Canny preprocessing) and `bad_net` (a ControlNet the
/// model lacks, only when `with_bad` is set).
fn write_control_manifest(dir: &Path, model: &Path, with_bad: bool) -> PathBuf {
    let manifest = dir.join("control.toml");
    let bad = if with_bad { "[[asset]]\nname = \"bad_net\"\ncontrol = { controlnet = \"missing\", image = \"control.png\" }\n" } else { "" };
    std::fs::write(
        &manifest,
        format!(
            "[defaults]\nmodel = {:?}\nformat = \"png\"\nprompt = \"mossy stone wall\"\nseed = 7\nsteps = 4\nscheduler = \"ddim\"\n\
             [[asset]]\nname = \"plain\"\n\
             [[asset]]\nname = \"edged\"\ncontrol = {{ controlnet = \"tiny\", image = \"control.png\", preprocess = \"canny\", scale = 0.8, end = 0.8 }}\n{bad}",
            model.display().to_string()
        ),
    )
    .unwrap();
    manifest
}

#[test]
fn control_assets_give_generates_pixels_and_rebake_when_the_control_image_changes() {
    let dir = scratch("control");
    let model = common::controlnet_folder("bake");
    std::fs::copy(common::golden("controlnet/control_b.png"), dir.join("control.png")).unwrap();
    let out = dir.join("out");

    // A ControlNet the model lacks is a manifest error naming the asset, key and line; nothing bakes.
    let (o, _) = bake(&write_control_manifest(&dir, &model, true), &out, &[]);
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{log}");
    assert!(log.contains("line 15, asset \"bad_net\", key `control`") && log.contains("no ControlNet \"missing\""), "{log}");
    assert!(!out.join("plain.png").exists());

    let manifest = write_control_manifest(&dir, &model, false);
    let (_, report) = bake_ok(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "baked"), BTreeSet::from(["plain".into(), "edged".into()]));
    succeeds(
        Command::new(generate_bin())
            .arg("--model")
            .arg(&model)
            .args(["--prompt", "mossy stone wall", "--seed", "7", "--steps", "4", "--scheduler", "ddim", "--controlnet", "tiny", "--control-image"])
            .arg(dir.join("control.png"))
            .args(["--control-preprocess", "canny", "--control-scale", "0.8", "--control-end", "0.8", "--out"])
            .arg(dir.join("edged_gen.png")),
    );
    let edged = read_png(&out.join("edged.png")).0;
    assert!(edged == read_png(&dir.join("edged_gen.png")).0, "edged: kiln-bake's pixels differ from generate --controlnet's");
    let changed = edged.iter().zip(&read_png(&out.join("plain.png")).0).filter(|(a, b)| a != b).count();
    println!("the ControlNet changes {changed} of {} channel values", edged.len());
    assert!(changed > 0, "the ControlNet must act, so the comparison can fail");

    // Other bytes under the control image's name re-bake exactly the asset that uses it.
    std::fs::copy(common::golden("controlnet/control_a.png"), dir.join("control.png")).unwrap();
    let (o, report) = bake(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "baked"), BTreeSet::from(["edged".into()]), "{}", stderr(&o));
    assert_eq!(names_with(&report, "skipped"), BTreeSet::from(["plain".into()]), "{}", stderr(&o));
    assert!(read_png(&out.join("edged.png")).0 != edged, "another control image makes other pixels");
}

/// An asset with a LoRA and a ControlNet (both keys in one recipe) bakes the
/// pixels `generate --lora … --controlnet …` makes, and the LoRA changes them
/// from the same asset without it.
/// `lora_slots = true`: two LoRA sets on one slotted model give
/// `generate --lora-slots --lora`'s pixels, and the key is in the content
/// key (turning it on re-bakes the assets).
#[test]
fn lora_slots_assets_give_generates_pixels_and_rebake_when_turned_on() {
    let dir = scratch("lora-slots");
    let write = |slots: &str| {
        std::fs::write(
            dir.join("slots.toml"),
            format!(
                "[defaults]\nmodel = {:?}\nformat = \"png\"\nprompt = \"mossy stone brick wall\"\nseed = 7\nsteps = 4\nscheduler = \"ddim\"\n{slots}\
                 [[asset]]\nname = \"style\"\nlora = {{ path = {:?} }}\n\
                 [[asset]]\nname = \"detail\"\nlora = {{ path = {:?}, scale = -0.6 }}\n",
                common::fixture().display().to_string(),
                lora_fixture("style.kohya.safetensors").display().to_string(),
                lora_fixture("detail.kohya.safetensors").display().to_string()
            ),
        )
        .unwrap();
    };
    write("");
    let (manifest, out) = (dir.join("slots.toml"), dir.join("out"));
    let (o, report) = bake(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "baked"), BTreeSet::from(["style".into(), "detail".into()]), "{}", stderr(&o));
    write("lora_slots = true\n");
    let (o, report) = bake(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "baked"), BTreeSet::from(["style".into(), "detail".into()]), "turning slots on re-bakes: {}", stderr(&o));
    for (name, lora) in [("style", format!("{}:1", lora_fixture("style.kohya.safetensors").display())), ("detail", format!("{}:-0.6", lora_fixture("detail.kohya.safetensors").display()))] {
        let file = dir.join(format!("{name}_gen.png"));
        succeeds(
            Command::new(generate_bin())
                .arg("--model")
                .arg(common::fixture())
                .args(["--prompt", "mossy stone brick wall", "--seed", "7", "--steps", "4", "--scheduler", "ddim", "--lora-slots", "--lora", &lora])
                .arg("--out")
                .arg(&file),
        );
        assert!(read_png(&out.join(format!("{name}.png"))).0 == read_png(&file).0, "{name}: kiln-bake's pixels differ from generate --lora-slots --lora's");
    }
}

#[test]
fn lora_and_control_in_one_asset_give_generates_pixels() {
    let dir = scratch("control-lora");
    let model = common::controlnet_folder("bake-lora");
    std::fs::copy(common::golden("controlnet/control_a.png"), dir.join("control.png")).unwrap();
    let style = lora_fixture("style.kohya.safetensors");
    let manifest = dir.join("control-lora.toml");
    let control = "control = { controlnet = \"tiny\", image = \"control.png\", scale = 0.8 }";
    std::fs::write(
        &manifest,
        format!(
            "[defaults]\nmodel = {:?}\nformat = \"png\"\nprompt = \"mossy stone wall\"\nseed = 7\nsteps = 4\nscheduler = \"ddim\"\n\
             [[asset]]\nname = \"edged\"\n{control}\n\
             [[asset]]\nname = \"styled_edged\"\nlora = {{ path = {:?}, scale = 0.7 }}\n{control}\n",
            model.display().to_string(),
            style.display().to_string()
        ),
    )
    .unwrap();
    let out = dir.join("out");
    let (_, report) = bake_ok(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "baked"), BTreeSet::from(["edged".into(), "styled_edged".into()]));
    succeeds(
        Command::new(generate_bin())
            .arg("--model")
            .arg(&model)
            .args(["--prompt", "mossy stone wall", "--seed", "7", "--steps", "4", "--scheduler", "ddim", "--lora"])
            .arg(format!("{}:0.7", style.display()))
            .args(["--controlnet", "tiny", "--control-scale", "0.8", "--control-image"])
            .arg(dir.join("control.png"))
            .arg("--out")
            .arg(dir.join("styled_edged_gen.png")),
    );
    let styled = read_png(&out.join("styled_edged.png")).0;
    assert!(styled == read_png(&dir.join("styled_edged_gen.png")).0, "kiln-bake's pixels differ from generate's");
    let changed = styled.iter().zip(&read_png(&out.join("edged.png")).0).filter(|(a, b)| a != b).count();
    println!("the LoRA changes {changed} of {} channel values under the same ControlNet", styled.len());
    assert!(changed > styled.len() / 4, "the LoRA must act with the ControlNet");
}

/// An asset with `refiner` and `control` (ControlNet on the base stage, plain
/// refiner) gives `generate --controlnet ... --refiner`'s pixels; the same
/// asset without the control differs.
#[test]
fn a_refiner_asset_with_control_gives_generates_pixels() {
    let dir = scratch("refiner-control");
    let model = common::sdxl_controlnet_folder("bake-refiner");
    let refiner = common::sdxl_refiner_folder("bake-control");
    std::fs::copy(common::golden("controlnet/control_a.png"), dir.join("control.png")).unwrap();
    let manifest = dir.join("refiner-control.toml");
    std::fs::write(
        &manifest,
        format!(
            "[defaults]\nmodel = {:?}\nformat = \"png\"\nsteps = 10\nscheduler = \"euler\"\nseed = 3\nguidance = 5.0\nprompt = \"mossy stone brick wall\"\nrefiner = {:?}\n\
             [[asset]]\nname = \"guided\"\ncontrol = {{ controlnet = \"xl\", image = \"control.png\", scale = 0.8 }}\n\
             [[asset]]\nname = \"unguided\"\n",
            model.display().to_string(),
            refiner.display().to_string()
        ),
    )
    .unwrap();
    let out = dir.join("out");
    bake_ok(&manifest, &out, &[]);
    let png = dir.join("generated.png");
    succeeds(
        Command::new(generate_bin())
            .arg("--model")
            .arg(&model)
            .arg("--refiner")
            .arg(&refiner)
            .args(["--prompt", "mossy stone brick wall", "--steps", "10", "--scheduler", "euler", "--seed", "3", "--guidance", "5"])
            .args(["--controlnet", "xl", "--control-scale", "0.8", "--control-image"])
            .arg(dir.join("control.png"))
            .arg("--out")
            .arg(&png),
    );
    let guided = read_png(&out.join("guided.png")).0;
    assert!(guided == read_png(&png).0, "kiln-bake's hand-off with control differs from generate's");
    let changed = guided.iter().zip(&read_png(&out.join("unguided.png")).0).filter(|(a, b)| a != b).count();
    println!("the ControlNet changes {changed} of {} channel values of the hand-off", guided.len());
    assert!(changed > 0, "the control must act in a hand-off");
}

/// An asset with `refiner` hands the latents to a second model as `generate
/// --refiner DIR --refiner-start F` does: the same pixels and text chunks; the
/// hand-off changes the image, and another `refiner_start` re-bakes it.
#[test]
fn a_refiner_asset_gives_generates_pixels_and_rebakes_on_a_new_start() {
    let dir = scratch("refiner");
    let base = common::root().join("tests/fixtures/tiny-sdxl");
    let refiner = common::sdxl_refiner_folder("bake");
    let manifest = dir.join("refiner.toml");
    let write = |start: &str| {
        std::fs::write(
            &manifest,
            format!(
                "[defaults]\nmodel = {:?}\nformat = \"png\"\nsteps = 10\nscheduler = \"euler\"\nseed = 3\nguidance = 5.0\nprompt = \"mossy stone brick wall\"\n\
                 [[asset]]\nname = \"refined\"\nrefiner = {:?}\nrefiner_start = {start}\n\
                 [[asset]]\nname = \"plain\"\n",
                base.display().to_string(),
                refiner.display().to_string()
            ),
        )
        .unwrap()
    };
    write("0.7");
    let out = dir.join("out");
    bake_ok(&manifest, &out, &[]);
    let png = dir.join("generated.png");
    succeeds(
        Command::new(generate_bin())
            .arg("--model")
            .arg(&base)
            .arg("--refiner")
            .arg(&refiner)
            .args(["--refiner-start", "0.7", "--prompt", "mossy stone brick wall", "--steps", "10", "--scheduler", "euler", "--seed", "3"])
            .args(["--guidance", "5", "--out"])
            .arg(&png),
    );
    let (a, ta) = read_png(&out.join("refined.png"));
    let (b, tb) = read_png(&png);
    assert!(a == b, "kiln-bake's hand-off pixels differ from generate --refiner's");
    for key in ["prompt", "negative_prompt", "kiln:settings", "Software"] {
        assert_eq!(ta.get(key), tb.get(key), "text chunk {key}");
    }
    assert!(ta["kiln:settings"].contains("refiner_start=0.7"), "{ta:?}");
    let (plain, tp) = read_png(&out.join("plain.png"));
    assert!(plain != a, "the refiner changed nothing");
    assert!(!tp["kiln:settings"].contains("refiner"), "{tp:?}");
    // Another start re-bakes only the refined asset.
    write("0.8");
    let (_, report) = bake_ok(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "baked"), BTreeSet::from(["refined".to_string()]), "{report}");
    assert!(read_png(&out.join("refined.png")).0 != a, "refiner_start 0.8 gives the same pixels as 0.7");
    // refiner_start without a refiner is a manifest error naming the key.
    std::fs::write(&manifest, format!("[[asset]]\nname = \"x\"\nmodel = {:?}\nrefiner_start = 0.5\n", base.display().to_string())).unwrap();
    let (o, _) = bake(&manifest, &out, &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("refiner_start") && stderr(&o).contains("needs a `refiner`"), "{}", stderr(&o));
}

/// `embedding` in a manifest: an SDXL textual-inversion file on the model
/// and, with a refiner, on the refiner too (its `clip_g` into the refiner's
/// one encoder), as `generate --embedding FILE:TOKEN [--refiner DIR]` does:
/// the same pixels and text chunks. The token must act (the asset with
/// `embedding = []` differs), an SD 1.x file on SDXL fails its asset alone
/// naming the file, a rerun skips what was baked, and other bytes under the
/// file's name re-bake the assets that use it.
#[test]
fn embedding_assets_give_generates_pixels_on_the_model_and_its_refiner() {
    let dir = scratch("embedding");
    let base = common::root().join("tests/fixtures/tiny-sdxl");
    let refiner = common::sdxl_refiner_folder("bake-embedding");
    let emb = dir.join("emb");
    std::fs::create_dir_all(&emb).unwrap();
    std::fs::copy(common::root().join("tests/fixtures/sdxl-embedding/xl-brick.safetensors"), emb.join("xl-brick.safetensors")).unwrap();
    std::fs::copy(lora_fixture("brick-style.safetensors"), emb.join("sd1.safetensors")).unwrap();
    let manifest = dir.join("embedding.toml");
    std::fs::write(
        &manifest,
        format!(
            "[defaults]\nmodel = {:?}\nformat = \"png\"\nsteps = 10\nscheduler = \"euler\"\nseed = 3\nguidance = 5.0\n\
             prompt = \"<xl-brick> wall, mossy\"\nembedding = {{ path = \"emb/xl-brick.safetensors\", token = \"<xl-brick>\" }}\n\
             [[asset]]\nname = \"embedded\"\n\
             [[asset]]\nname = \"refined\"\nrefiner = {:?}\nrefiner_start = 0.5\n\
             [[asset]]\nname = \"plain\"\nembedding = []\n\
             [[asset]]\nname = \"wrong\"\nembedding = {{ path = \"emb/sd1.safetensors\", token = \"<sd1>\" }}\n",
            base.display().to_string(),
            refiner.display().to_string()
        ),
    )
    .unwrap();
    let out = dir.join("out");
    let (o, report) = bake(&manifest, &out, &[]);
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert_eq!(names_with(&report, "baked"), BTreeSet::from(["embedded".into(), "refined".into(), "plain".into()]), "{log}");
    let wrong = report["assets"].as_array().unwrap().iter().find(|e| e["name"] == "wrong").unwrap();
    assert!(wrong["error"].as_str().unwrap().contains("sd1.safetensors"), "{wrong}");
    assert!(log.lines().any(|l| l.contains("adding embedding") && l.contains("to refiner model")), "{log}");

    let generate = |extra: &[&str], file: &str| {
        let o = succeeds(
            Command::new(generate_bin())
                .arg("--model")
                .arg(&base)
                .args(["--prompt", "<xl-brick> wall, mossy", "--steps", "10", "--scheduler", "euler", "--seed", "3", "--guidance", "5"])
                .args(extra)
                .arg("--out")
                .arg(dir.join(file)),
        );
        (read_png(&dir.join(file)), stderr(&o))
    };
    let file = format!("{}:<xl-brick>", emb.join("xl-brick.safetensors").display());
    let ((embedded, te), _) = generate(&["--embedding", &file], "embedded_gen.png");
    let refiner_dir = refiner.display().to_string();
    let ((refined, tr), said) = generate(&["--embedding", &file, "--refiner", &refiner_dir, "--refiner-start", "0.5"], "refined_gen.png");
    assert!(said.contains("refiner: embedding <xl-brick>"), "generate gives the refiner the embedding:\n{said}");
    let (a, ta) = read_png(&out.join("embedded.png"));
    assert!(a == embedded, "embedded: kiln-bake's pixels differ from generate --embedding's");
    let (b, tb) = read_png(&out.join("refined.png"));
    assert!(b == refined, "refined: kiln-bake's pixels differ from generate --embedding --refiner's");
    for key in ["prompt", "kiln:settings"] {
        assert_eq!(ta.get(key), te.get(key), "embedded: text chunk {key}");
        assert_eq!(tb.get(key), tr.get(key), "refined: text chunk {key}");
    }
    let plain = read_png(&out.join("plain.png")).0;
    let changed = plain.iter().zip(&a).filter(|(x, y)| x != y).count();
    println!("the embedding changes {changed} of {} channel values", a.len());
    assert!(changed > 0, "the embedding must act, so the comparisons can fail");

    // A rerun skips the baked assets; other bytes under the file's name re-bake its users.
    let (_, report) = bake(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "skipped"), BTreeSet::from(["embedded".into(), "refined".into(), "plain".into()]), "{report}");
    let mut bytes = std::fs::read(emb.join("xl-brick.safetensors")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(emb.join("xl-brick.safetensors"), bytes).unwrap();
    let (_, report) = bake(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "baked"), BTreeSet::from(["embedded".into(), "refined".into()]), "{report}");
    assert_eq!(names_with(&report, "skipped"), BTreeSet::from(["plain".into()]), "{report}");
}

/// A manifest beside copies of the upscaler fixtures (so paths are relative
/// to it and a test can change their files): a default 4x upscale with tile
/// 24 and `context`, taken by a seamless PNG, a seamless DDS with mipmaps and
/// a sprite; a 2x fixed-size graph (an ONNX file with its settings .json) on
/// one asset; `upscale = false` on a sprite; both sprites in one atlas.
fn write_upscale_manifest(dir: &Path, context: u32) -> PathBuf {
    let manifest = dir.join("upscale.toml");
    std::fs::write(
        &manifest,
        format!(
            "[defaults]\nmodel = {:?}\nformat = \"png\"\nprompt = \"lava\"\nsteps = 2\nscheduler = \"ddim\"\n\
             upscale = {{ path = \"upscalers/x4\", tile = 24, context = {context} }}\n\
             [[asset]]\nname = \"tile\"\nseamless = \"xy\"\n\
             [[asset]]\nname = \"tile_dds\"\nseamless = \"xy\"\nformat = \"dds\"\n\
             [[asset]]\nname = \"x2\"\nupscale = {{ path = \"upscalers/x2-fixed.onnx\" }}\n\
             [[asset]]\nname = \"sprite_up\"\nsprite = true\n\
             [[asset]]\nname = \"plain\"\nsprite = true\nupscale = false\n\
             [[atlas]]\nname = \"sheet\"\nassets = [\"sprite_up\", \"plain\"]\n",
            common::fixture().display().to_string()
        ),
    )
    .unwrap();
    manifest
}

/// `upscale` in a manifest: a seamless asset upscaled by the x4 fixture is
/// 4x the size and holds exactly the bytes of the Rust API's
/// `outputs::finish` (= `Upscaler::upscale` wrapping on both axes) on the
/// same generation, and `generate --upscale`'s pixels and settings; the DDS
/// has a full mip chain at the larger size; each upscaler loads once; the
/// atlas packs an upscaled and a plain sprite at their real sizes; a rerun
/// skips everything, and a new `context` or new bytes in an upscaler's files
/// (a folder's, or an ONNX file's settings .json) re-bake exactly the assets
/// that use it.
#[test]
fn upscaled_assets_give_the_rust_apis_pixels_and_rebake_when_the_upscale_changes() {
    use kiln::model::seamless::Seamless;
    use kiln::model::upscaler::{UpscaleOptions, Upscaler};
    use kiln::pipeline::outputs;

    let dir = scratch("upscale");
    let ups = dir.join("upscalers");
    std::fs::create_dir_all(ups.join("x4")).unwrap();
    let fixtures = common::root().join("tests/fixtures/upscaler");
    std::fs::copy(fixtures.join("x4/model.onnx"), ups.join("x4/model.onnx")).unwrap();
    std::fs::copy(fixtures.join("x2-fixed.onnx"), ups.join("x2-fixed.onnx")).unwrap();
    std::fs::copy(fixtures.join("x2-fixed.json"), ups.join("x2-fixed.json")).unwrap();
    let manifest = write_upscale_manifest(&dir, 20);
    let out = dir.join("out");
    let (o, report) = bake_ok(&manifest, &out, &[]);
    let log = stderr(&o);
    let all: BTreeSet<String> = ["tile", "tile_dds", "x2", "sprite_up", "plain", "sheet"].iter().map(|s| s.to_string()).collect();
    assert_eq!(names_with(&report, "baked"), all, "{log}");
    assert_eq!(log.matches("loading upscaler").count(), 2, "x4 loads once for its three assets, x2 once:\n{log}");

    // The Rust API on the same generation, with the same options.
    let runtime = common::runtime();
    let model = kiln::Model::load_with(runtime, &common::fixture(), &kiln::ModelOptions { seamless: Seamless::Xy, ..Default::default() }).unwrap();
    let request = kiln::GenerateRequest { prompt: "lava".into(), steps: 2, scheduler: kiln::SchedulerKind::Ddim, ..Default::default() };
    let image = model.generate(&request).unwrap().to_rgba8();
    let x4 = Upscaler::load(runtime, &ups.join("x4")).unwrap();
    let options = UpscaleOptions { tile: 24, context: 20, ..Default::default() };
    let post = outputs::PostProcess { upscale: Some(options), seamless: Seamless::Xy, ..Default::default() };
    let want = outputs::finish(&model, image.clone(), &post, Some(&x4)).unwrap().image;
    let direct = x4.upscale(&image, &UpscaleOptions { seamless: Seamless::Xy, ..options }).unwrap();
    assert!(want.pixels == direct.pixels, "finish upscales wrapping on the asset's axes");
    let (tile, text) = read_png(&out.join("tile.png"));
    assert_eq!((want.width, want.height), (256, 256), "4x the tiny model's 64x64");
    assert_eq!(image::image_dimensions(out.join("tile.png")).unwrap(), (256, 256));
    assert!(tile == want.pixels, "kiln-bake's upscaled pixels differ from outputs::finish / Upscaler::upscale");
    let settings = &text["kiln:settings"];
    let path = ups.join("x4").display().to_string();
    assert!(settings.contains("size=256x256") && settings.contains(&format!("upscaler={path} upscale_tile=24 upscale_context=20")), "{settings}");
    // And what `generate --upscale` makes from the same flags: pixels and settings.
    let png = dir.join("generated.png");
    succeeds(
        Command::new(generate_bin())
            .arg("--model")
            .arg(common::fixture())
            .args(["--prompt", "lava", "--steps", "2", "--scheduler", "ddim", "--seamless", "xy", "--upscale"])
            .arg(ups.join("x4"))
            .args(["--upscale-tile", "24", "--upscale-context", "20", "--out"])
            .arg(&png),
    );
    let (generated, gtext) = read_png(&png);
    assert!(generated == tile, "kiln-bake's upscaled pixels differ from generate --upscale's");
    for key in ["prompt", "negative_prompt", "kiln:settings", "Software"] {
        assert_eq!(text.get(key), gtext.get(key), "text chunk {key}");
    }
    // The key file records the upscale for people reading it.
    let key: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("tile.kiln-key")).unwrap()).unwrap();
    assert_eq!(key["settings"]["upscale"], serde_json::json!({"path": path, "tile": 24, "context": 20, "scale": 4}));

    // The DDS: a full mip chain at the upscaled size, level 0 the PNG's pixels.
    let dds = read_dds(&out.join("tile_dds.dds"));
    assert_eq!(dds.levels.iter().map(|l| l.width).collect::<Vec<_>>(), vec![256, 128, 64, 32, 16, 8, 4, 2, 1]);
    let err: f64 = tile.iter().zip(&dds.levels[0].pixels).map(|(a, b)| a.abs_diff(*b) as f64).sum::<f64>() / tile.len() as f64;
    println!("upscaled BC7 level 0 vs PNG: mean abs error {err:.2} (bound 3.0 of 255)");
    assert!(err <= 3.0, "BC7 mean abs error {err}");
    // The fixed-size 2x graph (scale from its settings file), and `upscale = false`.
    assert_eq!(image::image_dimensions(out.join("x2.png")).unwrap(), (128, 128));
    let (_, plain_text) = read_png(&out.join("plain.png"));
    assert_eq!(image::image_dimensions(out.join("plain.png")).unwrap(), (64, 64), "upscale = false turns the default off");
    assert!(!plain_text["kiln:settings"].contains("upscale"), "{plain_text:?}");
    let plain_key: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("plain.kiln-key")).unwrap()).unwrap();
    assert!(plain_key["settings"].get("upscale").is_none(), "{plain_key}");
    // The atlas packs each sprite at the size it was baked.
    let atlas: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("sheet.json")).unwrap()).unwrap();
    let sizes: Vec<(u64, u64)> = atlas["sprites"].as_array().unwrap().iter().map(|r| (r["source_width"].as_u64().unwrap(), r["source_height"].as_u64().unwrap())).collect();
    assert_eq!(sizes, vec![(256, 256), (64, 64)], "{atlas}");
    let sheet = image::open(out.join("sheet.png")).unwrap();
    for r in atlas["sprites"].as_array().unwrap() {
        assert!(r["x"].as_u64().unwrap() + r["width"].as_u64().unwrap() <= sheet.width() as u64, "{r}");
        assert!(r["y"].as_u64().unwrap() + r["height"].as_u64().unwrap() <= sheet.height() as u64, "{r}");
    }

    // A rerun skips everything and loads nothing.
    let (o, report) = bake_ok(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "skipped"), all);
    assert!(!stderr(&o).contains("loading"), "{}", stderr(&o));
    let snapshot = |names: &[&str]| -> Vec<Vec<u8>> { names.iter().map(|n| std::fs::read(out.join(n)).unwrap()).collect() };
    let untouched = ["x2.png", "plain.png"];
    let before = snapshot(&untouched);

    // Another context re-bakes exactly the assets with the default upscale (and the atlas).
    write_upscale_manifest(&dir, 16);
    let (o, report) = bake_ok(&manifest, &out, &[]);
    let default_users: BTreeSet<String> = ["tile", "tile_dds", "sprite_up", "sheet"].iter().map(|s| s.to_string()).collect();
    assert_eq!(names_with(&report, "baked"), default_users, "{}", stderr(&o));
    assert_eq!(names_with(&report, "skipped"), BTreeSet::from(["x2".into(), "plain".into()]), "{}", stderr(&o));
    assert_eq!(snapshot(&untouched), before, "the other outputs were not rewritten");
    let (tile16, text16) = read_png(&out.join("tile.png"));
    assert!(text16["kiln:settings"].contains("upscale_tile=24 upscale_context=16"), "{text16:?}");
    let want16 = outputs::finish(&model, image.clone(), &outputs::PostProcess { upscale: Some(UpscaleOptions { context: 16, ..options }), ..post }, Some(&x4)).unwrap().image;
    assert!(tile16 == want16.pixels, "context 16: kiln-bake's pixels differ from outputs::finish's");

    // New bytes in the x4 folder (a settings file, the same scale) re-bake its users alone.
    std::fs::write(ups.join("x4/config.json"), "{\"scale\": 4}").unwrap();
    let (o, report) = bake_ok(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "baked"), default_users, "{}", stderr(&o));
    // New bytes in the ONNX file's settings .json re-bake only its asset.
    std::fs::write(ups.join("x2-fixed.json"), "{\"scale\": 2, \"multiple\": 1}").unwrap();
    let (o, report) = bake_ok(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "baked"), BTreeSet::from(["x2".into()]), "{}", stderr(&o));
    assert_eq!(assert_no_truncated_file(&out), 13);
}

/// Bad `upscale` values are manifest errors naming the asset, the key and
/// the line, all listed at once, and nothing bakes.
#[test]
fn upscale_manifest_errors_name_asset_key_and_line() {
    let dir = scratch("upscale-errors");
    std::fs::create_dir_all(dir.join("x4")).unwrap();
    std::fs::copy(common::root().join("tests/fixtures/upscaler/x4/model.onnx"), dir.join("x4/model.onnx")).unwrap();
    let manifest = dir.join("bad.toml");
    std::fs::write(
        &manifest,
        format!(
            "[defaults]\nmodel = {:?}\nupscale = {{ path = \"x4\" }}\n\
             [[asset]]\nname = \"typo\"\nupscale = {{ path = \"x4\", tiles = 8 }}\n\
             [[asset]]\nname = \"wide\"\nupscale = {{ path = \"x4\", context = 2000 }}\n\
             [[asset]]\nname = \"missing\"\nupscale = {{ path = \"nowhere/x4.onnx\" }}\n\
             [[asset]]\nname = \"pixels\"\npixel_art = \"4:8\"\n\
             [[asset]]\nname = \"pixels_off\"\npixel_art = \"4:8\"\nupscale = false\n\
             [[asset]]\nname = \"on\"\nupscale = true\n",
            common::fixture().display().to_string()
        ),
    )
    .unwrap();
    let out = dir.join("out");
    let (o, _) = bake(&manifest, &out, &[]);
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{log}");
    for want in [
        "line 6, asset \"typo\", key `upscale`: unknown field `tiles`",
        "line 9, asset \"wide\", key `upscale`: context 2000 is outside 0..=1024",
        &format!("line 12, asset \"missing\", key `upscale`: {} is not an upscaler", dir.join("nowhere/x4.onnx").display()),
        "line 3, asset \"pixels\", key `upscale`: does not combine with `pixel_art` (line 15)",
        "line 22, asset \"on\", key `upscale`: `true` names no upscaler",
    ] {
        assert!(log.contains(want), "wanted {want:?} in\n{log}");
    }
    assert!(log.contains("5 error(s) in the manifest"), "`upscale = false` lets pixels_off have pixel art:\n{log}");
    assert!(!out.exists(), "nothing is written for an invalid manifest");
}

fn write_picture_manifest(dir: &Path, extra: &str) -> PathBuf {
    let manifest = dir.join("pictures.toml");
    std::fs::write(
        &manifest,
        format!(
            "[defaults]\nmodel = {:?}\nformat = \"png\"\nprompt = \"mossy stone brick wall\"\nseed = 5\nsteps = 4\nscheduler = \"ddim\"\nstrength = 0.6\n\
             [[asset]]\nname = \"plain\"\n\
             [[asset]]\nname = \"restyled\"\ninit_image = \"photo.png\"\n\
             [[asset]]\nname = \"patched\"\ninit_image = \"photo.png\"\nmask = \"mask.png\"\nstrength = 1.0\n\
             [[asset]]\nname = \"wider\"\ninit_image = \"photo.png\"\nextend = [16, 16, 0, 0]\nstrength = 1.0\n\
             [[asset]]\nname = \"tiled\"\ninit_image = \"photo.png\"\nmake_tileable = 16\nstrength = 1.0\nnormal_map = true\n{extra}",
            bundled_model().display().to_string()
        ),
    )
    .unwrap();
    manifest
}

/// `init_image` in a manifest, with `strength`, `mask`, `extend` or
/// `make_tileable`: each asset bakes the pixels and settings `generate
/// --init-image …` makes from the same flags (img2img, inpainting,
/// outpainting, make-tileable); a made-tileable asset is `seamless = "xy"`,
/// so its wrap seam is gone and its normal map wraps; a `[defaults]`
/// strength leaves the asset without a picture as it was; new bytes in the
/// picture re-bake exactly the assets that start from it, and new bytes in
/// the mask exactly the inpainted one.
#[test]
fn picture_assets_give_generates_pixels_and_rebake_when_their_picture_changes() {
    let dir = scratch("pictures");
    std::fs::copy(common::golden("canny/drawn.png"), dir.join("photo.png")).unwrap();
    std::fs::copy(common::golden("inpaint/mask.png"), dir.join("mask.png")).unwrap();
    let manifest = write_picture_manifest(&dir, "");
    let out = dir.join("out");
    let (_, report) = bake_ok(&manifest, &out, &[]);
    let all: BTreeSet<String> = ["plain", "restyled", "patched", "wider", "tiled"].map(String::from).into();
    assert_eq!(names_with(&report, "baked"), all);

    let photo = dir.join("photo.png");
    let generate = |args: &[&str], out_name: &str, extra: &[(&str, PathBuf)]| {
        let mut cmd = Command::new(generate_bin());
        cmd.arg("--model").arg(bundled_model());
        cmd.args(["--prompt", "mossy stone brick wall", "--seed", "5", "--steps", "4", "--scheduler", "ddim"]).args(args);
        for (flag, path) in extra {
            cmd.arg(flag).arg(path);
        }
        succeeds(cmd.arg("--out").arg(dir.join(out_name)));
    };
    generate(&["--strength", "0.6"], "restyled.png", &[("--init-image", photo.clone())]);
    generate(&["--strength", "1"], "patched.png", &[("--init-image", photo.clone()), ("--mask", dir.join("mask.png"))]);
    generate(&["--strength", "1", "--extend", "16,16,0,0"], "wider.png", &[("--init-image", photo.clone())]);
    generate(&["--strength", "1", "--make-tileable", "16"], "tiled.png", &[("--init-image", photo.clone()), ("--normal-map", dir.join("tiled_n.png"))]);
    generate(&[], "plain.png", &[]);
    for (baked, generated) in [("restyled.png", "restyled.png"), ("patched.png", "patched.png"), ("wider.png", "wider.png"), ("tiled.png", "tiled.png"), ("tiled_normal.png", "tiled_n.png"), ("plain.png", "plain.png")] {
        let (a, ta) = read_png(&out.join(baked));
        let (b, tb) = read_png(&dir.join(generated));
        assert!(a == b, "{baked}: kiln-bake's pixels differ from generate's");
        for key in ["prompt", "negative_prompt", "kiln:settings", "Software"] {
            assert_eq!(ta.get(key), tb.get(key), "{baked}: text chunk {key}");
        }
    }
    let (_, restyled) = read_png(&out.join("restyled.png"));
    assert!(restyled["kiln:settings"].contains("strength=0.6") && restyled["kiln:settings"].contains("photo.png"), "{restyled:?}");
    let (_, plain) = read_png(&out.join("plain.png"));
    assert!(plain["kiln:settings"].contains("init_image=none strength=0.8"), "the default strength is not the plain asset's: {plain:?}");

    // Each job did what it says: the kept pixels of the inpainted and the
    // extended pictures are the photo's, the extended one is wider, and the
    // tileable one tiles (its normal map too) where the photo does not.
    let png = |p: &Path| image::open(p).unwrap().to_rgba8();
    let (src, patched, wider, tiled) = (png(&photo), png(&out.join("patched.png")), png(&out.join("wider.png")), png(&out.join("tiled.png")));
    let mask = image::open(dir.join("mask.png")).unwrap().to_luma8();
    let kept = mask.pixels().zip(src.pixels().zip(patched.pixels())).filter(|(m, _)| m.0[0] < 128);
    let (kept_n, kept_same) = kept.fold((0, 0), |(n, same), (_, (a, b))| (n + 1, same + usize::from(a == b)));
    assert!(kept_n > 0 && kept_same == kept_n, "inpainting keeps the unmasked pixels: {kept_same} of {kept_n}");
    assert_eq!(wider.dimensions(), (96, 64));
    assert!((0..64).all(|y| (0..64).all(|x| wider.get_pixel(x + 16, y) == src.get_pixel(x, y))), "extend keeps the photo in the middle");
    let seams = |img: &image::RgbaImage| {
        let img = Rgba8Image { width: img.width() as usize, height: img.height() as usize, pixels: img.as_raw().clone() };
        (seam_score(&img, Axis::X).unwrap(), seam_score(&img, Axis::Y).unwrap())
    };
    let ((sx, sy), (tx, ty), (nx, ny)) = (seams(&src), seams(&tiled), seams(&png(&out.join("tiled_normal.png"))));
    println!("seam scores x/y: photo {sx:.2}/{sy:.2}, made tileable {tx:.2}/{ty:.2}, its normal map {nx:.2}/{ny:.2} (bound 1.5)");
    assert!(sx > 1.5 || sy > 1.5, "the photo must have a seam, so the check can fail");
    assert!(tx < 1.5 && ty < 1.5 && nx < 1.5 && ny < 1.5);
    // The PNGs record what was done with the picture, so a reader can redo it.
    let settings = |name: &str| read_png(&out.join(name)).1["kiln:settings"].clone();
    assert!(settings("tiled.png").contains("seamless=Xy") && settings("tiled.png").ends_with(" make_tileable=16"), "{}", settings("tiled.png"));
    assert!(settings("wider.png").ends_with(" extend=16,16,0,0"), "{}", settings("wider.png"));
    assert!(settings("patched.png").ends_with(&format!(" mask={}", dir.join("mask.png").display())), "{}", settings("patched.png"));
    assert!(!settings("restyled.png").contains("mask=") && !settings("plain.png").contains("extend="));

    // A rerun skips all; a new picture re-bakes the four that start from it,
    // a new mask only the inpainted one.
    let (_, report) = bake_ok(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "skipped"), all);
    std::fs::copy(common::golden("canny/noise.png"), &photo).unwrap();
    let (_, report) = bake_ok(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "baked"), ["restyled", "patched", "wider", "tiled"].map(String::from).into());
    assert!(png(&out.join("restyled.png")) != png(&dir.join("restyled.png")), "another picture makes other pixels");
    let mut mask_bytes = image::open(dir.join("mask.png")).unwrap().to_luma8();
    mask_bytes.put_pixel(0, 0, image::Luma([255 - mask_bytes.get_pixel(0, 0).0[0]]));
    mask_bytes.save(dir.join("mask.png")).unwrap();
    let (_, report) = bake_ok(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "baked"), ["patched".to_string()].into());
}

/// Picture keys without a picture, bad values and jobs that exclude each
/// other are manifest errors naming asset, key and line; nothing bakes.
#[test]
fn picture_manifest_errors_name_asset_key_and_line() {
    let dir = scratch("picture-errors");
    std::fs::copy(common::golden("canny/drawn.png"), dir.join("photo.png")).unwrap();
    std::fs::copy(common::golden("inpaint/mask.png"), dir.join("mask.png")).unwrap();
    let manifest = write_picture_manifest(
        &dir,
        "[[asset]]\nname = \"no_picture\"\nmask = \"mask.png\"\n\
         [[asset]]\nname = \"missing\"\ninit_image = \"nowhere.png\"\n\
         [[asset]]\nname = \"both\"\ninit_image = \"photo.png\"\nmask = \"mask.png\"\nmake_tileable = 8\n\
         [[asset]]\nname = \"sized\"\ninit_image = \"photo.png\"\nextend = [8, 8, 0, 0]\nsize = [64, 64]\n\
         [[asset]]\nname = \"x_only\"\ninit_image = \"photo.png\"\nmake_tileable = 8\nseamless = \"x\"\n\
         [[asset]]\nname = \"sides\"\ninit_image = \"photo.png\"\nextend = [8, 8]\n\
         [[asset]]\nname = \"strong\"\ninit_image = \"photo.png\"\nstrength = 1.5\n",
    );
    let out = dir.join("out");
    let (o, _) = bake(&manifest, &out, &[]);
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{log}");
    for want in [
        "line 32, asset \"no_picture\", key `mask`: works on a picture: set `init_image` (a PNG) too",
        &format!("line 35, asset \"missing\", key `init_image`: init image {} is not a file", dir.join("nowhere.png").display()),
        "line 40, asset \"both\", key `make_tileable`: `mask` and `make_tileable` are different jobs on the picture",
        "line 45, asset \"sized\", key `size`: the picture (and `extend`) sets this asset's size",
        "line 50, asset \"x_only\", key `seamless`: `make_tileable` makes the picture tile on both axes",
        "line 54, asset \"sides\", key `extend`: [8, 8] is not [LEFT, RIGHT, TOP, BOTTOM]",
        "line 58, asset \"strong\", key `strength`: 1.5 is outside 0..=1",
    ] {
        assert!(log.contains(want), "wanted {want:?} in\n{log}");
    }
    assert!(log.contains("7 error(s) in the manifest"), "{log}");
    assert!(!out.exists(), "nothing is written for an invalid manifest");

    // A picture that is not a PNG fails its asset alone, at bake time, with the file named.
    std::fs::write(dir.join("notes.png"), "not a picture").unwrap();
    let manifest = dir.join("corrupt.toml");
    std::fs::write(
        &manifest,
        format!(
            "[defaults]\nmodel = {:?}\nsteps = 2\n[[asset]]\nname = \"bad\"\ninit_image = \"notes.png\"\n[[asset]]\nname = \"good\"\ninit_image = \"photo.png\"\n",
            bundled_model().display().to_string()
        ),
    )
    .unwrap();
    let (o, report) = bake(&manifest, &out, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(names_with(&report, "baked"), ["good".to_string()].into());
    let error = report["assets"][0]["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("init image") && error.contains("notes.png") && error.contains("not a readable PNG"), "{error}");
}

/// Pictures for the `source` assets: a texture that tiles (whole periods of
/// sines, 48×40), one that does not (a ramp), and a disc on a flat backdrop.
fn write_source_pictures(dir: &Path) {
    let picture = |w: usize, h: usize, f: &dyn Fn(usize, usize) -> [u8; 4]| -> Vec<u8> { (0..h).flat_map(|y| (0..w).flat_map(move |x| f(x, y))).collect() };
    let save = |name: &str, w: usize, h: usize, pixels: Vec<u8>| image::save_buffer(dir.join(name), &pixels, w as u32, h as u32, image::ExtendedColorType::Rgba8).unwrap();
    let tau = std::f32::consts::TAU;
    save("wall.png", 48, 40, picture(48, 40, &|x, y| {
        // Phases put the wrap edge where a sine is as steep as on average (|cos| = 2/π),
        // so the seam score of this tiling picture is about 1.
        let (u, v) = (x as f32 / 48.0 * tau + 0.44, y as f32 / 40.0 * tau + 0.88);
        let a = 0.5 + 0.3 * (2.0 * u).sin() + 0.15 * (3.0 * v + u).cos();
        [(a * 255.0) as u8, (120.0 + 60.0 * v.sin()) as u8, 70, 255]
    }));
    save("ramp.png", 40, 40, picture(40, 40, &|x, y| [(x * 6) as u8, (y * 6) as u8, 128, 255]));
    save("gem.png", 40, 40, picture(40, 40, &|x, y| {
        let (dx, dy) = (x as f32 - 19.5, y as f32 - 21.0);
        if dx * dx + dy * dy < 100.0 { [200, 30, (40 + x) as u8, 255] } else { [90, 160, 200, 255] }
    }));
}

fn write_source_manifest(dir: &Path, steps: u32) -> PathBuf {
    let manifest = dir.join("pictures.toml");
    std::fs::write(
        &manifest,
        format!(
            "[defaults]\nmodel = \"matting-model\"\nprompt = \"lava\"\nsteps = {steps}\nscheduler = \"ddim\"\nformat = \"png\"\n\
             [[asset]]\nname = \"wall\"\nsource = \"wall.png\"\nseamless = \"xy\"\nnormal_map = true\nheight_map = true\n\
             [[asset]]\nname = \"wall_dds\"\nsource = \"wall.png\"\nseamless = \"xy\"\nformat = \"dds\"\nnormal_map = true\n\
             [[asset]]\nname = \"wall_up\"\nsource = \"wall.png\"\nseamless = \"xy\"\nupscale = {{ path = \"x4\", tile = 16, context = 4 }}\n\
             [[asset]]\nname = \"ramp\"\nsource = \"ramp.png\"\nseamless = \"xy\"\n\
             [[asset]]\nname = \"gem_matte\"\nsource = \"gem.png\"\nsprite = true\n\
             [[asset]]\nname = \"gem_key\"\nsource = \"gem.png\"\nsprite = true\nmodel = {:?}\n\
             [[asset]]\nname = \"generated\"\nsprite = true\n\
             [[atlas]]\nname = \"sheet\"\nassets = [\"gem_matte\", \"generated\"]\n",
            common::fixture().display().to_string()
        ),
    )
    .unwrap();
    manifest
}

/// `source` assets finish pictures that exist, with nothing generated: the
/// main image is the picture's pixels exactly, the material maps are
/// `material_maps` of it (wrapping), the upscaled DDS is `Upscaler::upscale`
/// of it with a full mip chain that tiles at every level, a sprite is cut out
/// with the model folder's matting graph (`Matting::make_sprite`) or, on a
/// model without one, the chroma key (`make_sprite`); a picture that does not
/// tile gets a warning; an atlas packs a finished and a generated sprite. A
/// new generation default re-bakes only the generated asset, new bytes in a
/// picture only its assets, and a corrupt picture fails its assets alone.
#[test]
fn source_assets_finish_pictures_as_they_are_and_rebake_only_when_the_picture_changes() {
    use kiln::image::material::{material_maps, MaterialOptions};
    use kiln::model::matting::Matting;
    use kiln::model::seamless::Seamless;
    use kiln::model::upscaler::{UpscaleOptions, Upscaler};

    let dir = scratch("source");
    write_source_pictures(&dir);
    // A model folder with a matting graph: tiny-sd's files and the matting fixture.
    let model = dir.join("matting-model");
    copy_dir(&common::fixture(), &model);
    let matting_dir = common::root().join("tests/fixtures/matting/dynamic");
    for f in ["model.onnx", "config.json"] {
        std::fs::create_dir_all(model.join("matting")).unwrap();
        std::fs::copy(matting_dir.join(f), model.join("matting").join(f)).unwrap();
    }
    std::fs::create_dir_all(dir.join("x4")).unwrap();
    std::fs::copy(common::root().join("tests/fixtures/upscaler/x4/model.onnx"), dir.join("x4/model.onnx")).unwrap();
    let manifest = write_source_manifest(&dir, 2);
    let out = dir.join("out");
    let (o, report) = bake_ok(&manifest, &out, &[]);
    let log = stderr(&o);
    let all: BTreeSet<String> = ["wall", "wall_dds", "wall_up", "ramp", "gem_matte", "gem_key", "generated", "sheet"].iter().map(|s| s.to_string()).collect();
    assert_eq!(names_with(&report, "baked"), all, "{log}");
    assert_eq!(log.matches("loading model").count(), 1, "only the generated asset loads a model:\n{log}");
    assert_eq!(log.matches("loading matting graph").count(), 1, "{log}");

    // The picture's own pixels, and its maps as material_maps makes them.
    let wall = kiln::pipeline::inputs::read_rgba(&dir.join("wall.png")).unwrap();
    let (pixels, text) = read_png(&out.join("wall.png"));
    assert!(pixels == wall.pixels, "a source asset without finishing steps keeps the picture's pixels");
    let settings = &text["kiln:settings"];
    assert!(settings.starts_with(&format!("source={} size=48x40 seamless=Xy", dir.join("wall.png").display())), "{settings}");
    assert!(!text.contains_key("prompt") && !text.contains_key("kiln:model"), "nothing was drawn from a prompt or a model: {text:?}");
    let maps = material_maps(&wall, &MaterialOptions { wrap: true, ..Default::default() }).unwrap();
    assert!(read_png(&out.join("wall_normal.png")).0 == maps.normal.pixels, "normal map");
    assert!(read_png(&out.join("wall_height.png")).0 == maps.height.pixels, "height map");
    for axis in [Axis::X, Axis::Y] {
        let (p, n) = (seam_score(&wall, axis).unwrap(), seam_score(&maps.normal, axis).unwrap());
        println!("wall picture seam score {axis:?}: {p:.2}, its normal map {n:.2} (bound 1.5)");
        assert!(p < 1.5 && n < 1.5);
    }
    let key: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("wall.kiln-key")).unwrap()).unwrap();
    assert_eq!(key["settings"]["source"], dir.join("wall.png").display().to_string());
    assert!(key["settings"].get("prompt").is_none() && key["settings"].get("steps").is_none(), "{key}");

    // Stored as BC7 with a full mip chain that tiles at every level.
    let dds = read_dds(&out.join("wall_dds.dds"));
    assert_eq!((dds.dxgi_format, dds.levels[0].width, dds.levels[0].height), (99, 48, 40));
    assert_eq!(dds.levels.len(), 6, "48x40 down to 1x1");
    let err: f64 = wall.pixels.iter().zip(&dds.levels[0].pixels).map(|(a, b)| a.abs_diff(*b) as f64).sum::<f64>() / wall.pixels.len() as f64;
    println!("source BC7 level 0 vs the picture: mean abs error {err:.2} (bound 3.0 of 255)");
    assert!(err <= 3.0, "BC7 level 0 is not the picture: mean abs error {err}");
    // Levels under 8 pixels are left out, as in the DDS test above: their few columns make it noise.
    for (l, level) in dds.levels.iter().enumerate().filter(|(_, l)| l.width >= 8 && l.height >= 8) {
        let (sx, sy) = (seam_score(level, Axis::X).unwrap(), seam_score(level, Axis::Y).unwrap());
        println!("wall_dds level {l} ({}x{}): seam scores {sx:.2} {sy:.2} (bound 1.5)", level.width, level.height);
        assert!(sx < 1.5 && sy < 1.5, "level {l} does not tile");
    }
    let normal = read_dds(&out.join("wall_dds_normal.dds"));
    assert_eq!((normal.dxgi_format, normal.levels.len()), (83, 6), "BC5 normal map with its mips");
    // Upscaled 4x as Upscaler::upscale does it, wrapping on both axes.
    let runtime = common::runtime();
    let x4 = Upscaler::load(runtime, &dir.join("x4")).unwrap();
    let up = x4.upscale(&wall, &UpscaleOptions { tile: 16, context: 4, seamless: Seamless::Xy, ..Default::default() }).unwrap();
    let (pixels, text) = read_png(&out.join("wall_up.png"));
    assert_eq!((up.width, up.height), (192, 160));
    assert!(pixels == up.pixels, "kiln-bake's upscaled picture differs from Upscaler::upscale's");
    let x4_path = dir.join("x4").display().to_string();
    assert!(text["kiln:settings"].ends_with(&format!("size=192x160 seamless=Xy sprite=false pixel_art=None upscaler={x4_path} upscale_tile=16 upscale_context=4")), "{text:?}");

    // A picture that does not tile is finished as asked, with a warning.
    for axis in ["X", "Y"] {
        assert!(log.contains(&format!("ramp: warning: the picture does not tile along {axis}")), "{log}");
    }
    assert_eq!(log.matches("warning").count(), 2, "the wall tiles: no warning for it: {log}");
    // The report carries them too, for farms that read it instead of the log.
    let warnings_of = |name: &str| report["assets"].as_array().unwrap().iter().find(|a| a["name"] == name).unwrap().get("warnings").cloned();
    let ramp = warnings_of("ramp").expect("the ramp's warnings are in the report");
    assert_eq!(ramp.as_array().unwrap().len(), 2, "{ramp}");
    assert!(ramp[0].as_str().unwrap().starts_with("the picture does not tile along X (seam score"), "{ramp}");
    assert_eq!(warnings_of("wall"), None, "no `warnings` key without one");

    // Sprites: the model folder's matting graph, or the chroma key on a model without one.
    let gem = kiln::pipeline::inputs::read_rgba(&dir.join("gem.png")).unwrap();
    let matted = Matting::load(runtime, &model.join("matting")).unwrap().make_sprite(&gem, &Default::default()).unwrap();
    assert!(read_png(&out.join("gem_matte.png")).0 == matted.image.pixels, "matting graph sprite");
    let keyed = kiln::image::sprite::make_sprite(&gem, &Default::default()).unwrap();
    assert!(read_png(&out.join("gem_key.png")).0 == keyed.image.pixels, "chroma key sprite");
    assert!(matted.image.pixels != keyed.image.pixels, "the two cut-outs differ, so the test tells them apart");
    let atlas: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("sheet.json")).unwrap()).unwrap();
    let names: Vec<&str> = atlas["sprites"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names.iter().copied().collect::<BTreeSet<_>>(), BTreeSet::from(["gem_matte", "generated"]), "{atlas}");

    // A rerun skips everything and loads nothing.
    let (o, report) = bake_ok(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "skipped"), all, "{}", stderr(&o));
    assert!(!stderr(&o).contains("loading"), "{}", stderr(&o));
    // A new generation default (steps) re-bakes the generated asset and its atlas only.
    write_source_manifest(&dir, 3);
    let (o, report) = bake_ok(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "baked"), BTreeSet::from(["generated".into(), "sheet".into()]), "{}", stderr(&o));
    // New bytes in a picture re-bake exactly the assets made from it (and the atlas).
    let mut moved = gem.clone();
    moved.pixels[0] = 91;
    image::save_buffer(dir.join("gem.png"), &moved.pixels, 40, 40, image::ExtendedColorType::Rgba8).unwrap();
    let (o, report) = bake_ok(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "baked"), BTreeSet::from(["gem_matte".into(), "gem_key".into(), "sheet".into()]), "{}", stderr(&o));
    // A corrupt picture fails its assets alone, and says why.
    std::fs::write(dir.join("ramp.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let (o, report) = bake(&manifest, &out, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(names_with(&report, "failed"), BTreeSet::from(["ramp".into()]), "{}", stderr(&o));
    let error = report["assets"].as_array().unwrap().iter().find(|a| a["name"] == "ramp").unwrap()["error"].as_str().unwrap().to_string();
    assert!(error.contains("source picture") && error.contains("ramp.png"), "{error}");
    assert_eq!(assert_no_truncated_file(&out), 20);
}

/// A `source` pattern bakes one asset per matching picture, named by the
/// name's `*`; a picture added to the folder later bakes alone on the next
/// run, and the others are skipped.
#[test]
fn a_source_pattern_bakes_every_matching_picture_and_a_new_one_alone() {
    let dir = scratch("source-pattern");
    write_source_pictures(&dir);
    let painted = dir.join("painted");
    std::fs::create_dir_all(&painted).unwrap();
    for f in ["wall.png", "ramp.png"] {
        std::fs::copy(dir.join(f), painted.join(f)).unwrap();
    }
    std::fs::write(painted.join("notes.txt"), "not a picture").unwrap();
    let manifest = dir.join("pattern.toml");
    std::fs::write(&manifest, "[defaults]\nformat = \"dds\"\n[[asset]]\nname = \"painted_*\"\nsource = \"painted/*.png\"\nnormal_map = true\n").unwrap();
    let out = dir.join("out");
    let (o, report) = bake_ok(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "baked"), BTreeSet::from(["painted_ramp".into(), "painted_wall".into()]), "{}", stderr(&o));
    let wall = kiln::pipeline::inputs::read_rgba(&dir.join("wall.png")).unwrap();
    let dds = read_dds(&out.join("painted_wall.dds"));
    let err: f64 = wall.pixels.iter().zip(&dds.levels[0].pixels).map(|(a, b)| a.abs_diff(*b) as f64).sum::<f64>() / wall.pixels.len() as f64;
    println!("painted_wall BC7 level 0 vs its picture: mean abs error {err:.2} (bound 3.0 of 255)");
    assert!(err <= 3.0, "painted_wall.dds is not painted/wall.png: mean abs error {err}");
    assert!(out.join("painted_ramp_normal.dds").is_file());

    std::fs::copy(dir.join("gem.png"), painted.join("gem.png")).unwrap();
    let (o, report) = bake_ok(&manifest, &out, &[]);
    assert_eq!(names_with(&report, "baked"), BTreeSet::from(["painted_gem".into()]), "{}", stderr(&o));
    assert_eq!(names_with(&report, "skipped").len(), 2, "{}", stderr(&o));
}

/// `--prune` removes what earlier bakes wrote and the manifest no longer
/// makes: an asset and an atlas taken out (outputs and keys), a map turned
/// off, the PNG of an asset now stored as DDS; it keeps every current output,
/// a failed asset's files and files no key lists; `--dry-run` only lists the
/// files (as if every asset baked), and `--shard` refuses it.
#[test]
fn prune_removes_only_what_the_manifest_no_longer_makes() {
    let dir = scratch("prune");
    write_source_pictures(&dir);
    let manifest = dir.join("prune.toml");
    let write = |body: &str| std::fs::write(&manifest, body).unwrap();
    write(
        "[[asset]]\nname = \"wall\"\nsource = \"wall.png\"\nnormal_map = true\nheight_map = true\n\
         [[asset]]\nname = \"gem\"\nsource = \"gem.png\"\nsprite = true\n\
         [[asset]]\nname = \"ramp\"\nsource = \"ramp.png\"\n\
         [[atlas]]\nname = \"sheet\"\nassets = [\"gem\"]\n",
    );
    let out = dir.join("out");
    bake_ok(&manifest, &out, &[]);
    std::fs::write(out.join("notes.txt"), "the studio's own file").unwrap();
    let files = || -> BTreeSet<String> { std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect() };
    let set = |names: &[&str]| -> BTreeSet<String> { names.iter().map(|s| s.to_string()).collect() };
    // The gem and the atlas are taken out, the wall keeps its height map only and
    // becomes DDS, and so does the ramp, whose picture is now corrupt: its bake
    // fails, and its PNG stays, as the last good output it has.
    write(
        "[[asset]]\nname = \"wall\"\nsource = \"wall.png\"\nheight_map = true\nformat = \"dds\"\n\
         [[asset]]\nname = \"ramp\"\nsource = \"ramp.png\"\nformat = \"dds\"\n",
    );
    std::fs::write(dir.join("ramp.png"), b"not a png").unwrap();
    let stale = set(&["gem.png", "gem.kiln-key", "sheet.png", "sheet.json", "sheet.kiln-key", "wall.png", "wall_normal.png", "wall_height.png"]);
    let before = files();
    let (o, report) = bake_ok(&manifest, &out, &["--prune", "--dry-run"]);
    let listed: BTreeSet<String> = report["pruned"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect();
    // A dry run bakes nothing, so it cannot know that the ramp will fail: it lists the ramp's PNG too.
    let mut if_all_bake = stale.clone();
    if_all_bake.insert("ramp.png".into());
    assert_eq!(listed, if_all_bake, "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(files(), before, "a dry run removes nothing");

    let (o, report) = bake(&manifest, &out, &["--prune"]);
    assert_eq!(o.status.code(), Some(1), "the ramp fails: {}", stderr(&o));
    let pruned: BTreeSet<String> = report["pruned"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect();
    assert_eq!(pruned, stale, "{}", stderr(&o));
    assert_eq!(files(), set(&["wall.dds", "wall_height.dds", "wall.kiln-key", "ramp.png", "ramp.kiln-key", "notes.txt"]), "{}", stderr(&o));
    // Nothing left to prune; a bake without --prune reports no `pruned`.
    let (_, report) = bake(&manifest, &out, &["--prune"]);
    assert_eq!(report["pruned"], serde_json::json!([]));
    let (_, report) = bake(&manifest, &out, &[]);
    assert!(report.get("pruned").is_none(), "{report}");
    let (o, _) = bake(&manifest, &out, &["--prune", "--shard", "1/2"]);
    assert_eq!(o.status.code(), Some(2), "a shard cannot tell what is stale: {}", stderr(&o));
}

/// Copies a folder's files, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}
