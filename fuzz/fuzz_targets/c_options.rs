//! The C options validation: bytes become a `kiln_generate_options`,
//! `kiln_runtime_options` or `kiln_sprite_options` with arbitrary field values,
//! `struct_size`s and enum values, as a careless caller could pass them, then
//! go through the validation the exported functions run. Pointer fields are
//! NULL or point to buffers at least as long as the struct says (the header's
//! contract; a caller lying about lengths is outside any library's reach), so
//! any out-of-bounds read AddressSanitizer reports is Kiln's.
#![no_main]
use std::ffi::{c_char, c_void, CString};
use std::mem::{size_of, MaybeUninit};
use std::ptr::addr_of_mut;

use arbitrary::Arbitrary;
use kiln::ffi::model::kiln_generate_options;
use kiln::ffi::postprocess::kiln_sprite_options;
use kiln::ffi::runtime::kiln_runtime_options;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    Generate {
        size: Size,
        raw: [u8; size_of::<kiln_generate_options>()],
        prompt: Option<Vec<u8>>,
        negative_prompt: Option<Vec<u8>>,
        initial_noise: Option<Vec<f32>>,
        init_image: Option<Vec<u8>>,
        mask: Option<Vec<u8>>,
        scheduler_overrides: Option<Vec<u8>>,
        prompt_2: Option<Vec<u8>>,
        negative_prompt_2: Option<Vec<u8>>,
    },
    Runtime {
        size: Size,
        raw: [u8; size_of::<kiln_runtime_options>()],
        onnxruntime_path: Option<Vec<u8>>,
        log_callback: bool,
        providers: Option<Vec<u32>>,
        graph_cache_dir: Option<Vec<u8>>,
    },
    Sprite {
        size: Size,
        raw: [u8; size_of::<kiln_sprite_options>()],
    },
}

/// Which `struct_size` the caller writes: its own `sizeof`, or any value.
#[derive(Arbitrary, Debug)]
enum Size {
    Current,
    Any(u32),
}

/// A NUL-terminated copy (cut at the first NUL), possibly invalid UTF-8.
fn c_string(bytes: &Option<Vec<u8>>) -> Option<CString> {
    bytes.as_ref().map(|b| CString::new(b.split(|&c| c == 0).next().unwrap_or(&[]).to_vec()).unwrap())
}

fn c_ptr(s: &Option<CString>) -> *const c_char {
    s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())
}

/// A buffer pointer, and a length that never exceeds the buffer: the raw
/// length when it fits, else one the fuzzer steers through `raw % (len + 1)`.
fn buffer<T>(v: &Option<Vec<T>>, raw_len: usize) -> (*const T, usize) {
    match v {
        None => (std::ptr::null(), raw_len),
        Some(v) => (v.as_ptr(), if raw_len <= v.len() { raw_len } else { raw_len % (v.len() + 1) }),
    }
}

/// `T` filled from `raw`, with `struct_size` set as the caller chose.
fn from_raw<T>(raw: &[u8], size: &Size) -> MaybeUninit<T> {
    assert_eq!(raw.len(), size_of::<T>());
    let mut v = MaybeUninit::<T>::uninit();
    // SAFETY: `raw` has exactly size_of::<T>() bytes.
    unsafe { std::ptr::copy_nonoverlapping(raw.as_ptr(), v.as_mut_ptr().cast::<u8>(), raw.len()) };
    let struct_size = match size {
        Size::Current => size_of::<T>() as u32,
        Size::Any(s) => *s,
    };
    // SAFETY: every versioned struct starts with its u32 struct_size.
    unsafe { v.as_mut_ptr().cast::<u32>().write(struct_size) };
    v
}

unsafe extern "C" fn log_sink(_user: *mut c_void, _level: u32, _message: *const c_char, _len: usize) {}

fuzz_target!(|input: Input| {
    match input {
        Input::Generate { size, raw, prompt, negative_prompt, initial_noise, init_image, mask, scheduler_overrides, prompt_2, negative_prompt_2 } => {
            let mut o = from_raw::<kiln_generate_options>(&raw, &size);
            let p = o.as_mut_ptr();
            let (prompt, negative, overrides) = (c_string(&prompt), c_string(&negative_prompt), c_string(&scheduler_overrides));
            let (prompt_2, negative_2) = (c_string(&prompt_2), c_string(&negative_prompt_2));
            // SAFETY: writes to fields of a fully initialized value; the raw
            // pointer bits are replaced before anything reads them.
            let o = unsafe {
                addr_of_mut!((*p).prompt).write(c_ptr(&prompt));
                addr_of_mut!((*p).negative_prompt).write(c_ptr(&negative));
                addr_of_mut!((*p).scheduler_overrides).write(c_ptr(&overrides));
                addr_of_mut!((*p).prompt_2).write(c_ptr(&prompt_2));
                addr_of_mut!((*p).negative_prompt_2).write(c_ptr(&negative_2));
                // `kiln_control` entries hold handles and strings the fuzzer
                // cannot make valid; NULL with the raw count checks that a
                // count without an array is refused.
                addr_of_mut!((*p).controls).write(std::ptr::null());
                // A refiner is a live model handle the fuzzer cannot make.
                addr_of_mut!((*p).refiner).write(std::ptr::null());
                let (ptr, len) = buffer(&initial_noise, (*p).initial_noise_len);
                addr_of_mut!((*p).initial_noise).write(ptr);
                addr_of_mut!((*p).initial_noise_len).write(len);
                let (ptr, len) = buffer(&init_image, (*p).init_image_len);
                addr_of_mut!((*p).init_image).write(ptr);
                addr_of_mut!((*p).init_image_len).write(len);
                let (ptr, len) = buffer(&mask, (*p).mask_len);
                addr_of_mut!((*p).mask).write(ptr);
                addr_of_mut!((*p).mask_len).write(len);
                o.assume_init()
            };
            // SAFETY: pointers are NULL or valid for their lengths (above).
            if let Ok(request) = unsafe { kiln::fuzzing::generate_options(&o) } {
                if let Some(init) = &request.init_image {
                    assert_eq!(init.rgb.len(), init.width * init.height * 3);
                }
                if let Some(noise) = &request.initial_noise {
                    assert!(noise.data.iter().all(|v| v.is_finite()), "non-finite noise accepted");
                }
            }
        }
        Input::Runtime { size, raw, onnxruntime_path, log_callback, providers, graph_cache_dir } => {
            let mut o = from_raw::<kiln_runtime_options>(&raw, &size);
            let p = o.as_mut_ptr();
            let (path, cache) = (c_string(&onnxruntime_path), c_string(&graph_cache_dir));
            // SAFETY: as above.
            let o = unsafe {
                addr_of_mut!((*p).onnxruntime_path).write(c_ptr(&path));
                addr_of_mut!((*p).graph_cache_dir).write(c_ptr(&cache));
                addr_of_mut!((*p).log_callback).write(if log_callback { Some(log_sink) } else { None });
                addr_of_mut!((*p).log_user_data).write(std::ptr::null_mut());
                let (ptr, len) = buffer(&providers, (*p).providers_len);
                addr_of_mut!((*p).providers).write(ptr);
                addr_of_mut!((*p).providers_len).write(len);
                o.assume_init()
            };
            // SAFETY: pointers are NULL or valid for their lengths (above).
            let _ = unsafe { kiln::fuzzing::runtime_options(&o) };
        }
        Input::Sprite { size, raw } => {
            // SAFETY: the struct holds only integers and floats; any bits are valid.
            let o = unsafe { from_raw::<kiln_sprite_options>(&raw, &size).assume_init() };
            // SAFETY: a whole struct.
            let _ = unsafe { kiln::fuzzing::sprite_options(&o) };
        }
    }
});
