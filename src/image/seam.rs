//! How visible a texture's wrap seam is: compares the jump across the wrap
//! edge with the jumps between neighbouring columns (rows) inside the image.
use super::Rgba8Image;
use crate::error::{Error, Result};

/// Which edge to score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// Left-right tiling: the last column against the first.
    X,
    /// Top-bottom tiling: the last row against the first.
    Y,
}

/// Seam score along `axis`: the mean absolute difference (over the four
/// RGBA channels, in byte units) between the last and first column (row),
/// divided by the mean absolute difference between adjacent columns (rows)
/// inside the image.
///
/// About 1 (or below) means the wrap edge looks like any other pair of
/// neighbouring columns, i.e. the texture tiles; much more than 1 means a
/// visible seam. A flat image scores 1; an image flat inside but with a jump
/// at the edge scores infinity. Errors (`InvalidArgument`): fewer than 2
/// columns (rows) along the axis.
pub fn seam_score(image: &Rgba8Image, axis: Axis) -> Result<f32> {
    let (w, h) = (image.width, image.height);
    let n = match axis {
        Axis::X => w,
        Axis::Y => h,
    };
    if n < 2 || w.min(h) == 0 {
        return Err(Error::invalid(format!("a seam score needs at least 2 pixels along the axis; the image is {w}x{h}")));
    }
    let p = &image.pixels;
    // Sum of |a - b| over the channels of two pixels.
    let diff = |a: usize, b: usize| -> u64 { (0..4).map(|c| p[a * 4 + c].abs_diff(p[b * 4 + c]) as u64).sum() };
    let (mut edge, mut inner) = (0u64, 0u64);
    match axis {
        Axis::X => {
            for y in 0..h {
                let row = y * w;
                edge += diff(row + w - 1, row);
                inner += (0..w - 1).map(|x| diff(row + x, row + x + 1)).sum::<u64>();
            }
        }
        Axis::Y => {
            for x in 0..w {
                edge += diff((h - 1) * w + x, x);
                inner += (0..h - 1).map(|y| diff(y * w + x, (y + 1) * w + x)).sum::<u64>();
            }
        }
    }
    let lines = (w * h / n) as f64; // pairs per edge
    let edge_mean = edge as f64 / lines;
    let inner_mean = inner as f64 / (lines * (n - 1) as f64);
    Ok(if inner_mean == 0.0 {
        if edge_mean == 0.0 {
            1.0
        } else {
            f32::INFINITY
        }
    } else {
        (edge_mean / inner_mean) as f32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::image::opaque_test_image as image;

    fn transpose(img: &Rgba8Image) -> Rgba8Image {
        let mut pixels = vec![0; img.pixels.len()];
        for y in 0..img.height {
            for x in 0..img.width {
                let (s, d) = ((y * img.width + x) * 4, (x * img.height + y) * 4);
                pixels[d..d + 4].copy_from_slice(&img.pixels[s..s + 4]);
            }
        }
        Rgba8Image { width: img.height, height: img.width, pixels }
    }

    /// Smooth random noise that is periodic in both axes.
    fn periodic_noise(w: usize, h: usize) -> Rgba8Image {
        let mut state = 12345u64;
        let mut plane: Vec<f32> = (0..w * h)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 40) as f32 / (1u64 << 24) as f32
            })
            .collect();
        crate::image::material::blur_plane(&mut plane, w, h, 4, true);
        let (lo, hi) = plane.iter().fold((f32::MAX, f32::MIN), |(l, u), v| (l.min(*v), u.max(*v)));
        image(w, h, |x, y| {
            let v = ((plane[y * w + x] - lo) / (hi - lo) * 255.0) as u8;
            [v, 255 - v, v / 2]
        })
    }

    #[test]
    fn periodic_textures_score_about_one() {
        // Triangle wave with period = width: every neighbour differs by 4, the wrap too.
        let tri = image(64, 8, |x, _| [(4 * (x as i32 - 32).unsigned_abs()) as u8, 0, 0]);
        let s = seam_score(&tri, Axis::X).unwrap();
        assert!((s - 1.0).abs() < 1e-6, "{s}");
        assert!((seam_score(&transpose(&tri), Axis::Y).unwrap() - 1.0).abs() < 1e-6);
        let noise = periodic_noise(64, 64);
        for axis in [Axis::X, Axis::Y] {
            let s = seam_score(&noise, axis).unwrap();
            assert!(s < 1.6, "{axis:?}: {s}");
        }
    }

    #[test]
    fn a_hard_wrap_seam_scores_high() {
        let ramp = image(64, 16, |x, _| [(x * 4) as u8, (x * 2) as u8, 30]);
        let s = seam_score(&ramp, Axis::X).unwrap();
        assert!(s > 30.0, "{s}");
        assert!(seam_score(&transpose(&ramp), Axis::Y).unwrap() > 30.0);
        // Rows are identical, so the vertical seam is invisible: flat → 1.
        assert_eq!(seam_score(&ramp, Axis::Y).unwrap(), 1.0);
        // Cutting periodic noise off-period makes a seam.
        let noise = periodic_noise(64, 64);
        let cut = image(40, 64, |x, y| {
            let i = (y * 64 + x) * 4;
            [noise.pixels[i], noise.pixels[i + 1], noise.pixels[i + 2]]
        });
        assert!(seam_score(&cut, Axis::X).unwrap() > 3.0 * seam_score(&noise, Axis::X).unwrap());
    }

    #[test]
    fn degenerate_images() {
        let one = image(1, 5, |_, _| [1, 2, 3]);
        assert!(seam_score(&one, Axis::X).is_err());
        assert_eq!(seam_score(&one, Axis::Y).unwrap(), 1.0);
        let step = image(4, 1, |x, _| [if x == 3 { 9 } else { 0 }; 3]);
        // Inner jumps exist (2→3), so finite.
        assert!(seam_score(&step, Axis::X).unwrap().is_finite());
        let edge_only = image(2, 1, |x, _| [x as u8 * 9; 3]);
        assert_eq!(seam_score(&edge_only, Axis::X).unwrap(), 1.0);
    }
}
