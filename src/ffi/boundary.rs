//! The panic boundary, the thread-local last error, and argument helpers.
//!
//! Three macros wrap every export:
//! - `boundary!` for calls returning `kiln_status`,
//! - `boundary_void!` for `*_free`/`*_destroy` style calls,
//! - `boundary_value!(default, ..)` for plain getters.
//!
//! None lets a panic unwind into the host; a caught panic becomes
//! `KILN_STATUS_INTERNAL` (or the documented default).
use std::cell::RefCell;
use std::ffi::{c_char, CStr};

use super::status::kiln_status;
use crate::error::{Error, ErrorKind, Result};

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

pub(crate) fn set_last_error(message: &str) {
    LAST_ERROR.with(|e| {
        let mut e = e.borrow_mut();
        e.clear();
        e.push_str(message);
    });
}

pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("internal error (caught panic): {what}")
}

/// Runs `body`, records the error message, and converts to a status.
pub(crate) fn run_status(body: impl FnOnce() -> Result<()>) -> kiln_status {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(Ok(())) => {
            set_last_error("");
            kiln_status::Ok
        }
        Ok(Err(e)) => {
            set_last_error(e.message());
            e.kind().into()
        }
        Err(panic) => {
            set_last_error(&panic_message(&panic));
            kiln_status::Internal
        }
    }
}

/// Wraps a body returning `Result<()>` into a `kiln_status` export.
macro_rules! boundary {
    ($body:block) => {
        $crate::ffi::boundary::run_status(move || -> $crate::error::Result<()> { $body })
    };
}

/// Wraps a body with no result (free/destroy); panics are swallowed.
macro_rules! boundary_void {
    ($body:block) => {{
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || $body));
    }};
}

/// Wraps a getter; a panic returns `$default`.
macro_rules! boundary_value {
    ($default:expr, $body:block) => {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || $body)).unwrap_or($default)
    };
}

/// A required pointer argument.
pub(crate) fn non_null<T>(p: *const T, name: &str) -> Result<()> {
    if p.is_null() {
        Err(Error::new(ErrorKind::NullArgument, format!("`{name}` is NULL")))
    } else {
        Ok(())
    }
}

/// A required UTF-8 C string argument.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string.
pub(crate) unsafe fn utf8_arg<'a>(p: *const c_char, name: &str) -> Result<&'a str> {
    non_null(p, name)?;
    // SAFETY: non-null and NUL-terminated per the caller's contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|e| Error::new(ErrorKind::InvalidUtf8, format!("`{name}` is not valid UTF-8 ({e})")))
}

/// An optional UTF-8 C string argument (NULL = `None`).
///
/// # Safety
/// As [`utf8_arg`].
pub(crate) unsafe fn utf8_opt<'a>(p: *const c_char, name: &str) -> Result<Option<&'a str>> {
    if p.is_null() {
        Ok(None)
    } else {
        unsafe { utf8_arg(p, name) }.map(Some)
    }
}

/// Copies `text` into a caller buffer with the size-query convention used by
/// every string getter: `*len_out` receives the length in bytes without the
/// terminating NUL; `buf == NULL` is a pure size query; a buffer shorter than
/// `len + 1` gets a truncated, NUL-terminated copy and `BUFFER_TOO_SMALL`.
///
/// # Safety
/// `buf` must be NULL or valid for `buf_len` bytes; `len_out` NULL or valid.
pub(crate) unsafe fn write_string(text: &str, buf: *mut c_char, buf_len: usize, len_out: *mut usize) -> Result<()> {
    let bytes = text.as_bytes();
    if !len_out.is_null() {
        // SAFETY: checked non-null; caller guarantees it is writable.
        unsafe { *len_out = bytes.len() };
    }
    if buf.is_null() {
        return Ok(());
    }
    if buf_len == 0 {
        return Err(Error::new(ErrorKind::BufferTooSmall, format!("buffer of 0 bytes; need {}", bytes.len() + 1)));
    }
    let n = bytes.len().min(buf_len - 1);
    // SAFETY: buf is valid for buf_len bytes and n < buf_len.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), n);
        *buf.add(n) = 0;
    }
    if n < bytes.len() {
        return Err(Error::new(
            ErrorKind::BufferTooSmall,
            format!("buffer of {buf_len} bytes; need {}", bytes.len() + 1),
        ));
    }
    Ok(())
}

/// A published layout of `T` that ended just before `field` (the first field
/// it did not have), as the end of its fields: `offset_of!(T, field)`. Its
/// `sizeof`, what its callers pass as `struct_size`, is that rounded up to
/// `T`'s alignment ([`published_size`]); Kiln reads only the fields, never
/// that padding, where a later layout may have put a field. Written as a
/// field name, so it is right on 32- and 64-bit targets.
macro_rules! layout_before {
    ($t:ty, $field:ident) => {
        std::mem::offset_of!($t, $field)
    };
}

/// `sizeof` of `T`'s published layout whose fields end at `end`, padded as a
/// C compiler pads it.
pub(crate) const fn published_size<T>(end: usize) -> usize {
    padded(end, std::mem::align_of::<T>())
}

/// `end` rounded up to a multiple of `align`.
pub(crate) const fn padded(end: usize, align: usize) -> usize {
    end.div_ceil(align) * align
}

/// Checks a caller's `struct_size` against the sizes of the layouts this
/// library published for `T`: `older` (their fields' ends, oldest first, from
/// [`layout_before!`]) and `size_of::<T>()`. Any other value, even one between
/// two of them, would make Kiln read half a field (a pointer cut in two), so
/// it is `STRUCT_SIZE_MISMATCH`. Returns how many bytes of the caller's struct
/// are fields: all of them for the current layout, an older layout's fields
/// without the padding after them (the oldest such layout when two share a
/// size: a field placed in padding reads as its default).
pub(crate) fn check_struct_size<T>(size: usize, older: &[usize], name: &str) -> Result<usize> {
    let ours = std::mem::size_of::<T>();
    if size == ours {
        return Ok(size);
    }
    if let Some(&end) = older.iter().find(|&&end| published_size::<T>(end) == size) {
        return Ok(end);
    }
    let mut sizes: Vec<usize> = older.iter().map(|&e| published_size::<T>(e)).chain(std::iter::once(ours)).collect();
    sizes.dedup();
    let accepted: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
    Err(Error::new(
        ErrorKind::StructSizeMismatch,
        format!(
            "`{name}->struct_size` is {size}; this library accepts only the published layouts' sizes {} (call the matching *_init first)",
            accepted.join(", ")
        ),
    ))
}

/// Reads a versioned options struct whose first field is `uint32_t struct_size`.
/// Only the sizes of published layouts are accepted (see
/// [`check_struct_size`]); fields that layout did not have keep the values
/// from `defaults`, including one a later layout put in its trailing padding
/// (the caller's padding bytes are never read).
///
/// # Safety
/// `p` must be NULL or point to at least `struct_size` readable bytes.
pub(crate) unsafe fn read_versioned<T: Copy>(p: *const T, defaults: T, older: &[usize], name: &str) -> Result<T> {
    non_null(p, name)?;
    // SAFETY: every versioned struct starts with a u32 size.
    let size = unsafe { *(p as *const u32) } as usize;
    let fields = check_struct_size::<T>(size, older, name)?;
    let mut out = defaults;
    // SAFETY: copying `fields` (<= `size`) bytes that the caller promised are
    // readable into a value of at least that size; T is plain old data (Copy, repr(C)).
    unsafe { std::ptr::copy_nonoverlapping(p as *const u8, &mut out as *mut T as *mut u8, fields) };
    Ok(out)
}

/// Writes a caller's versioned out-struct: checks its `struct_size` like
/// [`read_versioned`], then copies the first `struct_size` bytes of `value`
/// (whose own `struct_size` is set to the caller's).
///
/// # Safety
/// `out` must be NULL or point to a struct of at least `struct_size` writable bytes.
pub(crate) unsafe fn write_versioned<T: Copy>(out: *mut T, mut value: T, older: &[usize], name: &str) -> Result<()> {
    non_null(out, name)?;
    // SAFETY: every versioned struct starts with a u32 size.
    let size = unsafe { *(out as *const u32) } as usize;
    check_struct_size::<T>(size, older, name)?;
    // SAFETY: `value` is repr(C) with a leading u32.
    unsafe { *(&mut value as *mut T as *mut u32) = size as u32 };
    // SAFETY: the caller's struct has `size` writable bytes; size <= size_of::<T>().
    unsafe { std::ptr::copy_nonoverlapping(&value as *const T as *const u8, out as *mut u8, size) };
    Ok(())
}

/// Clears a versioned out-struct on entry (all but `struct_size`), so a
/// failed call leaves zeros, as the header promises. Does nothing when `out`
/// is NULL or its size is not one this library knows.
///
/// # Safety
/// As [`write_versioned`].
pub(crate) unsafe fn clear_versioned<T: Copy>(out: *mut T, older: &[usize]) {
    if out.is_null() {
        return;
    }
    // SAFETY: every versioned struct starts with a u32 size.
    let size = unsafe { *(out as *const u32) } as usize;
    if check_struct_size::<T>(size, older, "").is_ok() {
        // SAFETY: the caller's struct has `size` writable bytes.
        unsafe { std::ptr::write_bytes((out as *mut u8).add(4), 0, size - 4) };
    }
}

/// Clears the outputs of a string getter on entry: `*len_out` = 0 and an empty
/// string in `buf`, so a failed call never leaves stale text or a stale length.
///
/// # Safety
/// As [`write_string`].
pub(crate) unsafe fn clear_string_outs(buf: *mut c_char, buf_len: usize, len_out: *mut usize) {
    // SAFETY: per the caller's contract.
    unsafe {
        if !len_out.is_null() {
            *len_out = 0;
        }
        if !buf.is_null() && buf_len > 0 {
            *buf = 0;
        }
    }
}

/// Copies the calling thread's last error message into `buf` (see the string
/// convention in the header). The message describes the most recent failed
/// call on this thread and is empty after a successful one. This call does not
/// change it.
///
/// Returns `KILN_STATUS_OK`, or `KILN_STATUS_BUFFER_TOO_SMALL` after writing a
/// truncated message.
#[no_mangle]
pub unsafe extern "C" fn kiln_last_error_message(buf: *mut c_char, buf_len: usize, len_out: *mut usize) -> kiln_status {
    boundary_value!(kiln_status::Internal, {
        LAST_ERROR.with(|e| {
            let text = e.borrow().clone();
            // SAFETY: forwarded caller contract.
            match unsafe { write_string(&text, buf, buf_len, len_out) } {
                Ok(()) => kiln_status::Ok,
                Err(err) => err.kind().into(),
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A versioned struct whose second layout put `late` into the first
    /// layout's trailing padding (as `kiln_model_load_options.attention` did).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Versioned {
        struct_size: u32,
        early: u32,
        pointer: u64,
        last_of_v1: u32,
        late: u32,
        after: u64,
    }

    const OLDER: [usize; 2] = [layout_before!(Versioned, late), layout_before!(Versioned, after)];

    fn defaults() -> Versioned {
        Versioned { struct_size: std::mem::size_of::<Versioned>() as u32, early: 1, pointer: 2, last_of_v1: 3, late: 4, after: 5 }
    }

    #[test]
    fn an_older_layout_is_read_without_its_trailing_padding() {
        // Both older layouts are 24 bytes: v1 ends at 20 (4 bytes of padding), v2 at 24.
        assert_eq!(OLDER.map(published_size::<Versioned>), [24, 24]);
        let caller = Versioned { struct_size: 24, early: 10, pointer: 20, last_of_v1: 30, late: 0xdead_beef, after: 0xbad };
        // SAFETY: `caller` is a whole struct, readable for its size.
        let read = unsafe { read_versioned(&caller, defaults(), &OLDER, "options") }.unwrap();
        assert_eq!((read.early, read.pointer, read.last_of_v1), (10, 20, 30), "the fields of the layout");
        assert_eq!((read.late, read.after), (4, 5), "the padding (and what follows) keep the defaults");
        assert_eq!(read.struct_size, 24);
        // The current layout reads everything; an unpublished size is refused with the padded sizes listed.
        let full = Versioned { struct_size: std::mem::size_of::<Versioned>() as u32, ..caller };
        // SAFETY: as above.
        assert_eq!(unsafe { read_versioned(&full, defaults(), &OLDER, "options") }.unwrap(), full);
        let odd = Versioned { struct_size: 20, ..caller };
        // SAFETY: as above.
        let e = unsafe { read_versioned(&odd, defaults(), &OLDER, "options") }.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::StructSizeMismatch);
        assert!(e.message().contains("sizes 24, 32 "), "{e}");
    }
}
