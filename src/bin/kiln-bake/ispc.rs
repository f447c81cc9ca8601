//! Intel's ISPC texture compressor kernels (BC1, BC3, BC4, BC5, BC7), called
//! directly, so every platform runs one code path.
//!
//! Where the kernels come from:
//! - Linux, macOS, MSVC: `intel_tex_2` links its prebuilt kernel library.
//! - MinGW (`x86_64-pc-windows-gnu`): `intel_tex_2` ships no library under a
//!   MinGW name, so `build.rs` links its MSVC one (plain COFF objects, made by
//!   ISPC with no C runtime beyond `memcpy`) and sets `kiln_ispc_kernels`.
//!   Without it, DDS is refused with a message.
//!
//! The tests hold this module to `intel_tex_2`'s own wrappers, byte for byte.
#[cfg(not(all(windows, target_env = "gnu")))]
use intel_tex_2 as _; // links the kernels

/// `rgba_surface` of the kernels: pixels, size, and row pitch in bytes.
#[repr(C)]
struct Surface {
    ptr: *const u8,
    width: i32,
    height: i32,
    stride: i32,
}

/// `bc7_enc_settings` of the kernels.
#[repr(C)]
struct Bc7Settings {
    mode_selection: [bool; 4],
    refine_iterations: [i32; 8],
    skip_mode2: bool,
    fast_skip_threshold_mode1: i32,
    fast_skip_threshold_mode3: i32,
    fast_skip_threshold_mode7: i32,
    mode45_channel0: i32,
    refine_iterations_channel: i32,
    channels: i32,
}

#[cfg_attr(all(windows, target_env = "gnu"), link(name = "kiln_ispc_kernels", kind = "static"))]
extern "C" {
    fn CompressBlocksBC1_ispc(src: *const Surface, dst: *mut u8);
    fn CompressBlocksBC3_ispc(src: *const Surface, dst: *mut u8);
    fn CompressBlocksBC4_ispc(src: *const Surface, dst: *mut u8);
    fn CompressBlocksBC5_ispc(src: *const Surface, dst: *mut u8);
    fn CompressBlocksBC7_ispc(src: *const Surface, dst: *mut u8, settings: *const Bc7Settings);
}

// The MSVC objects probe large stack frames with `__chkstk`, which MinGW
// calls `___chkstk_ms` (same contract on x86-64: size in RAX, pages touched
// downwards from the caller's stack pointer, registers kept).
#[cfg(all(windows, target_env = "gnu"))]
std::arch::global_asm!(".globl __chkstk", "__chkstk:", "jmp ___chkstk_ms");

/// One channel layout the kernels read: `channels` bytes per pixel, rows
/// packed, width and height multiples of 4.
pub struct Pixels<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
}

impl Pixels<'_> {
    /// The kernels' surface, after the checks that make the call sound.
    fn surface(&self, channels: usize) -> Surface {
        assert!(self.width.is_multiple_of(4) && self.height.is_multiple_of(4), "whole 4x4 blocks only");
        assert_eq!(self.data.len(), self.width * self.height * channels, "one {channels}-byte pixel each");
        let as_i32 = |v: usize| i32::try_from(v).expect("a texture side fits in i32");
        Surface { ptr: self.data.as_ptr(), width: as_i32(self.width), height: as_i32(self.height), stride: as_i32(self.width * channels) }
    }

    /// Output of `bytes_per_block` per 4x4 block, filled by `kernel`.
    fn blocks(&self, bytes_per_block: usize, kernel: impl FnOnce(*mut u8)) -> Vec<u8> {
        let mut out = vec![0u8; self.width / 4 * (self.height / 4) * bytes_per_block];
        kernel(out.as_mut_ptr());
        out
    }
}

/// BC1 of RGBA pixels (alpha ignored).
pub fn bc1(rgba: &Pixels) -> Vec<u8> {
    let s = rgba.surface(4);
    // SAFETY: `s` points at width×height RGBA pixels (checked), and the output
    // holds 8 bytes for each of its blocks.
    rgba.blocks(8, |dst| unsafe { CompressBlocksBC1_ispc(&s, dst) })
}

/// BC3 of RGBA pixels.
pub fn bc3(rgba: &Pixels) -> Vec<u8> {
    let s = rgba.surface(4);
    // SAFETY: as `bc1`, 16 bytes a block.
    rgba.blocks(16, |dst| unsafe { CompressBlocksBC3_ispc(&s, dst) })
}

/// BC4 of one-byte pixels.
pub fn bc4(r: &Pixels) -> Vec<u8> {
    let s = r.surface(1);
    // SAFETY: as `bc1`, one byte a pixel.
    r.blocks(8, |dst| unsafe { CompressBlocksBC4_ispc(&s, dst) })
}

/// BC5 of two-byte pixels.
pub fn bc5(rg: &Pixels) -> Vec<u8> {
    let s = rg.surface(2);
    // SAFETY: as `bc1`, two bytes a pixel, 16 bytes a block.
    rg.blocks(16, |dst| unsafe { CompressBlocksBC5_ispc(&s, dst) })
}

/// BC7 of RGBA pixels with the kernels' "basic" profile: the opaque one
/// (3 channels) when every alpha is 255, else the alpha one.
pub fn bc7(rgba: &Pixels, opaque: bool) -> Vec<u8> {
    let s = rgba.surface(4);
    let settings = Bc7Settings {
        mode_selection: [true; 4],
        refine_iterations: if opaque { [2, 2, 2, 2, 2, 2, 2, 0] } else { [2; 8] },
        skip_mode2: true,
        fast_skip_threshold_mode1: 12,
        fast_skip_threshold_mode3: 8,
        fast_skip_threshold_mode7: if opaque { 0 } else { 4 },
        mode45_channel0: 0,
        refine_iterations_channel: 2,
        channels: if opaque { 3 } else { 4 },
    };
    // SAFETY: as `bc1`, 16 bytes a block; `settings` lives through the call.
    rgba.blocks(16, |dst| unsafe { CompressBlocksBC7_ispc(&s, dst, &settings) })
}

#[cfg(all(test, not(all(windows, target_env = "gnu"))))]
mod tests {
    use super::*;
    use intel_tex_2::{RSurface, RgSurface, RgbaSurface};

    /// Pixels with smooth gradients, hard edges and noise, so every BC7 mode
    /// and both BC1 endpoints orders have work to do.
    fn picture(width: usize, height: usize, channels: usize, seed: u32, alpha: bool) -> Vec<u8> {
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        let mut noise = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state % 48) as usize
        };
        let mut out = Vec::with_capacity(width * height * channels);
        for y in 0..height {
            for x in 0..width {
                for c in 0..channels {
                    let v = match c {
                        0 => x * 255 / width.max(1) + noise(),
                        1 => (if (x / 3 + y / 5) % 2 == 0 { 40 } else { 200 }) + noise(),
                        2 => y * 255 / height.max(1),
                        _ if alpha => (x * 7 + y * 13) % 256,
                        _ => 255,
                    };
                    out.push(v.min(255) as u8);
                }
            }
        }
        out
    }

    #[test]
    fn every_kernel_call_equals_intel_tex_2_s_own() {
        for (i, &(w, h)) in [(4, 4), (8, 4), (16, 12), (64, 64), (36, 20)].iter().enumerate() {
            let seed = i as u32 + 1;
            for alpha in [false, true] {
                let rgba = picture(w, h, 4, seed, alpha);
                let px = Pixels { data: &rgba, width: w, height: h };
                let theirs = RgbaSurface { data: &rgba, width: w as u32, height: h as u32, stride: w as u32 * 4 };
                assert_eq!(bc1(&px), intel_tex_2::bc1::compress_blocks(&theirs), "BC1 {w}x{h}");
                assert_eq!(bc3(&px), intel_tex_2::bc3::compress_blocks(&theirs), "BC3 {w}x{h}");
                let settings = if alpha { intel_tex_2::bc7::alpha_basic_settings() } else { intel_tex_2::bc7::opaque_basic_settings() };
                assert_eq!(bc7(&px, !alpha), intel_tex_2::bc7::compress_blocks(&settings, &theirs), "BC7 {w}x{h} alpha {alpha}");
            }
            let rg = picture(w, h, 2, seed, false);
            let theirs = RgSurface { data: &rg, width: w as u32, height: h as u32, stride: w as u32 * 2 };
            assert_eq!(bc5(&Pixels { data: &rg, width: w, height: h }), intel_tex_2::bc5::compress_blocks(&theirs), "BC5 {w}x{h}");
            let r = picture(w, h, 1, seed, false);
            let theirs = RSurface { data: &r, width: w as u32, height: h as u32, stride: w as u32 };
            assert_eq!(bc4(&Pixels { data: &r, width: w, height: h }), intel_tex_2::bc4::compress_blocks(&theirs), "BC4 {w}x{h}");
        }
    }

    #[test]
    fn the_alpha_profile_differs_from_the_opaque_one_on_transparent_pixels() {
        // Guards the test above against comparing two calls that ignore the settings.
        let rgba = picture(16, 16, 4, 9, true);
        let px = Pixels { data: &rgba, width: 16, height: 16 };
        assert_ne!(bc7(&px, true), bc7(&px, false));
    }

    #[test]
    #[should_panic(expected = "whole 4x4 blocks only")]
    fn a_partial_block_is_refused_before_the_kernel_runs() {
        let rgba = vec![0u8; 6 * 4 * 4];
        bc1(&Pixels { data: &rgba, width: 6, height: 4 });
    }
}
