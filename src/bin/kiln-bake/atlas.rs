//! Sprite atlases: baked sprite PNGs trimmed to their visible pixels and packed
//! into one sheet (shelf packing, tallest first), with a JSON of rectangles.
use kiln::Rgba8Image;

/// Where one sprite went.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Placement {
    /// Asset name.
    pub name: String,
    /// Left edge in the sheet.
    pub x: u32,
    /// Top edge in the sheet.
    pub y: u32,
    /// Width of the packed (trimmed) sprite.
    pub width: u32,
    /// Height of the packed sprite.
    pub height: u32,
    /// Where the trimmed rectangle was in the original image.
    pub source_x: u32,
    /// Likewise, vertically.
    pub source_y: u32,
    /// The original image's width.
    pub source_width: u32,
    /// The original image's height.
    pub source_height: u32,
}

/// The sheet and its rectangles.
#[derive(Debug, Clone)]
pub struct Sheet {
    /// The packed image (transparent where nothing is).
    pub image: Rgba8Image,
    /// One rectangle per sprite, in the order given.
    pub placements: Vec<Placement>,
}

/// The box of pixels with alpha > 0 (the whole image when none is visible, so
/// an empty sprite still gets a rectangle).
fn visible_box(img: &Rgba8Image) -> (usize, usize, usize, usize) {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for y in 0..img.height {
        for x in 0..img.width {
            if img.pixels[(y * img.width + x) * 4 + 3] > 0 {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
            }
        }
    }
    if x0 == usize::MAX {
        (0, 0, img.width, img.height)
    } else {
        (x0, y0, x1 - x0, y1 - y0)
    }
}

/// Packs `sprites` (name, image) with `padding` transparent pixels around each.
pub fn pack(sprites: &[(String, Rgba8Image)], padding: u32) -> Sheet {
    let pad = padding as usize;
    let boxes: Vec<_> = sprites.iter().map(|(_, img)| visible_box(img)).collect();
    let area: usize = boxes.iter().map(|b| (b.2 + 2 * pad) * (b.3 + 2 * pad)).sum();
    let widest = boxes.iter().map(|b| b.2 + 2 * pad).max().unwrap_or(1);
    // A power-of-two width near a square sheet, never narrower than the widest sprite.
    let width = ((area as f64).sqrt().ceil() as usize).max(widest).next_power_of_two();
    let mut order: Vec<usize> = (0..sprites.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(boxes[i].3));
    let mut spots = vec![(0usize, 0usize); sprites.len()];
    let (mut x, mut y, mut shelf) = (0usize, 0usize, 0usize);
    for &i in &order {
        let (w, h) = (boxes[i].2 + 2 * pad, boxes[i].3 + 2 * pad);
        if x + w > width {
            (x, y, shelf) = (0, y + shelf, 0);
        }
        spots[i] = (x + pad, y + pad);
        x += w;
        shelf = shelf.max(h);
    }
    let height = (y + shelf).max(1);
    let mut pixels = vec![0u8; width * height * 4];
    let mut placements = Vec::new();
    for (i, (name, img)) in sprites.iter().enumerate() {
        let (bx, by, bw, bh) = boxes[i];
        let (sx, sy) = spots[i];
        for row in 0..bh {
            let src = ((by + row) * img.width + bx) * 4;
            let dst = ((sy + row) * width + sx) * 4;
            pixels[dst..dst + bw * 4].copy_from_slice(&img.pixels[src..src + bw * 4]);
        }
        placements.push(Placement {
            name: name.clone(),
            x: sx as u32,
            y: sy as u32,
            width: bw as u32,
            height: bh as u32,
            source_x: bx as u32,
            source_y: by as u32,
            source_width: img.width as u32,
            source_height: img.height as u32,
        });
    }
    Sheet { image: Rgba8Image { width, height, pixels }, placements }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sprite(w: usize, h: usize, visible: (usize, usize, usize, usize), tag: u8) -> Rgba8Image {
        let mut pixels = vec![0u8; w * h * 4];
        for y in visible.1..visible.1 + visible.3 {
            for x in visible.0..visible.0 + visible.2 {
                pixels[(y * w + x) * 4..][..4].copy_from_slice(&[tag, x as u8, y as u8, 255]);
            }
        }
        Rgba8Image { width: w, height: h, pixels }
    }

    #[test]
    fn packed_rectangles_hold_the_trimmed_pixels_and_never_overlap() {
        let sprites: Vec<(String, Rgba8Image)> = (0..7)
            .map(|i| (format!("s{i}"), sprite(32, 32, (i * 2, i, 10 + i * 3, 20 - i * 2), i as u8 + 1)))
            .collect();
        let sheet = pack(&sprites, 2);
        assert_eq!(sheet.placements.len(), 7);
        for (p, (_, img)) in sheet.placements.iter().zip(&sprites) {
            assert!(p.x + p.width <= sheet.image.width as u32 && p.y + p.height <= sheet.image.height as u32);
            for y in 0..p.height {
                for x in 0..p.width {
                    let s = (((p.source_y + y) as usize) * img.width + (p.source_x + x) as usize) * 4;
                    let d = (((p.y + y) as usize) * sheet.image.width + (p.x + x) as usize) * 4;
                    assert_eq!(sheet.image.pixels[d..d + 4], img.pixels[s..s + 4], "{} at {x},{y}", p.name);
                }
            }
            for q in &sheet.placements {
                if q.name != p.name {
                    let apart = p.x + p.width + 2 <= q.x || q.x + q.width + 2 <= p.x || p.y + p.height + 2 <= q.y || q.y + q.height + 2 <= p.y;
                    assert!(apart, "{} and {} overlap or touch within the padding", p.name, q.name);
                }
            }
        }
    }
}
