//! Asynchronous jobs: submit from the game thread, poll once a frame, cancel,
//! copy the result into the engine's buffer. Jobs are named by 64-bit ids that
//! carry a generation count, so a stale or freed id returns
//! `KILN_STATUS_INVALID_HANDLE` instead of touching freed memory.
use std::ffi::c_char;
use std::time::Duration;

use super::boundary::{non_null, write_string};
use super::handles;
use super::model::{finish_request, kiln_model, kiln_generate_options, request_from};
use super::status::kiln_status;
use crate::error::{Error, ErrorKind};

/// Where a job is in its life.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kiln_job_state {
    /// Waiting for a worker thread.
    Queued = 0,
    /// Generating.
    Running = 1,
    /// Finished; the image can be copied out.
    Succeeded = 2,
    /// Finished with an error; see `kiln_job_error_message`.
    Failed = 3,
    /// Stopped by `kiln_job_cancel` (or `kiln_job_free`) before finishing.
    Cancelled = 4,
}

/// A job's state and progress, filled by `kiln_job_poll`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct kiln_job_progress {
    /// Set by the caller to `sizeof(kiln_job_progress)` before the call.
    pub struct_size: u32,
    /// A `kiln_job_state` value.
    pub state: u32,
    /// Denoising U-Net calls finished.
    pub step: u32,
    /// U-Net calls in total: the step count, or more for schedulers that call
    /// the U-Net several times per step (PNDM's warm-up, Heun).
    pub total_steps: u32,
}

/// Queues a generation and returns at once with its id in `*job_out`.
/// Jobs run on Kiln's worker threads (see `kiln_runtime_options.job_workers`),
/// higher `priority` first, then in submission order. The options and their
/// strings are copied before this returns. Free every job with `kiln_job_free`.
#[no_mangle]
pub unsafe extern "C" fn kiln_job_submit(
    model: *const kiln_model,
    options: *const kiln_generate_options,
    priority: i32,
    job_out: *mut u64,
) -> kiln_status {
    boundary!({
        non_null(job_out, "job_out")?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(job_out, 0) };
        // SAFETY: NULL or a live handle; options per the header.
        let m = unsafe { handles::borrow(model)? };
        let request = finish_request(m, unsafe { request_from(options)? });
        let id = m.runtime().jobs().submit(m, request, priority);
        // SAFETY: checked non-null.
        unsafe { handles::write_out(job_out, id) };
        Ok(())
    })
}

/// Reads a job's state and progress without blocking (cheap enough for every
/// frame). `progress_out->struct_size` must be set first.
#[no_mangle]
pub unsafe extern "C" fn kiln_job_poll(job: u64, progress_out: *mut kiln_job_progress) -> kiln_status {
    boundary!({
        non_null(progress_out, "progress_out")?;
        // SAFETY: non-null; struct_size is the first field.
        let size = unsafe { (*progress_out).struct_size } as usize;
        let ours = std::mem::size_of::<kiln_job_progress>();
        if !(8..=ours).contains(&size) {
            return Err(Error::new(ErrorKind::StructSizeMismatch, format!("`progress_out->struct_size` is {size}; expected 8..={ours}")));
        }
        let snap = crate::jobs::global_pool(1).poll(job)?;
        let p = kiln_job_progress { struct_size: size as u32, state: snap.state as u32, step: snap.step, total_steps: snap.total_steps };
        // SAFETY: the caller's struct has `size` writable bytes.
        unsafe { std::ptr::copy_nonoverlapping(&p as *const _ as *const u8, progress_out as *mut u8, size) };
        Ok(())
    })
}

/// Blocks until the job ends or `timeout_ms` passes (for tools and bake
/// scripts; a game should poll). `*state_out` (optional) receives the state.
#[no_mangle]
pub unsafe extern "C" fn kiln_job_wait(job: u64, timeout_ms: u32, state_out: *mut u32) -> kiln_status {
    boundary!({
        let state = crate::jobs::global_pool(1).wait(job, Duration::from_millis(timeout_ms as u64))?;
        if !state_out.is_null() {
            // SAFETY: non-null.
            unsafe { handles::write_out(state_out, state as u32) };
        }
        Ok(())
    })
}

/// Asks a job to stop. A queued job never starts; a running one stops within
/// one graph call (ONNX Runtime's run is terminated mid-graph). Cancelling an
/// ended job does nothing.
#[no_mangle]
pub extern "C" fn kiln_job_cancel(job: u64) -> kiln_status {
    boundary!({ crate::jobs::global_pool(1).cancel(job) })
}

/// Copies the job's own error message (string convention: see
/// `kiln_last_error_message`); empty unless it failed or was cancelled.
#[no_mangle]
pub unsafe extern "C" fn kiln_job_error_message(job: u64, buf: *mut c_char, buf_len: usize, len_out: *mut usize) -> kiln_status {
    boundary!({
        let text = crate::jobs::global_pool(1).error_message(job)?;
        // SAFETY: forwarded caller contract.
        unsafe { write_string(&text, buf, buf_len, len_out) }
    })
}

/// Width and height of a succeeded job's image. KILN_STATUS_BUSY while it runs.
#[no_mangle]
pub unsafe extern "C" fn kiln_job_image_size(job: u64, width_out: *mut u32, height_out: *mut u32) -> kiln_status {
    boundary!({
        non_null(width_out, "width_out")?;
        non_null(height_out, "height_out")?;
        let (w, h) = crate::jobs::global_pool(1).with_image(job, |i| Ok((i.width as u32, i.height as u32)))?;
        // SAFETY: checked non-null.
        unsafe {
            handles::write_out(width_out, w);
            handles::write_out(height_out, h);
        }
        Ok(())
    })
}

/// Copies a succeeded job's RGBA8 image into a caller buffer with a row pitch
/// (0 = `width * 4`). KILN_STATUS_BUSY while the job runs.
#[no_mangle]
pub unsafe extern "C" fn kiln_job_copy_image(job: u64, pixels_out: *mut u8, pixels_len: usize, row_pitch: usize) -> kiln_status {
    boundary!({
        non_null(pixels_out, "pixels_out")?;
        crate::jobs::global_pool(1).with_image(job, |image| {
            // SAFETY: the caller guarantees pixels_len writable bytes.
            let dst = unsafe { std::slice::from_raw_parts_mut(pixels_out, pixels_len) };
            image.copy_to(dst, row_pitch)
        })
    })
}

/// Releases a job: cancels it if it has not ended and frees its memory; the id
/// becomes stale. Freeing an id twice returns KILN_STATUS_INVALID_HANDLE.
#[no_mangle]
pub extern "C" fn kiln_job_free(job: u64) -> kiln_status {
    boundary!({ crate::jobs::global_pool(1).release(job) })
}
