//! Bilinear resizing of planar float images, exactly as PyTorch's
//! `F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)`
//! (half-pixel centres, edge clamping, no antialiasing): what the reference
//! pipelines of matting models (RMBG, U²-Net exports) resize with.

/// Per output index along one axis: the two source indices and the weight of
/// the second.
fn taps(input: usize, output: usize) -> Vec<(usize, usize, f32)> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| {
            let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src as usize).min(input - 1);
            let i1 = if i0 + 1 < input { i0 + 1 } else { i0 };
            (i0, i1, src - i0 as f32)
        })
        .collect()
}

/// Resizes `planes` planes of `width × height` floats (planar, row-major:
/// `data[(p * height + y) * width + x]`) to `out_width × out_height`. Returns
/// the input unchanged when the size is the same. Every size must be ≥ 1.
pub fn resize_bilinear(data: &[f32], planes: usize, width: usize, height: usize, out_width: usize, out_height: usize) -> Vec<f32> {
    assert!(width > 0 && height > 0 && out_width > 0 && out_height > 0, "resize_bilinear: empty size");
    assert_eq!(data.len(), planes * width * height, "resize_bilinear: data does not match the size");
    if (width, height) == (out_width, out_height) {
        return data.to_vec();
    }
    let xs = taps(width, out_width);
    let ys = taps(height, out_height);
    let mut out = Vec::with_capacity(planes * out_width * out_height);
    for p in 0..planes {
        let plane = &data[p * width * height..(p + 1) * width * height];
        for &(y0, y1, ly) in &ys {
            let (r0, r1) = (&plane[y0 * width..(y0 + 1) * width], &plane[y1 * width..(y1 + 1) * width]);
            for &(x0, x1, lx) in &xs {
                let top = (1.0 - lx) * r0[x0] + lx * r0[x1];
                let bottom = (1.0 - lx) * r1[x0] + lx * r1[x1];
                out.push((1.0 - ly) * top + ly * bottom);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_upsample_and_downsample() {
        let d: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(resize_bilinear(&d, 1, 4, 3, 4, 3), d);
        // 2 → 4 along x: half-pixel centres give 0, 0.25, 0.75, 1 of the way.
        let up = resize_bilinear(&[0.0, 4.0], 1, 2, 1, 4, 1);
        assert_eq!(up, vec![0.0, 1.0, 3.0, 4.0]);
        // 4 → 2 without antialiasing samples between pixel pairs.
        let down = resize_bilinear(&[0.0, 2.0, 4.0, 6.0], 1, 4, 1, 2, 1);
        assert_eq!(down, vec![1.0, 5.0]);
        // Planes stay apart.
        let two = resize_bilinear(&[1.0, 1.0, 5.0, 5.0], 2, 2, 1, 3, 1);
        assert_eq!(two, vec![1.0, 1.0, 1.0, 5.0, 5.0, 5.0]);
    }
}
