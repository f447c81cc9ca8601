//! Size limits for the images Kiln makes, and fallible allocation of their
//! pixels: a caller's size becomes a status, never an abort.
//!
//! Rust's global allocator aborts the process when an allocation fails, so
//! every buffer whose size a caller controls is checked against these limits
//! first and then reserved with `try_reserve_exact`.
use crate::error::{Error, ErrorKind, Result};

/// Largest width or height of any image Kiln makes or accepts (post-processing
/// results, `kiln_image_create`, init images and masks). Generation itself is
/// limited further by the pipeline (8192).
pub const MAX_IMAGE_SIDE: usize = 16384;

/// Largest number of pixels of one image: 16384 x 16384 (1 GiB as RGBA8).
pub const MAX_IMAGE_PIXELS: usize = MAX_IMAGE_SIDE * MAX_IMAGE_SIDE;

/// Checks an image size against the limits; `what` names it in the message.
pub fn check_image_size(width: usize, height: usize, what: &str) -> Result<()> {
    if width == 0 || height == 0 || width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(Error::new(
            ErrorKind::InvalidSize,
            format!("{what} would be {width}x{height} pixels; each side must be 1..={MAX_IMAGE_SIDE}"),
        ));
    }
    Ok(())
}

/// An empty vector with room for `len` elements, or `OutOfMemory`.
pub fn try_with_capacity<T>(len: usize, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|e| {
        Error::new(
            ErrorKind::OutOfMemory,
            format!("cannot allocate {what} ({len} x {} bytes): {e}", std::mem::size_of::<T>()),
        )
    })?;
    Ok(v)
}

/// A vector of `len` copies of `value`, or `OutOfMemory`.
pub fn try_filled<T: Clone>(len: usize, value: T, what: &str) -> Result<Vec<T>> {
    let mut v = try_with_capacity(len, what)?;
    v.resize(len, value);
    Ok(v)
}

/// Bytes a buffer needs for `height` rows of `row` bytes, `pitch` apart:
/// `pitch * (height - 1) + row`, or `None` when that overflows `usize`.
pub fn pitched_len(pitch: usize, row: usize, height: usize) -> Option<usize> {
    if height == 0 {
        return Some(0);
    }
    pitch.checked_mul(height - 1)?.checked_add(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_past_the_limits_are_invalid_size() {
        assert!(check_image_size(MAX_IMAGE_SIDE, MAX_IMAGE_SIDE, "x").is_ok());
        for (w, h) in [(0, 1), (1, 0), (MAX_IMAGE_SIDE + 1, 1), (1, usize::MAX)] {
            assert_eq!(check_image_size(w, h, "x").unwrap_err().kind(), ErrorKind::InvalidSize, "{w}x{h}");
        }
    }

    #[test]
    fn an_impossible_allocation_is_out_of_memory_not_an_abort() {
        let e = try_with_capacity::<u64>(usize::MAX / 4, "a test buffer").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfMemory);
        assert_eq!(try_filled(3, 7u8, "x").unwrap(), vec![7, 7, 7]);
    }

    #[test]
    fn pitched_len_reports_overflow() {
        assert_eq!(pitched_len(12, 8, 2), Some(20));
        assert_eq!(pitched_len(usize::MAX, 8, 2), None);
        assert_eq!(pitched_len(usize::MAX, 8, 1), Some(8));
        assert_eq!(pitched_len(usize::MAX / 2 + 1, 8, 3), None);
    }
}
