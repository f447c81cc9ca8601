//! Control images for ControlNet, and the preprocessors that make them from
//! game-asset pictures: Canny edges, a height map as the depth control, and
//! "tile" (the picture itself, for re-detailing).
//!
//! Canny is Kiln's own, written to give OpenCV's `cv2.Canny(gray, low, high)`
//! edges (3×3 Sobel with replicated borders, L1 magnitude, OpenCV's
//! fixed-point direction sectors, 8-connected hysteresis): the canny
//! ControlNets were trained on OpenCV's output. `imageproc::edges::canny`
//! blurs first (σ 1.4) and uses L2 magnitudes, so it cannot give those edges.
use crate::error::{Error, ErrorKind, Result};

/// An 8-bit picture with 1 (gray), 3 (RGB) or 4 (RGBA, alpha ignored) channels.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Channels per pixel: 1, 3 or 4.
    pub channels: usize,
    /// `width * height * channels` bytes, rows tightly packed.
    pub data: Vec<u8>,
}

/// How a control image is made from the given picture.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Preprocess {
    /// Used as given (an edge map, depth or pose drawn elsewhere).
    #[default]
    None,
    /// Canny edges (white on black) with OpenCV's thresholds on the
    /// gradient's L1 magnitude.
    Canny {
        /// Lower hysteresis threshold (diffusers' examples: 100).
        low: f32,
        /// Upper hysteresis threshold (diffusers' examples: 200).
        high: f32,
    },
    /// A height map (bright = high) as the depth control: gray, its range
    /// stretched to 0..255 (depth ControlNets expect near = bright).
    Height,
    /// The picture itself, for tile ControlNets (resized to the output size
    /// with the other controls).
    Tile,
}

impl Preprocess {
    /// By name: `none`, `canny` (100/200), `height` (also `depth`), `tile`.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "none" => Self::None,
            "canny" => Self::Canny { low: 100.0, high: 200.0 },
            "height" | "depth" => Self::Height,
            "tile" => Self::Tile,
            _ => return None,
        })
    }
}

impl ControlImage {
    /// Checks the size, channel count and buffer length.
    pub fn validate(&self) -> Result<()> {
        if !matches!(self.channels, 1 | 3 | 4) {
            return Err(Error::invalid(format!(
                "a control image has 1, 3 or 4 channels (gray, RGB, RGBA); this one has {}",
                self.channels
            )));
        }
        let need = self.width.checked_mul(self.height).and_then(|n| n.checked_mul(self.channels));
        if self.width == 0 || self.height == 0 || need != Some(self.data.len()) {
            return Err(Error::new(
                ErrorKind::InvalidSize,
                format!(
                    "a {}x{} control image with {} channels needs {} bytes; got {}",
                    self.width,
                    self.height,
                    self.channels,
                    need.map_or("too many".to_string(), |n| n.to_string()),
                    self.data.len()
                ),
            ));
        }
        Ok(())
    }

    /// RGB bytes (gray replicated, alpha dropped).
    pub fn to_rgb(&self) -> Result<Vec<u8>> {
        self.validate()?;
        Ok(match self.channels {
            1 => self.data.iter().flat_map(|&g| [g, g, g]).collect(),
            3 => self.data.clone(),
            _ => self.data.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        })
    }

    /// Gray bytes: OpenCV's `COLOR_RGB2GRAY` fixed-point weights for colour.
    pub fn to_gray(&self) -> Result<Vec<u8>> {
        self.validate()?;
        if self.channels == 1 {
            return Ok(self.data.clone());
        }
        // cv::cvtColor: (R·4899 + G·9617 + B·1868 + 2^13) >> 14.
        Ok(self
            .data
            .chunks_exact(self.channels)
            .map(|p| ((p[0] as u32 * 4899 + p[1] as u32 * 9617 + p[2] as u32 * 1868 + 8192) >> 14) as u8)
            .collect())
    }

    fn gray(width: usize, height: usize, data: Vec<u8>) -> Self {
        Self { width, height, channels: 1, data }
    }
}

/// Applies `how` to `image`.
pub fn preprocess(image: &ControlImage, how: Preprocess) -> Result<ControlImage> {
    image.validate()?;
    match how {
        Preprocess::None | Preprocess::Tile => Ok(image.clone()),
        Preprocess::Canny { low, high } => canny(image, low, high),
        Preprocess::Height => height_to_depth(image),
    }
}

/// A height map as a depth control: gray, stretched to the full 0..255 range
/// (a flat map stays mid-gray).
pub fn height_to_depth(image: &ControlImage) -> Result<ControlImage> {
    let g = image.to_gray()?;
    let (lo, hi) = g.iter().fold((255u8, 0u8), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let data = if hi == lo {
        vec![128; g.len()]
    } else {
        let span = (hi - lo) as u32;
        g.iter().map(|&v| (((v - lo) as u32 * 255 + span / 2) / span) as u8).collect()
    };
    Ok(ControlImage::gray(image.width, image.height, data))
}

/// Canny edges as OpenCV's `cv2.Canny(gray, low, high)` computes them:
/// 255 on edges, 0 elsewhere, one channel.
pub fn canny(image: &ControlImage, low: f32, high: f32) -> Result<ControlImage> {
    if !(low.is_finite() && high.is_finite() && low >= 0.0 && high >= 0.0) {
        return Err(Error::invalid(format!("canny thresholds {low} and {high} must be finite and non-negative")));
    }
    let (w, h) = (image.width, image.height);
    let g = image.to_gray()?;
    // OpenCV swaps thresholds given in the wrong order and floors them.
    let (low, high) = if low > high { (high, low) } else { (low, high) };
    let (low, high) = (low.floor() as i32, high.floor() as i32);
    let px = |x: isize, y: isize| -> i32 {
        let x = x.clamp(0, w as isize - 1) as usize;
        let y = y.clamp(0, h as isize - 1) as usize;
        g[y * w + x] as i32
    };
    // 3x3 Sobel with replicated borders; L1 magnitude.
    let mut dx = vec![0i32; w * h];
    let mut dy = vec![0i32; w * h];
    let mut mag = vec![0i32; w * h];
    for y in 0..h as isize {
        for x in 0..w as isize {
            let gx = px(x + 1, y - 1) + 2 * px(x + 1, y) + px(x + 1, y + 1) - px(x - 1, y - 1) - 2 * px(x - 1, y) - px(x - 1, y + 1);
            let gy = px(x - 1, y + 1) + 2 * px(x, y + 1) + px(x + 1, y + 1) - px(x - 1, y - 1) - 2 * px(x, y - 1) - px(x + 1, y - 1);
            let i = y as usize * w + x as usize;
            dx[i] = gx;
            dy[i] = gy;
            mag[i] = gx.abs() + gy.abs();
        }
    }
    // Magnitudes outside the picture count as 0 in the comparisons.
    let m_at = |x: isize, y: isize| -> i32 {
        if x < 0 || y < 0 || x >= w as isize || y >= h as isize {
            0
        } else {
            mag[y as usize * w + x as usize]
        }
    };
    // Non-maximum suppression in OpenCV's four sectors (fixed point, 15 bits).
    const SHIFT: i64 = 15;
    let tg22 = (0.414_213_562_373_095_f64 * (1i64 << SHIFT) as f64 + 0.5) as i64;
    // 0 = not an edge, 1 = weak, 2 = strong.
    let mut state = vec![0u8; w * h];
    let mut stack = Vec::new();
    for y in 0..h as isize {
        for x in 0..w as isize {
            let i = y as usize * w + x as usize;
            let m = mag[i];
            if m <= low {
                continue;
            }
            let (xs, ys) = (dx[i] as i64, dy[i] as i64);
            let ax = xs.abs();
            let ay = ys.abs() << SHIFT;
            let tg22x = ax * tg22;
            let is_max = if ay < tg22x {
                m > m_at(x - 1, y) && m >= m_at(x + 1, y)
            } else {
                let tg67x = tg22x + (ax << (SHIFT + 1));
                if ay > tg67x {
                    m > m_at(x, y - 1) && m >= m_at(x, y + 1)
                } else {
                    let s: isize = if (xs ^ ys) < 0 { -1 } else { 1 };
                    m > m_at(x - s, y - 1) && m > m_at(x + s, y + 1)
                }
            };
            if is_max {
                if m > high {
                    state[i] = 2;
                    stack.push(i);
                } else {
                    state[i] = 1;
                }
            }
        }
    }
    // Hysteresis: weak pixels 8-connected to a strong one become edges.
    while let Some(i) = stack.pop() {
        let (x, y) = ((i % w) as isize, (i / w) as isize);
        for (ox, oy) in [(-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1)] {
            let (nx, ny) = (x + ox, y + oy);
            if nx >= 0 && ny >= 0 && nx < w as isize && ny < h as isize {
                let j = ny as usize * w + nx as usize;
                if state[j] == 1 {
                    state[j] = 2;
                    stack.push(j);
                }
            }
        }
    }
    Ok(ControlImage::gray(w, h, state.into_iter().map(|s| if s == 2 { 255 } else { 0 }).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vertical_step_gives_one_edge_column() {
        let (w, h) = (16, 8);
        let data: Vec<u8> = (0..w * h).map(|i| if i % w < 8 { 0 } else { 200 }).collect();
        let e = canny(&ControlImage::gray(w, h, data), 100.0, 200.0).unwrap();
        for y in 0..h {
            let row: Vec<u8> = e.data[y * w..(y + 1) * w].to_vec();
            assert_eq!(row.iter().filter(|&&v| v == 255).count(), 1, "row {y}: {row:?}");
        }
    }

    #[test]
    fn height_maps_stretch_to_full_range() {
        let d = height_to_depth(&ControlImage::gray(3, 1, vec![50, 100, 150])).unwrap();
        assert_eq!(d.data, vec![0, 128, 255]);
        assert!(ControlImage { width: 2, height: 2, channels: 2, data: vec![0; 8] }.validate().is_err());
    }
}
