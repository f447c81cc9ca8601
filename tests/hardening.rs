//! Regression tests for the C-boundary defects of issue 14, each as a hostile
//! caller would hit it: sizes that used to abort the process, struct sizes
//! that cut a pointer in half, row pitches whose arithmetic wraps, absurd
//! scheduler overrides, non-finite noise, out-parameters left stale. Every
//! case must give a specific status and message, and the handles must keep
//! working afterwards.
mod common;

use std::ffi::{c_char, CStr, CString};
use std::ptr;

use kiln::ffi::image::*;
use kiln::ffi::job::*;
use kiln::ffi::kiln_status;
use kiln::ffi::model::*;
use kiln::ffi::postprocess::*;
use kiln::ffi::provider::*;
use kiln::ffi::runtime::*;
use kiln::ffi::texture::*;

fn last_error() -> String {
    let mut buf = vec![0 as c_char; 4096];
    unsafe { kiln::ffi::kiln_last_error_message(buf.as_mut_ptr(), buf.len(), ptr::null_mut()) };
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

/// Asserts `status` is `want` and the thread's message mentions `needle`.
fn expect(status: kiln_status, want: kiln_status, needle: &str) {
    let msg = last_error();
    assert_eq!(status, want, "message: {msg}");
    assert!(msg.contains(needle), "message {msg:?} should mention {needle:?}");
}

struct Handles {
    rt: *mut kiln_runtime,
    model: *mut kiln_model,
}

fn open() -> Handles {
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok, "{}", last_error());
    let dir = CString::new(common::fixture().to_str().unwrap()).unwrap();
    let mut model = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_load(rt, dir.as_ptr(), &mut model) }, kiln_status::Ok, "{}", last_error());
    Handles { rt, model }
}

impl Drop for Handles {
    fn drop(&mut self) {
        unsafe {
            kiln_model_free(self.model);
            kiln_runtime_destroy(self.rt);
        }
    }
}

fn options(prompt: &CStr) -> kiln_generate_options {
    let mut o = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut o) };
    o.prompt = prompt.as_ptr();
    o.steps = 2;
    o
}

/// Generates one small image, proving the model still works.
fn still_works(m: *const kiln_model) {
    let p = CString::new("stone").unwrap();
    let o = options(&p);
    let mut img = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_generate(m, &o, &mut img) }, kiln_status::Ok, "{}", last_error());
    assert_eq!(unsafe { kiln_image_width(img) }, 64);
    unsafe { kiln_image_free(img) };
}

fn grey_image(w: u32, h: u32) -> *mut kiln_image {
    let pixels = vec![128u8; (w * h * 4) as usize];
    let mut img = ptr::null_mut();
    let s = unsafe { kiln_image_create(w, h, pixels.as_ptr(), pixels.len(), 0, &mut img) };
    assert_eq!(s, kiln_status::Ok, "{}", last_error());
    img
}

#[test]
fn pixel_art_scale_past_the_limit_is_a_status_not_an_abort() {
    let img = grey_image(64, 64);
    let mut o = unsafe { std::mem::zeroed::<kiln_pixel_art_options>() };
    unsafe { kiln_pixel_art_options_init(&mut o) };
    // 8x8 grid x 100000 = 800000 pixels a side: 2.5 TB, which used to abort.
    o.scale = 100_000;
    let mut out = ptr::dangling_mut::<kiln_image>();
    expect(unsafe { kiln_image_pixel_art(img, &o, &mut out) }, kiln_status::InvalidSize, "16384");
    assert!(out.is_null());
    o.scale = u32::MAX;
    o.cell = 1;
    expect(unsafe { kiln_image_pixel_art(img, &o, &mut out) }, kiln_status::InvalidSize, "scale");
    // The largest allowed output still works: 64 cells x 256 = 16384.
    o.scale = 256;
    o.colors = 0;
    assert_eq!(unsafe { kiln_image_pixel_art(img, &o, &mut out) }, kiln_status::Ok, "{}", last_error());
    assert_eq!(unsafe { kiln_image_width(out) }, 16384);
    unsafe { kiln_image_free(out) };
    unsafe { kiln_image_free(img) };
}

#[test]
fn image_sizes_past_the_limit_are_refused_before_reading() {
    let pixels = [0u8; 16];
    let mut out = ptr::null_mut();
    // 100000 x 1 claims a buffer it does not have; the size is refused first.
    let s = unsafe { kiln_image_create(100_000, 1, pixels.as_ptr(), usize::MAX, 0, &mut out) };
    expect(s, kiln_status::InvalidArgument, "16384");
    let s = unsafe { kiln_image_create(2, 2, pixels.as_ptr(), pixels.len(), usize::MAX, &mut out) };
    expect(s, kiln_status::InvalidArgument, "row pitch");
    assert!(out.is_null());
}

#[test]
fn extend_texture_by_two_billion_pixels_is_invalid_size() {
    let h = open();
    let p = CString::new("stone").unwrap();
    let mut o = options(&p);
    let picture = vec![100u8; 64 * 64 * 3];
    o.init_image = picture.as_ptr();
    o.init_image_len = picture.len();
    o.init_image_width = 64;
    o.init_image_height = 64;
    o.init_image_channels = 3;
    let mut out = ptr::null_mut();
    let s = unsafe { kiln_model_extend_texture(h.model, &o, 0x8000_0000, 0x8000_0000, 0, 0, &mut out) };
    expect(s, kiln_status::InvalidSize, "8192");
    let s = unsafe { kiln_model_extend_texture(h.model, &o, u32::MAX, u32::MAX, u32::MAX, u32::MAX, &mut out) };
    expect(s, kiln_status::InvalidSize, "8192");
    assert!(out.is_null());
    // An init image past the limit is refused before its pixels are read.
    o.init_image_width = 0x8000_0000;
    o.init_image_len = usize::MAX;
    let s = unsafe { kiln_model_generate(h.model, &o, &mut out) };
    expect(s, kiln_status::InvalidSize, "init_image");
    still_works(h.model);
}

/// Every `struct_size` from 0 to past the current size: the published ones are
/// read, every other one (including those that end inside a pointer) is
/// STRUCT_SIZE_MISMATCH.
#[test]
fn only_published_generate_options_sizes_are_accepted() {
    let h = open();
    let p = CString::new("stone").unwrap();
    let full = std::mem::size_of::<kiln_generate_options>();
    // The layouts published so far, as a C compiler on this target lays them out.
    let published = [
        std::mem::offset_of!(kiln_generate_options, guidance_rescale),
        std::mem::offset_of!(kiln_generate_options, prompt_weighting).next_multiple_of(8),
        std::mem::offset_of!(kiln_generate_options, init_image),
        std::mem::offset_of!(kiln_generate_options, clip_skip),
        std::mem::offset_of!(kiln_generate_options, mask),
        std::mem::offset_of!(kiln_generate_options, scheduler_overrides),
        std::mem::offset_of!(kiln_generate_options, vae_tile_size),
        std::mem::offset_of!(kiln_generate_options, prompt_2),
        std::mem::offset_of!(kiln_generate_options, refiner),
        std::mem::offset_of!(kiln_generate_options, variation_seed),
        full,
    ];
    let mut buf = [0u8; 4];
    let mut accepted = Vec::new();
    for size in 0..=full + 16 {
        let mut o = options(&p);
        o.struct_size = size as u32;
        // A too-small buffer: accepted layouts stop at BUFFER_TOO_SMALL before any work.
        let s = unsafe { kiln_model_generate_into(h.model, &o, buf.as_mut_ptr(), buf.len(), 0) };
        match s {
            kiln_status::BufferTooSmall => accepted.push(size),
            kiln_status::StructSizeMismatch => assert!(last_error().contains("published"), "{}", last_error()),
            other => panic!("struct_size {size}: {other:?} {}", last_error()),
        }
    }
    println!("accepted kiln_generate_options sizes: {accepted:?} (published: {published:?})");
    assert_eq!(accepted, published);
    // The issue's example: a size that ends two bytes into the overrides pointer.
    let mut o = options(&p);
    o.struct_size = (std::mem::offset_of!(kiln_generate_options, scheduler_overrides) + 2) as u32;
    let mut img = ptr::null_mut();
    expect(unsafe { kiln_model_generate(h.model, &o, &mut img) }, kiln_status::StructSizeMismatch, "struct_size");
    still_works(h.model);
}

#[test]
fn only_published_runtime_options_sizes_are_accepted() {
    let full = std::mem::size_of::<kiln_runtime_options>();
    let published = [
        std::mem::offset_of!(kiln_runtime_options, graph_cache_dir),
        std::mem::offset_of!(kiln_runtime_options, sequential_load),
        // The layout that ended with `sequential_load` and its padding.
        std::mem::offset_of!(kiln_runtime_options, gpu_memory_limit),
        // The layout that ended with `gpu_math` and its padding (112 on 64-bit).
        std::mem::offset_of!(kiln_runtime_options, padding_after_gpu_math).next_multiple_of(std::mem::align_of::<kiln_runtime_options>()),
        full,
    ];
    let mut accepted = Vec::new();
    for size in 0..=full + 16 {
        let mut o = unsafe { std::mem::zeroed::<kiln_runtime_options>() };
        unsafe { kiln_runtime_options_init(&mut o) };
        o.struct_size = size as u32;
        // With a bad log level, a readable layout fails on it (INVALID_ARGUMENT)
        // without creating anything; the others fail on their size.
        o.log_level = 99;
        let mut rt = ptr::null_mut();
        match unsafe { kiln_runtime_create(&o, &mut rt) } {
            kiln_status::InvalidArgument => accepted.push(size),
            kiln_status::StructSizeMismatch => {}
            other => panic!("struct_size {size}: {other:?} {}", last_error()),
        }
        assert!(rt.is_null());
    }
    println!("accepted kiln_runtime_options sizes: {accepted:?} (published: {published:?})");
    assert_eq!(accepted, published);
    // The issue's example: half of the graph_cache_dir pointer.
    let mut o = unsafe { std::mem::zeroed::<kiln_runtime_options>() };
    unsafe { kiln_runtime_options_init(&mut o) };
    o.struct_size = (std::mem::offset_of!(kiln_runtime_options, graph_cache_dir) + 2) as u32;
    let mut rt = ptr::null_mut();
    expect(unsafe { kiln_runtime_create(&o, &mut rt) }, kiln_status::StructSizeMismatch, "struct_size");
}

#[test]
fn only_published_sizes_of_the_small_structs_are_accepted() {
    let h = open();
    // kiln_model_info: 28 (before has_matting), 32 (before quantization), 36
    // (before fused_attention), 40 (before lora_slots) and the current size.
    let mut accepted = Vec::new();
    for size in 0..=48u32 {
        let mut info = kiln_model_info { struct_size: size, ..Default::default() };
        match unsafe { kiln_model_get_info(h.model, &mut info) } {
            kiln_status::Ok => accepted.push(size as usize),
            kiln_status::StructSizeMismatch => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        accepted,
        [
            std::mem::offset_of!(kiln_model_info, has_matting),
            std::mem::offset_of!(kiln_model_info, quantization),
            std::mem::offset_of!(kiln_model_info, fused_attention),
            std::mem::offset_of!(kiln_model_info, lora_slots),
            std::mem::size_of::<kiln_model_info>()
        ]
    );
    // kiln_sprite_options: before `matte`, and the current size.
    let img = grey_image(8, 8);
    let mut accepted = Vec::new();
    for size in 0..=64u32 {
        let mut o = unsafe { std::mem::zeroed::<kiln_sprite_options>() };
        unsafe { kiln_sprite_options_init(&mut o) };
        o.struct_size = size;
        let mut out = ptr::null_mut();
        match unsafe { kiln_image_make_sprite(img, &o, &mut out, ptr::null_mut()) } {
            kiln_status::Ok => accepted.push(size as usize),
            kiln_status::StructSizeMismatch => {}
            other => panic!("{other:?} {}", last_error()),
        }
        unsafe { kiln_image_free(out) };
    }
    assert_eq!(accepted, [std::mem::offset_of!(kiln_sprite_options, matte), std::mem::size_of::<kiln_sprite_options>()]);
    unsafe { kiln_image_free(img) };
}

#[test]
fn row_pitches_whose_arithmetic_wraps_are_refused() {
    let h = open();
    let img = grey_image(4, 4);
    let mut buf = vec![0u8; 64];
    for pitch in [usize::MAX, usize::MAX / 2 + 1, usize::MAX / 3 + 1] {
        let s = unsafe { kiln_image_copy(img, buf.as_mut_ptr(), buf.len(), pitch) };
        expect(s, kiln_status::BufferTooSmall, "row pitch");
        let p = CString::new("stone").unwrap();
        let o = options(&p);
        // Checked before any work: the message names the buffer, not a generation error.
        let s = unsafe { kiln_model_generate_into(h.model, &o, buf.as_mut_ptr(), buf.len(), pitch) };
        expect(s, kiln_status::BufferTooSmall, "size_t");
        // The same for the init image of img2img.
        let mut o = options(&p);
        o.init_image = buf.as_ptr();
        o.init_image_len = buf.len();
        o.init_image_width = 4;
        o.init_image_height = 4;
        o.init_image_row_pitch = pitch;
        let mut out = ptr::null_mut();
        let s = unsafe { kiln_model_generate(h.model, &o, &mut out) };
        expect(s, kiln_status::BufferTooSmall, "init_image_len");
    }
    unsafe { kiln_image_free(img) };
    still_works(h.model);
}

#[test]
fn scheduler_override_errors_are_invalid_argument() {
    let h = open();
    let p = CString::new("stone").unwrap();
    let cases: [(&str, u32, &str); 8] = [
        (r#"{"steps_offset": "one"}"#, 0, "steps_offset"),
        (r#"{"timestep_spacing": 3}"#, 1, "timestep_spacing"),
        (r#"{"steps_offset": 1e30}"#, 1, "steps_offset"),
        (r#"{"steps_offset": 1e30}"#, 3, "steps_offset"),
        (r#"{"num_train_timesteps": 1}"#, 3, "num_train_timesteps"),
        (r#"{"num_train_timesteps": 1}"#, 1, "num_train_timesteps"),
        (r#"{"beta_start": 5.0}"#, 2, "beta_start"),
        (r#"{"num_train_timesteps": 2.5}"#, 0, "num_train_timesteps"),
    ];
    for (json, scheduler, needle) in cases {
        let text = CString::new(json).unwrap();
        let mut o = options(&p);
        o.scheduler = scheduler;
        o.scheduler_overrides = text.as_ptr();
        let mut img = ptr::null_mut();
        let s = unsafe { kiln_model_generate(h.model, &o, &mut img) };
        println!("{json} with scheduler {scheduler}: {s:?} {}", last_error());
        expect(s, kiln_status::InvalidArgument, needle);
        assert!(last_error().contains("scheduler_overrides"), "{}", last_error());
    }
    still_works(h.model);
}

#[test]
fn non_finite_initial_noise_is_refused() {
    let h = open();
    let p = CString::new("stone").unwrap();
    let mut info = kiln_model_info { struct_size: std::mem::size_of::<kiln_model_info>() as u32, ..Default::default() };
    assert_eq!(unsafe { kiln_model_get_info(h.model, &mut info) }, kiln_status::Ok);
    let side = (info.default_size / info.vae_downsampling) as usize;
    let n = info.latent_channels as usize * side * side;
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut noise = vec![0.5f32; n];
        noise[n / 2] = bad;
        let mut o = options(&p);
        o.initial_noise = noise.as_ptr();
        o.initial_noise_len = noise.len();
        let mut img = ptr::null_mut();
        expect(unsafe { kiln_model_generate(h.model, &o, &mut img) }, kiln_status::InvalidArgument, "finite");
        assert!(img.is_null());
    }
    still_works(h.model);
}

/// SD 1.x has no second prompt, size or crop conditioning: each SDXL field of
/// `kiln_generate_options` set on tiny-sd is INVALID_ARGUMENT naming the
/// field (generate and job submission alike), bad UTF-8 in `prompt_2` is
/// INVALID_UTF8 as in `prompt`, and the model keeps working.
#[test]
fn sdxl_fields_on_an_sd1_model_are_refused_by_name() {
    let h = open();
    let p = CString::new("stone").unwrap();
    let p2 = CString::new("metal").unwrap();
    type Case<'a> = (&'a dyn Fn(&mut kiln_generate_options), &'a str);
    let cases: [Case; 6] = [
        (&|o| o.prompt_2 = p2.as_ptr(), "options->prompt_2"),
        (&|o| o.negative_prompt_2 = p2.as_ptr(), "options->negative_prompt_2"),
        (&|o| (o.original_width, o.original_height) = (128, 128), "options->original_width/original_height"),
        (&|o| o.crop_left = 8, "options->crop_top/crop_left"),
        (&|o| (o.negative_target_width, o.negative_target_height) = (64, 64), "options->negative_target_width"),
        (&|o| o.negative_aesthetic_score = 1.0, "options->negative_aesthetic_score"),
    ];
    for (set, field) in cases {
        let mut o = options(&p);
        set(&mut o);
        let mut img = ptr::null_mut();
        expect(unsafe { kiln_model_generate(h.model, &o, &mut img) }, kiln_status::InvalidArgument, field);
        assert!(last_error().contains("not SDXL"), "{}", last_error());
        assert!(img.is_null());
        let mut job = 7u64;
        expect(unsafe { kiln_job_submit(h.model, &o, ptr::null(), &mut job) }, kiln_status::InvalidArgument, field);
        assert_eq!(job, 0);
    }
    // An empty prompt_2 means "the same as prompt", so it is not a second prompt.
    let empty = CString::new("").unwrap();
    let mut o = options(&p);
    o.prompt_2 = empty.as_ptr();
    let mut img = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_generate(h.model, &o, &mut img) }, kiln_status::Ok, "{}", last_error());
    unsafe { kiln_image_free(img) };
    let bad = [b's', 0xC3, 0x28, 0];
    let mut o = options(&p);
    o.prompt_2 = bad.as_ptr().cast();
    let mut img = ptr::null_mut();
    expect(unsafe { kiln_model_generate(h.model, &o, &mut img) }, kiln_status::InvalidUtf8, "options->prompt_2");
    let mut o = options(&p);
    o.prompt = bad.as_ptr().cast();
    expect(unsafe { kiln_model_generate(h.model, &o, &mut img) }, kiln_status::InvalidUtf8, "options->prompt");
    still_works(h.model);
}

#[test]
fn out_parameters_are_zeroed_when_a_call_fails() {
    let stale = 0xDEAD_BEEF_u64 ^ 0x1234; // an id never handed out
    let mut state = 77u32;
    assert_eq!(unsafe { kiln_job_wait(stale, 0, &mut state) }, kiln_status::InvalidHandle);
    assert_eq!(state, 0);
    let (mut w, mut hh) = (5u32, 6u32);
    assert_eq!(unsafe { kiln_job_image_size(stale, &mut w, &mut hh) }, kiln_status::InvalidHandle);
    assert_eq!((w, hh), (0, 0));
    let mut step = 9u32;
    let mut px = [0u8; 4];
    assert_eq!(unsafe { kiln_job_copy_preview(stale, px.as_mut_ptr(), 4, 0, &mut step) }, kiln_status::InvalidHandle);
    assert_eq!(step, 0);
    let mut p = kiln_job_progress {
        struct_size: std::mem::size_of::<kiln_job_progress>() as u32,
        state: 3,
        step: 4,
        total_steps: 5,
        preview_step: 6,
        preview_width: 7,
        preview_height: 8,
    };
    assert_eq!(unsafe { kiln_job_poll(stale, &mut p) }, kiln_status::InvalidHandle);
    assert_eq!((p.state, p.step, p.total_steps, p.preview_step, p.preview_width, p.preview_height), (0, 0, 0, 0, 0, 0));
    let mut available = 1u32;
    assert_eq!(unsafe { kiln_runtime_provider_available(ptr::null(), 0, &mut available) }, kiln_status::NullArgument);
    assert_eq!(available, 0);
    // String getters: the length and the buffer are cleared.
    let mut len = 55usize;
    let mut buf = [b'x' as c_char; 8];
    assert_eq!(unsafe { kiln_job_error_message(stale, buf.as_mut_ptr(), buf.len(), &mut len) }, kiln_status::InvalidHandle);
    assert_eq!((len, buf[0]), (0, 0));
    let (mut len, mut buf) = (55usize, [b'x' as c_char; 8]);
    let s = unsafe { kiln_runtime_onnxruntime_version(ptr::null(), buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!((s, len, buf[0]), (kiln_status::NullArgument, 0, 0));
    let (mut len, mut buf) = (55usize, [b'x' as c_char; 8]);
    let s = unsafe { kiln_runtime_onnxruntime_path(ptr::null(), buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!((s, len, buf[0]), (kiln_status::NullArgument, 0, 0));
    let (mut len, mut buf) = (55usize, [b'x' as c_char; 8]);
    let s = unsafe { kiln_model_graph_provider(ptr::null(), 0, buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!((s, len, buf[0]), (kiln_status::NullArgument, 0, 0));
    let mut info = kiln_model_info { struct_size: std::mem::size_of::<kiln_model_info>() as u32, default_size: 9, has_matting: 1, ..Default::default() };
    assert_eq!(unsafe { kiln_model_get_info(ptr::null(), &mut info) }, kiln_status::NullArgument);
    assert_eq!((info.default_size, info.has_matting), (0, 0));
}

#[test]
fn thread_counts_past_the_limits_are_refused() {
    for (field, value) in [("job_workers", 65u32), ("intra_op_threads", 100_000), ("inter_op_threads", u32::MAX)] {
        let mut o = unsafe { std::mem::zeroed::<kiln_runtime_options>() };
        unsafe { kiln_runtime_options_init(&mut o) };
        match field {
            "job_workers" => o.job_workers = value,
            "intra_op_threads" => o.intra_op_threads = value,
            _ => o.inter_op_threads = value,
        }
        let mut rt = ptr::null_mut();
        expect(unsafe { kiln_runtime_create(&o, &mut rt) }, kiln_status::InvalidArgument, field);
        assert!(rt.is_null());
    }
}

#[test]
fn out_of_memory_has_its_own_status_name() {
    let name = unsafe { CStr::from_ptr(kiln::ffi::status::kiln_status_name(kiln_status::OutOfMemory as u32)) };
    assert_eq!(name.to_str().unwrap(), "KILN_STATUS_OUT_OF_MEMORY");
    assert_eq!(kiln_status::OutOfMemory as u32, 500);
}
