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
    use super::{NoiseRng, NoiseSource, RecordedNoise};

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
}
