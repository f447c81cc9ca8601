//! Unit tests of the C boundary's raw-pointer code, written to run under Miri
//! (`cargo +nightly miri test --lib miri_`, see the README's Reliability
//! section): handle boxing and freeing, the string getters' copies, versioned
//! struct reads and writes of every published size, and image copies with a
//! row pitch. Each buffer is exactly as long as the call may touch, so Miri
//! reports any access one byte past it. They touch no ONNX Runtime and also
//! run, quickly, in the ordinary `cargo test --lib`.
use std::ffi::c_char;

use super::boundary::{clear_versioned, read_versioned, write_versioned};
use super::image::{kiln_image, kiln_image_copy, kiln_image_free, kiln_image_height, kiln_image_pixels, kiln_image_width};
use super::job::{kiln_job_free, kiln_job_poll, kiln_job_progress};
use super::model::{kiln_generate_options, kiln_model_info};
use super::postprocess::kiln_image_create;
use super::status::kiln_status;
use super::kiln_last_error_message;

/// A zeroed buffer of `len` bytes aligned for any options struct (the C side
/// passes structs, which are at least 8-aligned on 64-bit targets).
fn aligned(len: usize) -> Vec<u64> {
    vec![0u64; len.div_ceil(8)]
}

#[test]
fn miri_image_handles_copy_with_a_row_pitch() {
    // 3x2 RGBA with a 16-byte pitch: exactly 16 + 12 bytes, nothing after.
    let src: Vec<u8> = (0..28).collect();
    let mut image: *mut kiln_image = std::ptr::null_mut();
    // SAFETY: `src` holds pixels_len bytes; image is a valid out-pointer.
    assert_eq!(unsafe { kiln_image_create(3, 2, src.as_ptr(), src.len(), 16, &mut image) }, kiln_status::Ok);
    // SAFETY: a live handle from kiln_image_create.
    unsafe {
        assert_eq!((kiln_image_width(image), kiln_image_height(image)), (3, 2));
        let pixels = std::slice::from_raw_parts(kiln_image_pixels(image), 24);
        assert_eq!(&pixels[..12], &src[..12]);
        assert_eq!(&pixels[12..], &src[16..28]);
        // Out with a 13-byte pitch: exactly 13 + 12 bytes.
        let mut out = vec![0xAAu8; 25];
        assert_eq!(kiln_image_copy(image, out.as_mut_ptr(), out.len(), 13), kiln_status::Ok);
        assert_eq!(&out[..12], &src[..12]);
        assert_eq!(out[12], 0xAA, "the gap between rows is left alone");
        assert_eq!(&out[13..25], &src[16..28]);
        // One byte short, a pitch below a row, and a pitch that wraps are refused.
        assert_eq!(kiln_image_copy(image, out.as_mut_ptr(), 24, 13), kiln_status::BufferTooSmall);
        assert_eq!(kiln_image_copy(image, out.as_mut_ptr(), out.len(), 11), kiln_status::InvalidArgument);
        assert_eq!(kiln_image_copy(image, out.as_mut_ptr(), out.len(), usize::MAX), kiln_status::BufferTooSmall);
        kiln_image_free(image);
        kiln_image_free(std::ptr::null_mut());
    }
    let mut bad: *mut kiln_image = std::ptr::null_mut();
    // SAFETY: `src` holds 27 readable bytes, one fewer than needed.
    assert_eq!(unsafe { kiln_image_create(3, 2, src.as_ptr(), 27, 16, &mut bad) }, kiln_status::BufferTooSmall);
    assert!(bad.is_null());
    // SAFETY: as above; a pitch whose product wraps.
    assert_eq!(unsafe { kiln_image_create(3, 2, src.as_ptr(), src.len(), usize::MAX, &mut bad) }, kiln_status::InvalidArgument);
}

#[test]
fn miri_error_message_copies_truncate_and_terminate() {
    let mut image: *mut kiln_image = std::ptr::null_mut();
    // SAFETY: NULL pixels are checked; image is a valid out-pointer.
    assert_eq!(unsafe { kiln_image_create(1, 1, std::ptr::null(), 0, 0, &mut image) }, kiln_status::NullArgument);
    let mut len = 0usize;
    // SAFETY: size query: NULL buffer, valid len_out.
    assert_eq!(unsafe { kiln_last_error_message(std::ptr::null_mut(), 0, &mut len) }, kiln_status::Ok);
    assert!(len > 4);
    let mut exact = vec![0x55 as c_char; len + 1];
    // SAFETY: `exact` holds len + 1 bytes.
    assert_eq!(unsafe { kiln_last_error_message(exact.as_mut_ptr(), exact.len(), &mut len) }, kiln_status::Ok);
    assert_eq!(exact[len], 0);
    let mut short = vec![0x55 as c_char; 5];
    // SAFETY: `short` holds 5 bytes.
    assert_eq!(unsafe { kiln_last_error_message(short.as_mut_ptr(), short.len(), std::ptr::null_mut()) }, kiln_status::BufferTooSmall);
    assert_eq!(&short[..4], &exact[..4]);
    assert_eq!(short[4], 0, "a truncated copy is NUL-terminated");
    let mut one = [0x55 as c_char; 1];
    // SAFETY: `one` holds 1 byte.
    assert_eq!(unsafe { kiln_last_error_message(one.as_mut_ptr(), 1, std::ptr::null_mut()) }, kiln_status::BufferTooSmall);
    assert_eq!(one[0], 0);
}

#[test]
fn miri_versioned_structs_touch_only_struct_size_bytes() {
    let current = std::mem::size_of::<kiln_generate_options>();
    // The oldest published layout ends after `initial_noise_len`: the
    // caller's allocation is exactly that long.
    let v1 = std::mem::offset_of!(kiln_generate_options, guidance_rescale);
    for (size, accepted) in [(v1, true), (current, true), (v1 + 4, false), (current + 8, false)] {
        let mut buf = aligned(size);
        // SAFETY: the buffer is at least 4 bytes and 8-aligned.
        unsafe { (buf.as_mut_ptr() as *mut u32).write(size as u32) };
        let defaults = crate::ffi::model::default_generate_options();
        // SAFETY: `buf` holds `size` readable bytes.
        let read = unsafe { read_versioned(buf.as_ptr() as *const kiln_generate_options, defaults, &[v1], "options") };
        assert_eq!(read.is_ok(), accepted, "struct_size {size}");
        if let Ok(o) = read {
            assert_eq!(o.steps, 0, "read from the caller's bytes");
            if size == v1 {
                assert_eq!(o.strength, 0.8, "fields past struct_size keep their defaults");
            }
        }
    }
    // An out-struct of the older 28-byte kiln_model_info: 28 bytes written, no more.
    let older = std::mem::offset_of!(kiln_model_info, has_matting);
    let mut out = aligned(older);
    // SAFETY: the buffer holds `older` bytes, 8-aligned.
    unsafe {
        (out.as_mut_ptr() as *mut u32).write(older as u32);
        let info = kiln_model_info { default_size: 64, has_matting: 1, ..Default::default() };
        clear_versioned(out.as_mut_ptr() as *mut kiln_model_info, &[older]);
        write_versioned(out.as_mut_ptr() as *mut kiln_model_info, info, &[older], "info_out").unwrap();
        let words = std::slice::from_raw_parts(out.as_ptr() as *const u32, older / 4);
        assert_eq!((words[0], words[1]), (older as u32, 64));
    }
}

#[test]
fn miri_stale_job_ids_are_statuses_and_outs_are_zeroed() {
    let mut progress = aligned(std::mem::size_of::<kiln_job_progress>());
    let p = progress.as_mut_ptr() as *mut kiln_job_progress;
    // SAFETY: the buffer holds a whole kiln_job_progress, 8-aligned.
    unsafe {
        (p as *mut u32).write(std::mem::size_of::<kiln_job_progress>() as u32);
        // Dirty every byte after struct_size: a failed poll must zero them.
        std::ptr::write_bytes((p as *mut u8).add(4), 0xFF, std::mem::size_of::<kiln_job_progress>() - 4);
        assert_eq!(kiln_job_poll(0xDEAD_0000_0001, p), kiln_status::InvalidHandle);
        let bytes = std::slice::from_raw_parts(p as *const u8, std::mem::size_of::<kiln_job_progress>());
        assert!(bytes[4..].iter().all(|&b| b == 0), "out-struct zeroed on failure");
        assert_eq!(kiln_job_free(0xDEAD_0000_0001), kiln_status::InvalidHandle);
        assert_eq!(kiln_job_free(0), kiln_status::InvalidHandle);
    }
}
