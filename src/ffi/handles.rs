//! Opaque handles: the one place that maps C handle pointers to Rust objects.
//!
//! Each C handle type is a zero-sized struct; its pointer is a `Box<Target>`
//! made by `into_raw` and released by `free`.
use crate::error::{Error, ErrorKind, Result};

/// Ties a C handle type to the Rust object behind it.
pub(crate) trait Handle {
    type Target;
    const NAME: &'static str;
}

/// Boxes `value` and returns it as a handle pointer.
pub(crate) fn into_raw<H: Handle>(value: H::Target) -> *mut H {
    Box::into_raw(Box::new(value)).cast::<H>()
}

/// Borrows the object behind `p`.
///
/// # Safety
/// `p` must be NULL or a live pointer from `into_raw::<H>`.
pub(crate) unsafe fn borrow<'a, H: Handle>(p: *const H) -> Result<&'a H::Target> {
    if p.is_null() {
        return Err(Error::new(ErrorKind::NullArgument, format!("`{}` is NULL", H::NAME)));
    }
    // SAFETY: per contract, p came from into_raw::<H> and is still alive.
    Ok(unsafe { &*p.cast::<H::Target>() })
}

/// Releases the object behind `p`; NULL is a no-op.
///
/// # Safety
/// `p` must be NULL or a live pointer from `into_raw::<H>`, not used afterwards.
pub(crate) unsafe fn free<H: Handle>(p: *mut H) {
    if !p.is_null() {
        // SAFETY: per contract, p came from into_raw::<H>.
        drop(unsafe { Box::from_raw(p.cast::<H::Target>()) });
    }
}

/// Writes `value` to an out-parameter.
///
/// # Safety
/// `out` must be valid for writes (checked non-null by the caller).
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T) {
    // SAFETY: per contract.
    unsafe { out.write(value) };
}
