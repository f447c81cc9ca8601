//! PNG reading for img2img pictures, inpainting masks and sprites (what
//! `generate --init-image/--mask` and kiln-bake's atlases run), then the
//! pipeline's preparation of the first two. Decoded sizes must match their buffers, and anything the decoder
//! accepts must be prepared or refused with a status.
#![no_main]
use kiln::pipeline::inputs::{init_image_from_png, mask_from_png, rgba_from_png};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let init = init_image_from_png(data);
    let mask = mask_from_png(data);
    if let Ok(init) = &init {
        assert_eq!(init.rgb.len(), init.width * init.height * 3);
    }
    if let Ok(mask) = &mask {
        assert_eq!(mask.data.len(), mask.width * mask.height);
    }
    if let Ok(rgba) = rgba_from_png(data) {
        assert_eq!(rgba.pixels.len(), rgba.width * rgba.height * 4);
    }
    let Ok(init) = init else { return };
    // Lanczos resizing of large pictures is slow and not what is under test.
    if init.width * init.height <= 256 * 256 {
        let _ = kiln::fuzzing::prepare_img2img(&init, None, 64, 64);
        let _ = kiln::fuzzing::prepare_img2img(&init, mask.as_ref().ok(), init.width, init.height);
    }
});
