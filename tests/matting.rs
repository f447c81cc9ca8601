//! Matting graphs for sprites (tools/make_matting_fixture.py): Kiln's
//! pre-processing, graph output and matte equal the script's torch +
//! onnxruntime-python goldens on a fixed-size graph (resized in and out) and
//! a dynamic one (rounded up to a multiple, rank-3 logits, output picked by
//! name); sprites take that matte as alpha through the Rust and C APIs; a
//! missing, corrupt or unsuitable graph fails with its own status and leaves
//! the model usable; without a matting graph the chroma key is unchanged.
mod common;

use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr;

use kiln::image::sprite::{make_sprite, SpriteOptions};
use kiln::model::matting::{Matte, Matting, MattingConfig};
use kiln::model::ModelOptions;
use kiln::{ErrorKind, GenerateRequest, Model, Rgba8Image};

/// Golden tolerances (absolute; the matte is in 0..1, the input in normalized
/// units up to about 2.7). Kiln and the script run the same graph on the same
/// ONNX Runtime (1.31.1): here the outputs are bit-identical, but another CPU
/// may take other kernels, so the output may differ by float rounding of
/// logits up to 5. Pre- and post-processing are the same arithmetic in
/// another order (torch's kernels vs Kiln's loops): about 4e-7 here, with the
/// fixed fixture's min-max stretch doubling differences.
///
/// Why not 10x headroom (tools/test_margins.py): the pre-processing gap is one
/// or two float32 ulps of values up to 2.7 (3.6e-7), the same on every CPU
/// since it is Kiln's own arithmetic in another order, and the graph output
/// gap is a few ulps of logits up to 5 (AVX2 1.4e-6, 7x). Bounds ten times
/// looser would no longer be "the same arithmetic up to rounding".
const INPUT_TOL: f32 = 1e-6;
const OUTPUT_TOL: f32 = 1e-5;
const MATTE_TOL: f32 = 1e-5;

fn fixtures() -> PathBuf {
    common::root().join("tests/fixtures/matting")
}

fn npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    kiln::image::npy::read_f32(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixture picture, 48x40 RGBA.
fn image() -> Rgba8Image {
    let (shape, data) = npy(&fixtures().join("image.npy"));
    assert_eq!(shape, vec![40, 48, 4]);
    Rgba8Image { width: 48, height: 40, pixels: data.iter().map(|&v| v as u8).collect() }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    common::max_abs_diff(a, b)
}

/// tiny-sd copied to a fresh folder, with `matting` files (relative path,
/// bytes) added.
fn model_folder(name: &str, matting: &[(&str, Vec<u8>)]) -> PathBuf {
    let dest = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-matting").join(name);
    if dest.exists() {
        std::fs::remove_dir_all(&dest).unwrap();
    }
    common::copy_tree(&common::fixture(), &dest);
    for (rel, bytes) in matting {
        let to = dest.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, bytes).unwrap();
    }
    dest
}

fn fixture_files(variant: &str) -> Vec<(&'static str, Vec<u8>)> {
    let d = fixtures().join(variant);
    vec![
        ("matting/model.onnx", std::fs::read(d.join("model.onnx")).unwrap()),
        ("matting/config.json", std::fs::read(d.join("config.json")).unwrap()),
    ]
}

fn check_goldens(variant: &str, graph_size: (usize, usize)) {
    let m = Matting::load(common::runtime(), &fixtures().join(variant)).unwrap();
    let img = image();
    assert_eq!(m.input_size(img.width, img.height), graph_size);
    let g = fixtures().join(variant).join("golden");

    let (shape, golden_input) = npy(&g.join("input.npy"));
    let input = m.preprocess(&img).unwrap();
    assert_eq!(input.shape(), shape.as_slice());
    let e_in = max_diff(input.as_slice().unwrap(), &golden_input);

    // The graph on the script's own input against onnxruntime-python.
    let (out_shape, golden_output) = npy(&g.join("output.npy"));
    let golden_in = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), golden_input).unwrap();
    let out = m.run(golden_in).unwrap();
    assert_eq!(out.shape(), out_shape.as_slice());
    let e_out = max_diff(out.as_slice().unwrap(), &golden_output);

    // End to end: Kiln's matte of the picture.
    let (_, golden_matte) = npy(&g.join("matte.npy"));
    let matte = m.matte(&img).unwrap();
    let e_matte = max_diff(&matte, &golden_matte);
    eprintln!("{variant}: input {e_in:e}, graph output {e_out:e}, matte {e_matte:e}");
    common::check_margin(&format!("matting::{variant}::input_abs"), e_in as f64, INPUT_TOL as f64);
    common::check_margin(&format!("matting::{variant}::graph_output_abs"), e_out as f64, OUTPUT_TOL as f64);
    common::check_margin(&format!("matting::{variant}::matte_abs"), e_matte as f64, MATTE_TOL as f64);
    // The matte is not trivial: the check can fail.
    let (lo, hi) = golden_matte.iter().fold((1f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
    assert!(hi - lo > 0.5, "{variant}: golden matte spans only {lo}..{hi}");
}

#[test]
fn fixed_size_graph_matches_onnxruntime_python_through_both_resizes() {
    // 48x40 in, resized to the graph's fixed 32x32, matte resized back; RMBG-1.4's
    // mean 0.5 / std 1.0 and min-max stretch from config.json.
    check_goldens("fixed", (32, 32));
}

#[test]
fn dynamic_graph_matches_onnxruntime_python_rounded_to_its_multiple() {
    // 48x40 rounded up to multiples of 16 = 48x48; rank-3 logits at half size,
    // picked by name over a decoy first output; sigmoid; ImageNet mean/std.
    check_goldens("dynamic", (48, 48));
}

#[test]
fn config_is_strict_and_can_be_given_in_code() {
    let c = MattingConfig::from_json(r#"{"mean":[0.5,0.5,0.5],"std":[1,1,1],"size":[64,32],"sigmoid":true}"#).unwrap();
    assert_eq!((c.mean, c.std, c.size, c.multiple, c.sigmoid, c.minmax), ([0.5; 3], [1.0; 3], Some([64, 32]), 32, true, false));
    for bad in [r#"{"sigmod":true}"#, r#"{"std":[1,0,1]}"#, r#"{"mean":[1,2]}"#, r#"{"size":[0,8]}"#, r#"{"multiple":0}"#, "[1]"] {
        let e = MattingConfig::from_json(bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ModelInvalid, "{bad}: {e}");
    }
    // A dynamic graph with a configured size gets exactly that size.
    let path = fixtures().join("dynamic/model.onnx");
    let cfg = MattingConfig { size: Some([32, 16]), output: Some("logits".into()), sigmoid: true, ..Default::default() };
    let m = Matting::load_with_config(common::runtime(), &path, cfg).unwrap();
    assert_eq!(m.input_size(48, 40), (32, 16));
    assert_eq!(m.matte(&image()).unwrap().len(), 48 * 40);
    // A size that contradicts a fixed graph is refused.
    let cfg = MattingConfig { size: Some([64, 64]), ..Default::default() };
    let e = Matting::load_with_config(common::runtime(), &fixtures().join("fixed/model.onnx"), cfg).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ModelInvalid);
    assert!(e.message().contains("contradicts"), "{e}");
}

#[test]
fn model_sprites_take_the_graph_matte_as_alpha() {
    let model = Model::load(common::runtime(), &model_folder("fixed", &fixture_files("fixed"))).unwrap();
    assert!(model.has_matting() && model.info().has_matting);
    let img = image();
    let (_, golden) = npy(&fixtures().join("fixed/golden/matte.npy"));
    for premultiplied in [false, true] {
        let o = SpriteOptions { premultiplied, ..Default::default() };
        let s = model.make_sprite(&img, &o, Matte::Auto).unwrap();
        assert_eq!(s.key, None, "no key with a graph matte unless one is given");
        let mut worst = 0i32;
        for ((p, q), m) in s.image.pixels.chunks_exact(4).zip(img.pixels.chunks_exact(4)).zip(&golden) {
            let want = (m * q[3] as f32).round() as i32;
            worst = worst.max((p[3] as i32 - want).abs());
            let a = p[3] as u32;
            if a > 0 {
                for c in 0..3 {
                    let rgb = q[c] as u32; // no despill without a key: colours kept
                    let expect = if premultiplied { (rgb * a + 127) / 255 } else { rgb };
                    assert_eq!(p[c] as u32, expect, "pixel {p:?} from {q:?}");
                }
            }
        }
        // alpha = round(matte, 1/255) x input alpha: one step of rounding allowed.
        assert!(worst <= 1, "alpha off by {worst} steps of 1/255");
        assert_eq!(s.bbox, kiln::image::sprite::alpha_bbox(&s.image, 1));
        assert!(s.image.pixels.chunks_exact(4).any(|p| p[3] == 0) && s.image.pixels.chunks_exact(4).any(|p| p[3] == 255));
        // The same through the chroma key is a different picture.
        let keyed = model.make_sprite(&img, &o, Matte::Key).unwrap();
        assert_eq!(keyed, make_sprite(&img, &o).unwrap());
        assert_ne!(keyed.image, s.image);
    }
    // An explicit key despills against it.
    let o = SpriteOptions { key: Some([60, 90, 180]), ..Default::default() };
    let s = model.make_sprite(&img, &o, Matte::Graph).unwrap();
    assert_eq!(s.key, Some([60, 90, 180]));
    // The graph loaded once, with the model's other graphs.
    assert_eq!(model.loaded_sessions(), 4);
}

#[test]
fn without_a_matting_graph_the_key_path_is_unchanged() {
    let model = common::tiny_model();
    assert!(!model.has_matting() && !model.info().has_matting);
    let img = image();
    for o in [SpriteOptions::default(), SpriteOptions { feather_radius: 2, premultiplied: true, ..Default::default() }] {
        assert_eq!(model.make_sprite(&img, &o, Matte::Auto).unwrap(), make_sprite(&img, &o).unwrap());
    }
    let e = model.make_sprite(&img, &SpriteOptions::default(), Matte::Graph).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ModelNotFound);
    assert!(e.message().contains("matting/model.onnx"), "{e}");
}

fn quick_generate(model: &Model) {
    let r = GenerateRequest { prompt: "moss".into(), steps: 1, ..Default::default() };
    assert_eq!(model.generate(&r).unwrap().width, 64, "the model stays usable");
}

#[test]
fn corrupt_missing_or_unsuitable_graphs_fail_and_leave_the_model_usable() {
    let img = image();
    let o = SpriteOptions::default();
    // Corrupt bytes: the model loads (the graph is lazy), sprites fail with
    // MODEL_INVALID, everything else works, and a repaired file is picked up.
    let dir = model_folder("corrupt", &[("matting/model.onnx", b"\x08\x07not an onnx graph".to_vec())]);
    let model = Model::load(common::runtime(), &dir).unwrap();
    for _ in 0..2 {
        let e = model.make_sprite(&img, &o, Matte::Auto).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ModelInvalid, "{e}");
        assert!(e.message().contains("matting"), "{e}");
    }
    quick_generate(&model);
    assert_eq!(model.make_sprite(&img, &o, Matte::Key).unwrap(), make_sprite(&img, &o).unwrap());
    for (rel, bytes) in fixture_files("fixed") {
        std::fs::write(dir.join(rel), bytes).unwrap();
    }
    assert!(model.make_sprite(&img, &o, Matte::Auto).unwrap().key.is_none(), "loaded on retry");

    // matting/ without model.onnx: MODEL_NOT_FOUND, not a silent key.
    let dir = model_folder("empty", &[("matting/config.json", b"{}".to_vec())]);
    let model = Model::load(common::runtime(), &dir).unwrap();
    assert!(model.has_matting());
    assert_eq!(model.make_sprite(&img, &o, Matte::Auto).unwrap_err().kind(), ErrorKind::ModelNotFound);
    quick_generate(&model);

    // A bad config.json.
    let mut files = fixture_files("fixed");
    files[1].1 = br#"{"mean": [0.5, 0.5, 0.5], "sigmod": true}"#.to_vec();
    let model = Model::load(common::runtime(), &model_folder("badconfig", &files)).unwrap();
    let e = model.make_sprite(&img, &o, Matte::Auto).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ModelInvalid);
    assert!(e.message().contains("sigmod") && e.message().contains("config.json"), "{e}");
    // Named as a file, the graph's settings come from the .json of its name.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-matting/named");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixtures().join("dynamic/model.onnx"), dir.join("net.onnx")).unwrap();
    std::fs::write(dir.join("config.json"), b"{\"not\": \"ours\"}").unwrap();
    let _ = std::fs::remove_file(dir.join("net.json"));
    // Defaults (config.json ignored): the first output, a 4-channel decoy, is refused.
    let e = Matting::load(common::runtime(), &dir.join("net.onnx")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ModelInvalid);
    assert!(e.message().contains("output `features` has shape [1, 4, -1, -1]"), "{e}");
    std::fs::copy(fixtures().join("dynamic/config.json"), dir.join("net.json")).unwrap();
    let m = Matting::load(common::runtime(), &dir.join("net.onnx")).unwrap();
    assert!(m.config().sigmoid && m.config().multiple == 16);

    // Graphs that are not matting graphs: latents in (the VAE decoder), ints in
    // (the text encoder). Named as files, their folders' config.json (diffusers'
    // own) is not read as matting settings.
    for (graph, says) in [("vae_decoder/model.onnx", "expected [1, 3, H, W]"), ("text_encoder/model.onnx", "expected float")] {
        let e = Matting::load(common::runtime(), &common::fixture().join(graph)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ModelInvalid, "{graph}: {e}");
        assert!(e.message().contains(says), "{graph}: {e}");
    }

    // An explicit path that does not exist fails the load itself.
    let opts = ModelOptions { matting: Some(fixtures().join("nope.onnx")), ..Default::default() };
    let e = Model::load_with(common::runtime(), &common::fixture(), &opts).err().expect("missing matting path");
    assert_eq!(e.kind(), ErrorKind::ModelNotFound);
}

// ---- C API ----

use kiln::ffi::image::*;
use kiln::ffi::kiln_status;
use kiln::ffi::model::*;
use kiln::ffi::postprocess::*;

fn last_error() -> String {
    let mut buf = vec![0 as c_char; 4096];
    unsafe { kiln::ffi::kiln_last_error_message(buf.as_mut_ptr(), buf.len(), ptr::null_mut()) };
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

fn c_pixels(img: *const kiln_image) -> Vec<u8> {
    let (w, h) = unsafe { (kiln_image_width(img), kiln_image_height(img)) };
    unsafe { std::slice::from_raw_parts(kiln_image_pixels(img), (w * h * 4) as usize) }.to_vec()
}

/// A sprite's pixels and box; printed as a summary, not 7680 bytes.
#[derive(PartialEq)]
struct Px(Vec<u8>, kiln_rect);

impl std::fmt::Debug for Px {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let alpha: u64 = self.0.chunks_exact(4).map(|p| p[3] as u64).sum();
        write!(f, "sprite of {} bytes, alpha sum {alpha}, bbox {:?}", self.0.len(), self.1)
    }
}

/// Runs `kiln_model_make_sprite` (or `kiln_image_make_sprite` when `model`
/// is NULL); the pixels, or the status and message.
fn c_sprite(model: *const kiln_model, img: *const kiln_image, o: Option<&kiln_sprite_options>) -> Result<Px, (kiln_status, String)> {
    let mut out = ptr::dangling_mut::<kiln_image>();
    let mut bbox = kiln_rect { x: 7, y: 7, width: 7, height: 7 };
    let op = o.map_or(ptr::null(), |o| o as *const _);
    let s = unsafe {
        if model.is_null() {
            kiln_image_make_sprite(img, op, &mut out, &mut bbox)
        } else {
            kiln_model_make_sprite(model, img, op, &mut out, &mut bbox)
        }
    };
    if s != kiln_status::Ok {
        assert!(out.is_null(), "out-param reset on failure");
        assert_eq!(bbox, kiln_rect::default());
        return Err((s, last_error()));
    }
    let px = c_pixels(out);
    unsafe { kiln_image_free(out) };
    Ok(Px(px, bbox))
}

#[test]
fn c_api_model_sprites_and_load_options() {
    use kiln::ffi::runtime::*;
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok);
    let src = image();
    let mut img = ptr::null_mut();
    assert_eq!(unsafe { kiln_image_create(48, 40, src.pixels.as_ptr(), src.pixels.len(), 0, &mut img) }, kiln_status::Ok);
    let tiny = CString::new(common::fixture().to_str().unwrap()).unwrap();

    // Plain tiny-sd: AUTO keys exactly as kiln_image_make_sprite; GRAPH is MODEL_NOT_FOUND.
    let mut plain = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_load(rt, tiny.as_ptr(), &mut plain) }, kiln_status::Ok);
    let mut so = unsafe { std::mem::zeroed::<kiln_sprite_options>() };
    unsafe { kiln_sprite_options_init(&mut so) };
    assert_eq!(so.matte, kiln_matte::Auto as u32);
    assert_eq!(so.struct_size as usize, std::mem::size_of::<kiln_sprite_options>(), "init covers `matte`");
    let keyed = c_sprite(ptr::null(), img, None).unwrap();
    assert_eq!(c_sprite(plain, img, None).unwrap(), keyed);
    assert_eq!(c_sprite(plain, img, Some(&so)).unwrap(), keyed);
    // A caller built before `matte` existed (smaller struct) gets AUTO.
    let old = kiln_sprite_options { struct_size: std::mem::offset_of!(kiln_sprite_options, matte) as u32, matte: 99, ..so };
    assert_eq!(c_sprite(plain, img, Some(&old)).unwrap(), keyed);
    let graph = kiln_sprite_options { matte: kiln_matte::Graph as u32, ..so };
    let (s, msg) = c_sprite(plain, img, Some(&graph)).unwrap_err();
    assert_eq!(s, kiln_status::ModelNotFound, "{msg}");
    assert!(msg.contains("matting"), "{msg}");
    let (s, msg) = c_sprite(ptr::null(), img, Some(&graph)).unwrap_err();
    assert_eq!(s, kiln_status::InvalidArgument, "{msg}");
    assert!(msg.contains("kiln_model_make_sprite"), "{msg}");
    let bad = kiln_sprite_options { matte: 7, ..so };
    assert_eq!(c_sprite(plain, img, Some(&bad)).unwrap_err().0, kiln_status::InvalidArgument);
    let mut info = kiln_model_info { struct_size: std::mem::size_of::<kiln_model_info>() as u32, ..Default::default() };
    assert_eq!(unsafe { kiln_model_get_info(plain, &mut info) }, kiln_status::Ok);
    assert_eq!(info.has_matting, 0);

    // tiny-sd with an explicit matting path (the dynamic fixture's folder).
    let mut lo = unsafe { std::mem::zeroed::<kiln_model_load_options>() };
    unsafe { kiln_model_load_options_init(&mut lo) };
    assert_eq!((lo.seamless, lo.matting_path), (0, ptr::null()));
    let path = CString::new(fixtures().join("dynamic").to_str().unwrap()).unwrap();
    lo.matting_path = path.as_ptr();
    let mut matted = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_load_with(rt, tiny.as_ptr(), &lo, &mut matted) }, kiln_status::Ok, "{}", last_error());
    assert_eq!(unsafe { kiln_model_get_info(matted, &mut info) }, kiln_status::Ok);
    assert_eq!(info.has_matting, 1);
    let Px(px, bbox) = c_sprite(matted, img, None).unwrap();
    let (_, golden) = npy(&fixtures().join("dynamic/golden/matte.npy"));
    let worst = px
        .chunks_exact(4)
        .zip(src.pixels.chunks_exact(4))
        .zip(&golden)
        .map(|((p, q), m)| (p[3] as i32 - (m * q[3] as f32).round() as i32).abs())
        .max()
        .unwrap();
    assert!(worst <= 1, "alpha off by {worst}");
    assert_eq!(bbox, kiln_rect { x: 0, y: 0, width: 48, height: 40 }, "this matte is nowhere 0");
    assert_eq!(c_sprite(matted, img, Some(&kiln_sprite_options { matte: kiln_matte::Key as u32, ..so })).unwrap(), keyed);

    // Bad load options: a missing matting path, an unknown seamless value, a wrong size.
    let missing = CString::new("/nonexistent/matting.onnx").unwrap();
    let mut m = ptr::dangling_mut::<kiln_model>();
    let o = kiln_model_load_options { matting_path: missing.as_ptr(), ..lo };
    assert_eq!(unsafe { kiln_model_load_with(rt, tiny.as_ptr(), &o, &mut m) }, kiln_status::ModelNotFound);
    assert!(m.is_null());
    assert!(last_error().contains("/nonexistent/matting.onnx"), "{}", last_error());
    let o = kiln_model_load_options { seamless: 4, ..lo };
    assert_eq!(unsafe { kiln_model_load_with(rt, tiny.as_ptr(), &o, &mut m) }, kiln_status::InvalidArgument);
    let o = kiln_model_load_options { struct_size: 3, ..lo };
    assert_eq!(unsafe { kiln_model_load_with(rt, tiny.as_ptr(), &o, &mut m) }, kiln_status::StructSizeMismatch);
    assert_eq!(unsafe { kiln_model_load_with(rt, ptr::null(), &lo, &mut m) }, kiln_status::NullArgument);
    assert_eq!(unsafe { kiln_model_make_sprite(ptr::null(), img, ptr::null(), &mut ptr::null_mut(), ptr::null_mut()) }, kiln_status::NullArgument);
    assert_eq!(unsafe { kiln_model_make_sprite(matted, img, ptr::null(), ptr::null_mut(), ptr::null_mut()) }, kiln_status::NullArgument);
    // NULL options = defaults (plain load, the folder's own matting/, here none).
    assert_eq!(unsafe { kiln_model_load_with(rt, tiny.as_ptr(), ptr::null(), &mut m) }, kiln_status::Ok);
    unsafe { kiln_model_free(m) };

    // A corrupt matting graph: MODEL_INVALID, and the handle keeps generating.
    let dir = model_folder("c-corrupt", &[("matting/model.onnx", vec![0xFF; 64])]);
    let cdir = CString::new(dir.to_str().unwrap()).unwrap();
    let mut broken = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_load(rt, cdir.as_ptr(), &mut broken) }, kiln_status::Ok);
    let (s, msg) = c_sprite(broken, img, None).unwrap_err();
    assert_eq!(s, kiln_status::ModelInvalid, "{msg}");
    let prompt = CString::new("moss").unwrap();
    let mut go = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut go) };
    go.prompt = prompt.as_ptr();
    go.steps = 1;
    let mut buf = vec![0u8; 64 * 64 * 4];
    assert_eq!(unsafe { kiln_model_generate_into(broken, &go, buf.as_mut_ptr(), buf.len(), 0) }, kiln_status::Ok);
    assert_eq!(c_sprite(broken, img, Some(&kiln_sprite_options { matte: kiln_matte::Key as u32, ..so })).unwrap(), keyed);

    for m in [plain, matted, broken] {
        unsafe { kiln_model_free(m) };
    }
    unsafe { kiln_image_free(img) };
    unsafe { kiln_runtime_destroy(rt) };
}
