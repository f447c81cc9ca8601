#!/usr/bin/env python3
"""Procedural, seamless game textures with captions: the training data of kiln-tiny-textures.

Every image is periodic by construction (FFT noise, wrap-around Voronoi, patterns whose periods divide
the image size), so a model trained on it learns textures that tile. Each sample is drawn from a
family (brick wall, wood planks, lava...) with colour, scale and wear variations, and captioned by a
small grammar from the same choices ("mossy red brick wall", "small weathered oak planks").

Deterministic: sample i of seed s is always the same image and caption. The data is ours (generated
here from code), so the model trained on it carries no third-party licence.

    python tools/texture_dataset.py --count 16 --sheet /tmp/sheet.png   # look at it
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass

import numpy as np

SIZE = 64

# --------------------------------------------------------------------------------------------------
# Periodic building blocks
# --------------------------------------------------------------------------------------------------
_FREQ = np.fft.fftfreq(SIZE) * SIZE  # integer frequencies: every component is periodic on SIZE


def fbm(rng, beta=2.0, low=1.0, high=SIZE / 2, aniso=(1.0, 1.0)):
    """Periodic fractal noise with a 1/f^beta spectrum, zero mean, unit std."""
    fy, fx = np.meshgrid(_FREQ * aniso[0], _FREQ * aniso[1], indexing="ij")
    f = np.sqrt(fx * fx + fy * fy)
    amp = np.where((f >= low) & (f <= high), 1.0 / np.maximum(f, 1e-6) ** (beta / 2), 0.0)
    spec = np.fft.fft2(rng.standard_normal((SIZE, SIZE))) * amp
    n = np.real(np.fft.ifft2(spec))
    return (n - n.mean()) / (n.std() + 1e-8)


def voronoi(rng, n_points, jitter=1.0):
    """Wrap-around Voronoi on a jittered grid: (distance to nearest, to second nearest, cell id)."""
    g = max(1, int(round(np.sqrt(n_points))))
    cell = SIZE / g
    pts = []
    for j in range(g):
        for i in range(g):
            pts.append(((j + 0.5 + jitter * (rng.random() - 0.5)) * cell, (i + 0.5 + jitter * (rng.random() - 0.5)) * cell))
    pts = np.array(pts)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    dy = np.abs(yy[..., None] - pts[:, 0])
    dx = np.abs(xx[..., None] - pts[:, 1])
    dy = np.minimum(dy, SIZE - dy)
    dx = np.minimum(dx, SIZE - dx)
    d = np.sqrt(dx * dx + dy * dy)
    order = np.argsort(d, axis=-1)
    f1 = np.take_along_axis(d, order[..., :1], -1)[..., 0]
    f2 = np.take_along_axis(d, order[..., 1:2], -1)[..., 0]
    return f1, f2, order[..., 0], cell


def hex_rgb(h):
    return np.array([int(h[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.float64) / 255.0


def mix(a, b, t):
    t = np.clip(t, 0.0, 1.0)[..., None]
    return a * (1 - t) + b * t


def shade(base, v):
    """base colour (3,) modulated by a scalar field v (around 1.0)."""
    return base[None, None, :] * v[..., None]


def smooth(x, e0, e1):
    t = np.clip((x - e0) / (e1 - e0), 0, 1)
    return t * t * (3 - 2 * t)


YY, XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)

# --------------------------------------------------------------------------------------------------
# Families: each has colour choices (name -> palette), scales, applicable wear, nouns, a renderer
# --------------------------------------------------------------------------------------------------


def r_brick(rng, pal, scale):
    rows = {"small": 8, "": 8 if rng.random() < 0.5 else 4, "large": 4}[scale]
    h = SIZE // rows
    w = 2 * h
    row = (YY // h).astype(int)
    off = (row % 2) * (w // 2)
    col = ((XX + off) // w).astype(int) % (SIZE // w)
    ids = row * 97 + col
    jit = rng.normal(0, 0.08, 97 * rows + 97)[ids]
    img = shade(pal[0], 1 + jit + 0.07 * fbm(rng, 1.5, low=4))
    mortar_w = 1 if h <= 8 else 2
    mortar = ((YY % h) < mortar_w) | (((XX + off) % w) < mortar_w)
    img[mortar] = pal[1] * (1 + 0.05 * rng.standard_normal(3))
    return img


def r_tiles(rng, pal, scale):
    n = {"small": 4, "": 2 if rng.random() < 0.5 else 4, "large": 2}[scale]
    s = SIZE // n
    ids = (YY // s).astype(int) * n + (XX // s).astype(int)
    jit = rng.normal(0, 0.06, n * n)[ids]
    img = shade(pal[0], 1 + jit + 0.08 * fbm(rng, 2.5, low=3))
    grout = ((YY % s) < 2) | ((XX % s) < 2)
    img[grout] = pal[1]
    # bevel: lighter top-left edge of each tile
    edge = ((YY % s) == 2) | ((XX % s) == 2)
    img[edge] = np.clip(img[edge] * 1.18, 0, 1)
    return img


def r_cobble(rng, pal, scale):
    n = {"small": 36, "": 16 if rng.random() < 0.5 else 25, "large": 9}[scale]
    f1, f2, cid, cell = voronoi(rng, n, 0.8)
    edge = (f2 - f1) / cell
    jit = rng.normal(0, 0.12, cid.max() + 1)[cid]
    dome = 1 - 0.6 * (f1 / cell) ** 2
    stone = shade(pal[0], (0.75 + 0.35 * dome + jit) * (1 + 0.06 * fbm(rng, 1.0, low=8)))
    return mix(shade(pal[1], np.ones_like(f1)), stone, smooth(edge, 0.04, 0.14))


def r_planks(rng, pal, scale):
    n = {"small": 8, "": 4, "large": 2}[scale]
    w = SIZE // n
    plank = (XX // w).astype(int)
    dist = fbm(rng, 3.0, low=1, aniso=(0.25, 2.0))
    k = rng.integers(6, 12)
    grain = np.sin(2 * np.pi * (XX * k / SIZE) + 2.5 * dist + plank * 1.7)
    jit = rng.normal(0, 0.07, n)[plank]
    v = 0.92 + 0.1 * grain + jit + 0.04 * fbm(rng, 1.0, low=10, aniso=(0.2, 1.0))
    img = mix(shade(pal[0], v), shade(pal[1], v), 0.5 + 0.5 * grain * 0.6)
    seam = (XX % w) < 1
    img[seam] *= 0.45
    # plank ends at staggered heights
    for p in range(n):
        y0 = int(rng.integers(0, SIZE))
        img[y0, p * w : (p + 1) * w] *= 0.5
    return img


def r_grass(rng, pal, scale):
    a = fbm(rng, 1.2, low=6, aniso=(0.15, 1.0))  # tall streaks
    b = fbm(rng, 2.0, low=1, high=8)
    t = 0.5 + 0.25 * a + 0.15 * b
    return mix(shade(pal[1], np.ones_like(a)), shade(pal[0], 1 + 0.15 * a), t)


def r_dirt(rng, pal, scale):
    v = 1 + 0.18 * fbm(rng, 2.2, low=1) + 0.08 * fbm(rng, 0.5, low=16)
    img = shade(pal[0], v)
    k = {"small": 80, "": 40, "large": 18}[scale]
    for _ in range(k):
        y, x = rng.integers(0, SIZE, 2)
        r = rng.uniform(0.8, 2.2 if scale != "small" else 1.4)
        d2 = np.minimum(np.abs(YY - y), SIZE - np.abs(YY - y)) ** 2 + np.minimum(np.abs(XX - x), SIZE - np.abs(XX - x)) ** 2
        m = d2 < r * r
        img[m] = pal[1] * rng.uniform(0.8, 1.2)
    return img


def r_sand(rng, pal, scale):
    ky = rng.integers(3, 7) * (2 if scale == "small" else 1)
    kx = rng.integers(-2, 3)
    phase = 2 * np.pi * (ky * YY + kx * XX) / SIZE + 1.8 * fbm(rng, 3.0, low=1, high=6)
    ripple = np.sin(phase)
    v = 1 + 0.09 * ripple + 0.05 * fbm(rng, 0.3, low=16)
    return mix(shade(pal[0], v), shade(pal[1], v), 0.5 - 0.5 * ripple)


def r_water(rng, pal, scale):
    n1 = fbm(rng, 2.5, low=2, high=12)
    n2 = fbm(rng, 2.5, low=2, high=12)
    caustic = np.exp(-6 * np.abs(n1)) + 0.6 * np.exp(-6 * np.abs(n2))
    deep = fbm(rng, 3.0, low=1, high=4)
    base = mix(shade(pal[0], np.ones_like(n1)), shade(pal[1], np.ones_like(n1)), 0.5 + 0.3 * deep)
    return base + 0.35 * caustic[..., None] * np.array([0.7, 0.9, 1.0])


def r_lava(rng, pal, scale):
    f1, f2, cid, cell = voronoi(rng, {"small": 25, "": 12, "large": 6}[scale], 1.0)
    crack = 1 - smooth((f2 - f1) / cell, 0.02, 0.25)
    heat = np.clip(crack + 0.35 * fbm(rng, 2.0, low=2) * crack, 0, 1.3)
    crust = shade(pal[1], 1 + 0.25 * fbm(rng, 1.5, low=4))
    glow = mix(shade(pal[0], np.ones_like(heat)), shade(np.array([1.0, 0.92, 0.35]), np.ones_like(heat)), heat - 0.4)
    return mix(crust, glow, smooth(heat, 0.25, 0.7))


def r_snow(rng, pal, scale):
    v = 0.5 + 0.5 * np.tanh(1.2 * fbm(rng, 3.0, low=1, high=10))
    img = mix(shade(pal[1], np.ones_like(v)), shade(pal[0], np.ones_like(v)), v)
    sparkle = rng.random((SIZE, SIZE)) > 0.985
    img[sparkle] = 1.0
    return img + 0.02 * fbm(rng, 0.0, low=20)[..., None]


def r_metal(rng, pal, scale):
    n = {"small": 4, "": 2, "large": 1}[scale]
    s = SIZE // n
    brushed = fbm(rng, 1.0, low=8, aniso=(0.05, 1.0))
    ids = (YY // s).astype(int) * n + (XX // s).astype(int)
    jit = rng.normal(0, 0.05, n * n)[ids]
    img = shade(pal[0], 1 + 0.06 * brushed + jit + 0.1 * (1 - (YY % s) / s))
    seam = ((YY % s) < 1) | ((XX % s) < 1)
    img[seam] = pal[1]
    inset = 4 if s >= 32 else 3
    for cy in (inset, s - inset - 1):
        for cx in (inset, s - inset - 1):
            yy = (YY % s) - cy
            xx = (XX % s) - cx
            d2 = yy * yy + xx * xx
            rivet = d2 <= 2.5
            img[rivet] = pal[0] * 1.35
            img[(d2 <= 3.5) & ~rivet & (yy + xx > 0)] = pal[1]
    return img


def r_rust(rng, pal, scale):
    base = shade(pal[1], 1 + 0.08 * fbm(rng, 1.0, low=8))
    r = fbm(rng, 2.0, low=1, high=16)
    t = smooth(r, -0.4, 0.5)
    rust = shade(pal[0], 1 + 0.25 * fbm(rng, 0.8, low=6))
    pits = (fbm(rng, 0.2, low=20) > 2.0) & (t > 0.5)
    img = mix(base, rust, t)
    img[pits] *= 0.4
    return img


def r_fabric(rng, pal, scale):
    p = {"small": 2, "": 4 if rng.random() < 0.5 else 2, "large": 8}[scale]
    warp = ((XX // p) + (YY // p)) % 2 == 0
    tx = 0.85 + 0.15 * np.cos(np.pi * (YY % p) / p * 2) ** 2
    ty = 0.85 + 0.15 * np.cos(np.pi * (XX % p) / p * 2) ** 2
    v = np.where(warp, tx, ty) * (1 + 0.04 * fbm(rng, 1.0, low=4))
    return mix(shade(pal[0], v), shade(pal[1], v), np.where(warp, 0.0, 0.35))


def r_roof(rng, pal, scale):
    rows = {"small": 8, "": 4 if rng.random() < 0.5 else 8, "large": 4}[scale]
    h = SIZE // rows
    w = h * 2
    row = (YY // h).astype(int)
    off = (row % 2) * (w // 2)
    u = ((XX + off) % w) / w - 0.5
    v = (YY % h) / h
    lower = 1 - (2 * u) ** 2  # rounded lower edge of each tile
    inside = v < 0.55 + 0.45 * lower
    col = ((XX + off) // w).astype(int) % (SIZE // w)
    jit = rng.normal(0, 0.07, rows * 97 + 97)[row * 97 + col]
    shading = 0.7 + 0.45 * v + jit + 0.06 * fbm(rng, 1.5, low=4)
    img = shade(pal[0], shading)
    img[~inside] = pal[1]
    return img


def r_marble(rng, pal, scale):
    k = rng.integers(1, 4)
    d = fbm(rng, 3.0, low=1, high=5)
    vein = np.abs(np.sin(np.pi * k * (XX + YY) / SIZE + 1.6 * d))
    vein = np.exp(-vein * 7) + 0.3 * np.exp(-np.abs(fbm(rng, 3.0, low=1, high=8)) * 9)
    v = 1 + 0.04 * fbm(rng, 2.0, low=2)
    return mix(shade(pal[0], v), shade(pal[1], np.ones_like(v)), vein * 0.9)


def r_moss(rng, pal, scale):
    a = fbm(rng, 0.8, low=10)  # fuzzy fine detail
    b = fbm(rng, 2.4, low=1, high=10)
    t = 0.5 + 0.28 * b + 0.18 * a
    return mix(shade(pal[1], np.ones_like(a)), shade(pal[0], 1 + 0.1 * a), t)


@dataclass
class Family:
    key: str
    nouns: list
    colours: dict  # word -> (primary hex, secondary hex); word "" = unnamed default
    wears: list
    render: object
    scales: tuple = ("", "small", "large")


FAMILIES = [
    Family("brick", ["brick wall", "bricks", "brickwork"],
           {"red": ("9c3b26", "c8c0b0"), "brown": ("6e4630", "b9ae9a"), "yellow": ("c9a25a", "8a8478"), "grey": ("777370", "cfcac0")},
           ["mossy", "weathered", "cracked", "dirty", ""], r_brick),
    Family("tiles", ["stone tiles", "floor tiles", "tiled floor"],
           {"grey": ("8d8c88", "3e3c3a"), "beige": ("c8b89a", "5a5044"), "slate": ("4a5058", "1e2024"), "white": ("dcdad4", "7a7874")},
           ["cracked", "dirty", "mossy", ""], r_tiles),
    Family("cobblestone", ["cobblestone", "cobblestone path", "cobbled street"],
           {"grey": ("8a8782", "2e2c2a"), "brown": ("8a7056", "3a2c20"), "dark": ("55524e", "1a1918"), "sandy": ("b8a584", "5c5040")},
           ["mossy", "wet", "dirty", ""], r_cobble),
    Family("planks", ["wood planks", "wooden floor", "planks"],
           {"oak": ("9a6a3c", "6e4624"), "pine": ("d2aa6e", "a87c44"), "walnut": ("5a3a22", "3a2414"), "birch": ("dcc8a0", "b8a07a")},
           ["weathered", "dirty", "wet", ""], r_planks),
    Family("grass", ["grass", "lawn", "grass field"],
           {"green": ("4f9a2a", "2a5c18"), "lush": ("3cb43a", "1c6420"), "dry": ("a8a448", "6a6a2c"), "dark": ("2e6a24", "163a12")},
           ["", "wet"], r_grass),
    Family("dirt", ["dirt", "soil", "mud ground"],
           {"brown": ("6a4a30", "3a2818"), "dark": ("3e2c20", "1e140c"), "red": ("8a4a2e", "4a2414"), "dry": ("9a8062", "5a4a38")},
           ["wet", "", "rocky"], r_dirt),
    Family("sand", ["sand", "desert sand", "beach sand"],
           {"golden": ("dcbc7c", "b89858"), "white": ("ece2c8", "cbbd9c"), "red": ("d08a5a", "a8643a"), "grey": ("b4ada0", "8c867a")},
           ["", "wet"], r_sand),
    Family("water", ["water", "water surface", "pool water"],
           {"blue": ("1c5aa0", "0c2c60"), "teal": ("1a8a8a", "0a4448"), "deep": ("0e2c5c", "06142c"), "green": ("2a7a5a", "0e3a2a")},
           ["", "murky"], r_water),
    Family("lava", ["lava", "molten lava", "magma"],
           {"orange": ("ff6a10", "2a1410"), "red": ("e8200c", "24100c"), "yellow": ("ffb020", "302014")},
           ["", "cooling"], r_lava),
    Family("snow", ["snow", "fresh snow", "snow field"],
           {"white": ("f4f6fa", "b4c4dc"), "blue": ("e0eaf8", "90a8d0"), "grey": ("e8e8e8", "a8acb0")},
           ["", "dirty"], r_snow),
    Family("metal", ["metal plates", "steel plate", "metal floor"],
           {"steel": ("9aa0a8", "3a3e44"), "iron": ("5e6268", "24262a"), "copper": ("b87848", "5a3418"), "brass": ("b8a050", "5a4c1c")},
           ["scratched", "dirty", ""], r_metal),
    Family("rust", ["rusty metal", "rusted iron", "corroded metal"],
           {"orange": ("b05a1e", "5a5450"), "brown": ("7a3e1a", "4a4642"), "red": ("9a3418", "606060")},
           ["", "heavily"], r_rust),
    Family("fabric", ["fabric", "woven cloth", "linen"],
           {"red": ("a82a2a", "6a1414"), "blue": ("2a4aa0", "142a6a"), "green": ("2a7a3a", "144a1e"), "beige": ("d4c4a0", "a89874")},
           ["", "worn"], r_fabric),
    Family("roof", ["roof tiles", "roof shingles", "clay roof"],
           {"terracotta": ("b8542a", "4a2010"), "slate": ("4e5460", "1a1c22"), "red": ("a02a1c", "3a0e08"), "green": ("3a6a48", "14281a")},
           ["mossy", "weathered", ""], r_roof),
    Family("marble", ["marble", "marble floor", "polished marble"],
           {"white": ("e8e6e2", "6a6a70"), "black": ("1e1e22", "d8d8d8"), "green": ("2a5a44", "d8e8dc"), "pink": ("e4c4c0", "8a5a5a")},
           ["", "cracked"], r_marble),
    Family("moss", ["moss", "moss carpet", "mossy ground"],
           {"green": ("4a6e1e", "1e320c"), "olive": ("6a7028", "2e3210"), "bright": ("6a9a28", "2a4a10")},
           ["", "wet"], r_moss),
]
FAMILY_KEYS = [f.key for f in FAMILIES]


# --------------------------------------------------------------------------------------------------
# Wear overlays
# --------------------------------------------------------------------------------------------------
def apply_wear(rng, img, wear):
    if wear == "mossy":
        m = smooth(fbm(rng, 2.2, low=1, high=12), 0.3, 1.0)
        moss = shade(np.array([0.30, 0.42, 0.12]), 1 + 0.2 * fbm(rng, 0.8, low=10))
        img = mix(img, moss, m * 0.85)
    elif wear == "cracked":
        f1, f2, _, cell = voronoi(rng, int(rng.integers(3, 8)), 1.0)
        crack = (f2 - f1) < 0.9 + 0.6 * fbm(rng, 1.0, low=6).clip(-1, 1)
        img = img.copy()
        img[crack] *= 0.35
    elif wear in ("weathered", "worn", "scratched"):
        v = 1 + 0.14 * fbm(rng, 1.2, low=3)
        grey = img.mean(-1, keepdims=True)
        img = (0.7 * img + 0.3 * grey) * v[..., None] * 1.05
        if wear == "scratched":
            s = fbm(rng, 1.0, low=10, aniso=(1.0, 0.08)) > 1.8
            img[s] = np.clip(img[s] * 1.5, 0, 1)
    elif wear in ("dirty", "murky"):
        m = smooth(fbm(rng, 2.0, low=1, high=10), -0.2, 1.2)
        img = mix(img, shade(np.array([0.25, 0.2, 0.14]), np.ones(img.shape[:2])), m * 0.55)
    elif wear == "wet":
        img = np.clip(img * 0.72, 0, 1) ** 1.15
        spec = fbm(rng, 2.0, low=2) > 1.3
        img[spec] = np.clip(img[spec] + 0.18, 0, 1)
    elif wear in ("heavily", "cooling", "rocky"):
        pass  # handled by stronger parameters below (caption only changes the mix)
    return img


@dataclass
class Sample:
    image: np.ndarray  # (SIZE, SIZE, 3) uint8
    caption: str
    family: int


def caption_choices(fam: Family):
    """Every caption the grammar can make for a family, as (caption, colour, wear, scale, noun)."""
    out = []
    for colour in fam.colours:
        for wear in fam.wears:
            for scale in fam.scales:
                for noun in fam.nouns:
                    words = [scale, wear if wear != "heavily" else "heavily rusted", colour, noun]
                    if wear == "heavily":
                        words = [scale, "heavily rusted", colour, "metal"] if noun == "rusty metal" else words
                    cap = " ".join(w for w in words if w)
                    out.append((cap, colour, wear, scale, noun))
    return out


def held_out(caption: str) -> bool:
    """~12 % of captions never appear in training; evaluation prompts come from them."""
    return hashlib.sha1(caption.encode()).digest()[0] < 31


def render(fam_index: int, colour: str, wear: str, scale: str, seed: int) -> np.ndarray:
    fam = FAMILIES[fam_index]
    rng = np.random.default_rng(seed)
    pal = [hex_rgb(h) for h in fam.colours[colour]]
    # colour jitter, so one word covers a neighbourhood of colours
    pal = [np.clip(p * rng.uniform(0.9, 1.1) + rng.normal(0, 0.025, 3), 0, 1) for p in pal]
    img = fam.render(rng, pal, scale)
    if fam.key == "rust" and wear == "heavily":
        img = mix(img, shade(pal[0], 1 + 0.2 * fbm(rng, 1.0, low=4)), np.full(img.shape[:2], 0.55))
    if fam.key == "lava" and wear == "cooling":
        img = mix(img, shade(pal[1], np.ones(img.shape[:2])), np.full(img.shape[:2], 0.45))
    if fam.key == "dirt" and wear == "rocky":
        f1, f2, _, cell = voronoi(rng, 9, 1.0)
        rock = f1 / cell < 0.28
        img[rock] = np.array([0.45, 0.43, 0.4]) * (1 + 0.1 * rng.standard_normal())
    img = apply_wear(rng, img, wear)
    img = img * rng.uniform(0.93, 1.07)  # exposure
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def sample(index: int, seed: int = 0, split: str = "train") -> Sample:
    """Sample `index` of a split: 'train' never uses a held-out caption, 'eval' only uses them."""
    rng = np.random.default_rng([seed, index, 0 if split == "train" else 1])
    fam_index = index % len(FAMILIES)
    fam = FAMILIES[fam_index]
    choices = [c for c in caption_choices(fam) if held_out(c[0]) == (split == "eval")]
    cap, colour, wear, scale, _ = choices[rng.integers(len(choices))]
    img = render(fam_index, colour, wear, scale, int(rng.integers(2**31)))
    return Sample(img, cap, fam_index)


def contact_sheet(images, cols):
    from PIL import Image

    rows = (len(images) + cols - 1) // cols
    h, w = images[0].shape[:2]
    sheet = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = im[..., :3]
    return Image.fromarray(sheet)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-family", type=int, default=8)
    ap.add_argument("--sheet", default="/tmp/texture_sheet.png")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    imgs = []
    for j in range(a.per_family):
        for f in range(len(FAMILIES)):
            s = sample(j * len(FAMILIES) + f, a.seed)
            imgs.append(s.image)
    # one row per family
    order = [j * len(FAMILIES) + f for f in range(len(FAMILIES)) for j in range(a.per_family)]
    contact_sheet([imgs[i] for i in order], a.per_family).save(a.sheet)
    for f in FAMILIES:
        caps = caption_choices(f)
        print(f"{f.key:12s} captions {len(caps):4d} held out {sum(held_out(c[0]) for c in caps):3d}")
    print("sheet:", a.sheet)


if __name__ == "__main__":
    main()
