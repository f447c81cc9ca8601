//! Seeded noise: Kiln's portable stream (the default), or PyTorch's CPU or
//! CUDA generator for seeds that give the images diffusers, ComfyUI and
//! AUTOMATIC1111 give.
//!
//! Kiln's portable noise: the same seed gives the same latents on every
//! platform, build and execution provider.
//!
//! Algorithm (documented so other tools can reproduce it):
//! 1. The 64-bit seed is expanded by SplitMix64 into the four words of a
//!    xoshiro256** generator.
//! 2. Each uniform double is `(next_u64() >> 11) * 2^-53`.
//! 3. Normals come in pairs by Box–Muller: `u1 = 1 - uniform()` (in (0, 1]),
//!    `u2 = uniform()`, `r = sqrt(-2 ln u1)`, `z0 = r cos(2π u2)`,
//!    `z1 = r sin(2π u2)`, computed in f64 with the pure-Rust `libm` (so no
//!    platform math library is involved), then rounded to f32.
//! 4. Latents are filled in NCHW order.
//!
//! Stochastic schedulers (`euler_a`, `dpmpp_2m_sde`, `lcm`) draw their per-step
//! noise from the same stream: after the initial latents, each draw takes the
//! next `C·H·W` normals, again in NCHW order. When the caller gives the initial
//! latents, the stream starts at the seed with no initial draw. For exact
//! replays (the parity tests use diffusers' recorded draws) a request can carry
//! the per-step noise itself ([`RecordedNoise`]).
//!
//! PyTorch's CPU generator ([`TorchCpuRng`], [`NoiseGenerator::TorchCpu`])
//! draws what `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))`
//! draws, one `randn` per draw, in the order diffusers' pipelines draw
//! (the pipeline keeps that order for every generator). PyTorch's CUDA
//! generator ([`TorchCudaRng`], [`NoiseGenerator::TorchCuda`]) draws what
//! `torch.randn(shape, device="cuda")` draws after `manual_seed(seed)`,
//! computed on the host.
use crate::error::{Error, Result};
use crate::scheduler::NoiseSource;

/// The seeded generator behind Kiln's initial noise (see the module docs).
pub struct NoiseRng {
    s: [u64; 4],
    spare: Option<f64>,
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl NoiseRng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [splitmix64(&mut sm), splitmix64(&mut sm), splitmix64(&mut sm), splitmix64(&mut sm)];
        Self { s, spare: None }
    }

    /// Next raw 64-bit output (xoshiro256**).
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        let r = libm::sqrt(-2.0 * libm::log(u1));
        let theta = 2.0 * std::f64::consts::PI * u2;
        self.spare = Some(r * libm::sin(theta));
        r * libm::cos(theta)
    }

    /// `count` standard normals as f32.
    pub fn normals(&mut self, count: usize) -> Vec<f32> {
        (0..count).map(|_| self.normal() as f32).collect()
    }
}

impl NoiseSource for NoiseRng {
    fn fill_normals(&mut self, out: &mut [f32]) -> Result<()> {
        for v in out {
            *v = self.normal() as f32;
        }
        Ok(())
    }
}

/// Which seeded generator a request's noise comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoiseGenerator {
    /// Kiln's portable stream ([`NoiseRng`]): the same values on every
    /// platform, bit for bit.
    #[default]
    Kiln,
    /// PyTorch's CPU generator ([`TorchCpuRng`]): a seed gives the initial
    /// latents diffusers draws with `generator=torch.Generator("cpu").manual_seed(seed)`
    /// and ComfyUI draws for the same seed, and diffusers' per-step and
    /// posterior draws after them; only the seed's low 32 bits count, as in
    /// PyTorch. Values equal torch's on x86-64 to a few float ulps (its
    /// vector math library and `libm` round differently in the last bit).
    TorchCpu,
    /// PyTorch's CUDA generator ([`TorchCudaRng`]), computed on the host: a
    /// seed gives the initial latents AUTOMATIC1111 draws with its default
    /// ("GPU") random number source on an NVIDIA GPU, and diffusers with
    /// `generator=torch.Generator("cuda").manual_seed(seed)`, and diffusers'
    /// later draws; the whole 64-bit seed counts. Within a few 1e-6 of the
    /// GPU's values (CUDA's fast sine is not reproduced bit for bit).
    TorchCuda,
}

impl NoiseGenerator {
    /// Every generator, in [`NoiseGenerator::NAMES`]' order.
    pub const ALL: [Self; 3] = [Self::Kiln, Self::TorchCpu, Self::TorchCuda];
    /// Every generator's name.
    pub const NAMES: [&'static str; 3] = ["kiln", "torch", "torch_cuda"];

    /// The name the CLI, the bake manifest and the bindings use.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// The generator called `name` (see [`NoiseGenerator::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.name() == name)
    }
}

/// A request's seeded stream, of any generator.
pub(crate) enum SeededNoise {
    Kiln(NoiseRng),
    TorchCpu(TorchCpuRng),
    TorchCuda(TorchCudaRng),
}

impl SeededNoise {
    pub(crate) fn new(generator: NoiseGenerator, seed: u64) -> Self {
        match generator {
            NoiseGenerator::Kiln => Self::Kiln(NoiseRng::new(seed)),
            NoiseGenerator::TorchCpu => Self::TorchCpu(TorchCpuRng::new(seed)),
            NoiseGenerator::TorchCuda => Self::TorchCuda(TorchCudaRng::new(seed)),
        }
    }
}

impl NoiseSource for SeededNoise {
    fn fill_normals(&mut self, out: &mut [f32]) -> Result<()> {
        match self {
            Self::Kiln(r) => r.fill_normals(out),
            Self::TorchCpu(r) => r.fill_normals(out),
            Self::TorchCuda(r) => r.fill_normals(out),
        }
    }
}

/// A variation seed (`GenerateRequest::variation_strength` > 0): blends the
/// starting noise `noise` (latents `[1, C, H, W]`, drawn from the request's
/// seed) with one draw of the same generator seeded with
/// `variation_seed`, by [`variation_slerp`].
pub(crate) fn blend_variation(noise: &mut [f32], shape: &[usize], request: &super::GenerateRequest) -> Result<()> {
    if request.variation_strength <= 0.0 {
        return Ok(());
    }
    let mut other = vec![0.0f32; noise.len()];
    SeededNoise::new(request.noise, request.variation_seed).fill_normals(&mut other)?;
    variation_slerp(request.variation_strength, noise, &other, shape)
}

/// AUTOMATIC1111's blend of a seed's noise `low` with a variation seed's
/// `high` (its `slerp(val, low, high)`), in place on latents `[1, C, H, W]`:
/// it treats each channel's column (the values of one `x`, down the rows)
/// as a vector, normalises both, and interpolates spherically by the angle
/// between them, `sin((1 − val)ω)/sin ω · low + sin(val ω)/sin ω · high`.
/// When the columns' cosines average above 0.9995 it takes
/// `val · low + (1 − val) · high` instead, as A1111 does (weights as it
/// writes them). Computed in f64; a column whose angle is 0 takes the
/// limit, `(1 − val) · low + val · high`, where A1111 divides by zero.
pub fn variation_slerp(val: f32, low: &mut [f32], high: &[f32], shape: &[usize]) -> Result<()> {
    let &[1, channels, rows, cols] = shape else {
        return Err(Error::internal(format!("a variation blends latents [1, C, H, W]; got {shape:?}")));
    };
    if low.len() != channels * rows * cols || high.len() != low.len() {
        return Err(Error::internal("variation noise of another size than the latents"));
    }
    let at = |c: usize, y: usize, x: usize| (c * rows + y) * cols + x;
    let norm = |v: &[f32], c: usize, x: usize| (0..rows).map(|y| (v[at(c, y, x)] as f64).powi(2)).sum::<f64>().sqrt();
    let mut cosines = Vec::with_capacity(channels * cols);
    for c in 0..channels {
        for x in 0..cols {
            let (nl, nh) = (norm(low, c, x), norm(high, c, x));
            let dot: f64 = (0..rows).map(|y| (low[at(c, y, x)] as f64 / nl) * (high[at(c, y, x)] as f64 / nh)).sum();
            cosines.push(dot);
        }
    }
    let val = val as f64;
    if cosines.iter().sum::<f64>() / cosines.len() as f64 > 0.9995 {
        for (l, &h) in low.iter_mut().zip(high) {
            *l = (*l as f64 * val + h as f64 * (1.0 - val)) as f32;
        }
        return Ok(());
    }
    for c in 0..channels {
        for x in 0..cols {
            let omega = cosines[c * cols + x].clamp(-1.0, 1.0).acos();
            let (a, b) = match omega.sin() {
                s if s > 0.0 => (((1.0 - val) * omega).sin() / s, (val * omega).sin() / s),
                _ => (1.0 - val, val),
            };
            for y in 0..rows {
                let i = at(c, y, x);
                low[i] = (a * low[i] as f64 + b * high[i] as f64) as f32;
            }
        }
    }
    Ok(())
}

/// The fewest values one draw of PyTorch-compatible noise may have: torch
/// fills smaller float tensors by another algorithm, which Kiln does not copy.
pub(crate) const TORCH_MIN_DRAW: usize = 16;

/// PyTorch's CPU generator as `torch.randn` uses it for a contiguous float32
/// tensor of at least 16 values on x86-64 (its AVX2 and AVX-512 kernels):
///
/// 1. `manual_seed(seed)` seeds a standard MT19937 with the seed's low 32 bits.
/// 2. Every value of the tensor first gets a uniform float
///    `(next_u32() & 0xFFFFFF) · 2^-24`.
/// 3. Each whole block of 16 becomes normals by Box–Muller on its halves, in
///    float32: for j < 8, `u1 = 1 - d[j]`, `u2 = d[j+8]`,
///    `r = sqrt(-2 ln u1)`, `θ = f32(2π) · u2`, `d[j] = r cos θ`, `d[j+8] = r sin θ`.
/// 4. When the count is not a multiple of 16, the last 16 values are drawn
///    again as 16 fresh uniforms and transformed as one block (overwriting
///    the ones step 3 made there).
///
/// Torch's kernels on other CPUs (its scalar build, e.g. on ARM) form θ in
/// double and differ from these values by up to about 2e-6.
pub struct TorchCpuRng {
    mt: Mt19937,
}

impl TorchCpuRng {
    /// `torch.Generator("cpu").manual_seed(seed)`.
    pub fn new(seed: u64) -> Self {
        Self { mt: Mt19937::new(seed as u32) }
    }

    fn uniform(&mut self) -> f32 {
        (self.mt.next_u32() & 0xFF_FFFF) as f32 * (1.0 / 16_777_216.0)
    }
}

/// Box–Muller over one block of 16 uniforms, as torch's vector kernel does it.
fn torch_box_muller_16(d: &mut [f32]) {
    const TWO_PI: f32 = 2.0 * std::f32::consts::PI;
    for j in 0..8 {
        let u1 = 1.0 - d[j];
        let u2 = d[j + 8];
        let radius = libm::sqrtf(-2.0 * libm::logf(u1));
        let theta = TWO_PI * u2;
        d[j] = radius * libm::cosf(theta);
        d[j + 8] = radius * libm::sinf(theta);
    }
}

impl NoiseSource for TorchCpuRng {
    /// One `torch.randn` of `out.len()` values.
    fn fill_normals(&mut self, out: &mut [f32]) -> Result<()> {
        let n = out.len();
        if n < TORCH_MIN_DRAW {
            return Err(Error::invalid(format!(
                "PyTorch-compatible noise needs at least {TORCH_MIN_DRAW} values per draw; this one has {n} (torch draws fewer another way)"
            )));
        }
        for v in out.iter_mut() {
            *v = self.uniform();
        }
        for block in out.chunks_exact_mut(16) {
            torch_box_muller_16(block);
        }
        if n % 16 != 0 {
            let tail = &mut out[n - 16..];
            for v in tail.iter_mut() {
                *v = self.uniform();
            }
            torch_box_muller_16(tail);
        }
        Ok(())
    }
}

/// PyTorch's CUDA generator as `torch.randn(shape, device="cuda")` uses it
/// for a float32 tensor, computed on the host:
///
/// 1. `manual_seed(seed)` keys Philox-4x32-10 with the whole 64-bit seed
///    (low word first). The `k`-th `randn` since the seed (k = 0, 1, ...)
///    uses the counter offset `4k`.
/// 2. Value `i` of the tensor (in its contiguous order) is made by CUDA
///    thread `i`: Philox of the counter `(k, 0, i, 0)` gives four words
///    `x, y, z, w` (cuRAND's `curand_init(seed, i, 4k)` then
///    `curand_normal4`), and the value is the first of Box–Muller's pair on
///    `x, y`, in float32: `u = x·2^-32 + 2^-33`, `v = y·(2^-32·2π) + 2^-33·2π`,
///    `sqrt(-2 ln u) · sin v`.
///
/// Step 2's one-thread-per-value holds when the GPU runs at least as many
/// threads at once as the tensor has values (its multiprocessor count times
/// its threads per multiprocessor; torch then launches one thread per
/// value): 16,384 latents (SD 1.x at 512²) on every GPU with 11 or more
/// multiprocessors, 65,536 (SDXL at 1024²) on an RTX 3080 or 4070 but not
/// on an RTX 3060. AUTOMATIC1111's "NV" random source computes this stream
/// on any machine. On the GPU the sine is CUDA's fast `__sincosf`, which is
/// not reproduced bit for bit: values agree to a few 1e-6.
pub struct TorchCudaRng {
    key: [u32; 2],
    draws: u64,
}

impl TorchCudaRng {
    /// `torch.manual_seed(seed)` for the CUDA generator.
    pub fn new(seed: u64) -> Self {
        Self { key: [seed as u32, (seed >> 32) as u32], draws: 0 }
    }
}

/// Philox-4x32 with 10 rounds (Salmon et al., "Parallel random numbers: as
/// easy as 1, 2, 3"), as cuRAND's `curandStatePhilox4_32_10_t` runs it.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    const M0: u64 = 0xD251_1F53;
    const M1: u64 = 0xCD9E_8D57;
    const W0: u32 = 0x9E37_79B9;
    const W1: u32 = 0xBB67_AE85;
    let (mut c, mut k) = (counter, key);
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let p0 = M0 * c[0] as u64;
        let p1 = M1 * c[2] as u64;
        c = [(p1 >> 32) as u32 ^ c[1] ^ k[0], p1 as u32, (p0 >> 32) as u32 ^ c[3] ^ k[1], p0 as u32];
    }
    c
}

/// The first value of cuRAND's float Box–Muller pair on two words.
fn curand_box_muller_first(x: u32, y: u32) -> f32 {
    const TWO_POW32_INV: f32 = 2.328_306_4e-10; // 2^-32
    const TWO_POW32_INV_2PI: f32 = 2.328_306_4e-10 * 6.283_185_5;
    // nvcc contracts `a * b + c` into one fused multiply-add; `libm`'s is
    // the same on every platform.
    let u = libm::fmaf(x as f32, TWO_POW32_INV, TWO_POW32_INV / 2.0);
    let v = libm::fmaf(y as f32, TWO_POW32_INV_2PI, TWO_POW32_INV_2PI / 2.0);
    libm::sqrtf(-2.0 * libm::logf(u)) * libm::sinf(v)
}

impl NoiseSource for TorchCudaRng {
    /// One `torch.randn` of `out.len()` values on the device.
    fn fill_normals(&mut self, out: &mut [f32]) -> Result<()> {
        if out.len() > u32::MAX as usize {
            return Err(Error::invalid(format!("CUDA-compatible noise draws at most 2^32 values at once; this draw has {}", out.len())));
        }
        let counter_hi = [self.draws as u32, (self.draws >> 32) as u32];
        for (i, v) in out.iter_mut().enumerate() {
            let [x, y, _, _] = philox4x32_10([counter_hi[0], counter_hi[1], i as u32, 0], self.key);
            *v = curand_box_muller_first(x, y);
        }
        self.draws += 1;
        Ok(())
    }
}

/// The 32-bit Mersenne Twister (`std::mt19937`), which PyTorch's CPU
/// generator is.
struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            state[i] = 1_812_433_253u32.wrapping_mul(state[i - 1] ^ (state[i - 1] >> 30)).wrapping_add(i as u32);
        }
        Self { state, index: 624 }
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9D2C_5680;
        y ^= (y << 15) & 0xEFC6_0000;
        y ^ (y >> 18)
    }

    fn twist(&mut self) {
        for i in 0..624 {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7FFF_FFFF);
            let mut next = self.state[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                next ^= 0x9908_B0DF;
            }
            self.state[i] = next;
        }
        self.index = 0;
    }
}

/// Caller-given noise, handed out in order: the draws of a stochastic
/// scheduler replayed exactly (e.g. recorded from diffusers).
pub struct RecordedNoise<'a> {
    data: &'a [f32],
    used: usize,
}

impl<'a> RecordedNoise<'a> {
    /// Replays `data` from the start.
    pub fn new(data: &'a [f32]) -> Self {
        Self { data, used: 0 }
    }

    /// Values not handed out yet.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.used
    }
}

impl NoiseSource for RecordedNoise<'_> {
    fn fill_normals(&mut self, out: &mut [f32]) -> Result<()> {
        let end = self.used + out.len();
        if end > self.data.len() {
            return Err(Error::invalid(format!(
                "step noise ran out: the scheduler asked for values {}..{end} but only {} were given",
                self.used,
                self.data.len()
            )));
        }
        out.copy_from_slice(&self.data[self.used..end]);
        self.used = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{philox4x32_10, Mt19937, NoiseRng, NoiseSource, RecordedNoise, TorchCpuRng, TorchCudaRng};

    #[test]
    fn step_noise_continues_the_stream() {
        let all = NoiseRng::new(9).normals(3 * 16);
        let mut rng = NoiseRng::new(9);
        assert_eq!(rng.normals(16), all[..16]);
        let next = rng.draw(&[1, 2, 2, 4]).unwrap();
        assert_eq!(next.as_slice().unwrap(), &all[16..32]);
        let mut rec = RecordedNoise::new(&all[..20]);
        assert_eq!(rec.draw(&[16]).unwrap().as_slice().unwrap(), &all[..16]);
        assert_eq!(rec.remaining(), 4);
        assert!(rec.draw(&[16]).is_err());
    }

    #[test]
    fn same_seed_same_noise_and_known_values() {
        let a = NoiseRng::new(42).normals(1000);
        let b = NoiseRng::new(42).normals(1000);
        assert_eq!(a, b);
        assert_ne!(a, NoiseRng::new(43).normals(1000));
        let mean: f64 = a.iter().map(|&x| x as f64).sum::<f64>() / 1000.0;
        let var: f64 = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / 1000.0;
        assert!(mean.abs() < 0.1, "mean {mean}");
        assert!((var - 1.0).abs() < 0.1, "variance {var}");
        // Pinned so a change to the algorithm cannot go unnoticed.
        assert_eq!(NoiseRng::new(0).next_u64(), 0x99EC_5F36_CB75_F2B4);
    }

    #[test]
    fn mersenne_twister_gives_the_standard_sequence() {
        // The C++ standard's check: the 10000th output of a default-seeded
        // std::mt19937 (seed 5489) is 4123659995.
        let mut mt = Mt19937::new(5489);
        let last = (0..10_000).map(|_| mt.next_u32()).last();
        assert_eq!(last, Some(4_123_659_995));
    }

    #[test]
    fn torch_noise_uses_the_seeds_low_32_bits_and_redraws_a_partial_tail() {
        let mut a = vec![0.0f32; 40];
        let mut b = vec![0.0f32; 40];
        TorchCpuRng::new(5).fill_normals(&mut a).unwrap();
        TorchCpuRng::new((1 << 32) + 5).fill_normals(&mut b).unwrap();
        assert_eq!(a, b);
        // 40 = two blocks + 8: the first block is untouched by the tail's redraw.
        let mut c = vec![0.0f32; 32];
        TorchCpuRng::new(5).fill_normals(&mut c).unwrap();
        assert_eq!(a[..16], c[..16]);
        assert_ne!(a[24..32], c[24..32], "the last 16 are redrawn");
        let e = TorchCpuRng::new(5).fill_normals(&mut [0.0; 15]).unwrap_err();
        assert!(e.message().contains("at least 16"), "{}", e.message());
    }

    #[test]
    fn philox_gives_random123s_known_answers() {
        // Random123's kat_vectors for philox4x32_10.
        assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]);
        assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]);
        assert_eq!(
            philox4x32_10([0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344], [0xa409_3822, 0x299f_31d0]),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn cuda_noise_restarts_per_draw_at_the_next_offset_with_the_whole_seed() {
        let mut rng = TorchCudaRng::new(7);
        let (mut a, mut b, mut c) = (vec![0.0f32; 8], vec![0.0f32; 8], vec![0.0f32; 4]);
        rng.fill_normals(&mut a).unwrap();
        rng.fill_normals(&mut b).unwrap();
        TorchCudaRng::new(7).fill_normals(&mut c).unwrap();
        assert_eq!(a[..4], c[..], "value i depends on i and the draw, not on the draw's size");
        assert_ne!(a, b, "the second draw uses the next counter offset");
        TorchCudaRng::new((1 << 32) + 7).fill_normals(&mut c).unwrap();
        assert_ne!(a[..4], c[..], "the seed's high word keys the generator too");
    }

    #[test]
    fn generator_names_round_trip() {
        for (g, name) in super::NoiseGenerator::ALL.into_iter().zip(super::NoiseGenerator::NAMES) {
            assert_eq!((g.name(), super::NoiseGenerator::from_name(name)), (name, Some(g)));
        }
        assert_eq!(super::NoiseGenerator::from_name("numpy"), None);
    }
}
