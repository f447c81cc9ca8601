//! The factors of one adapted layer and the weight delta they make.
//!
//! - LoRA and LoCon: delta = up · down.
//! - LoHa (LyCORIS): delta = (w1_a · w1_b) ⊙ (w2_a · w2_b), element by element.
//! - LoKr (LyCORIS): delta = w1 ⊗ w2 (Kronecker product), each factor stored
//!   whole or as a product a · b.
//!
//! A convolution's trailing dimensions (in × kh × kw) are flattened, so every
//! delta is an `[out, in·kh·kw]` matrix in PyTorch's weight order; for LoKr
//! that is the 4-D Kronecker product of `w1[a, c, 1, 1]` and `w2[b, d, kh, kw]`
//! reshaped, as LyCORIS and PEFT build it. The shapes are checked when the file
//! is read ([`super::format`]), so computing a delta cannot fail.
use ndarray::{Array2, ArrayView2};

use super::format::F32Tensor;

/// DoRA (weight-decomposed LoRA): after the merge each output row of the
/// weight is rescaled to this magnitude, `W' = m ⊙ V / ‖V‖` row by row.
#[derive(Debug, Clone, PartialEq)]
pub struct Magnitude {
    /// One value per output row.
    pub values: Vec<f32>,
    /// How the LoRA's strength enters.
    pub strength: DoraStrength,
}

/// How a DoRA module's strength `s` enters, as each file layout's home
/// implementation does it (they agree at `s = 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoraStrength {
    /// diffusers/PEFT (`fuse_lora(lora_scale=s)`): `V = W + s·Δ`, the norm
    /// taken of the base weight plus this module's delta, and the rows of the
    /// weight so far (with earlier modules merged) plus `s·Δ` rescaled.
    InNorm,
    /// AUTOMATIC1111 and ComfyUI (kohya/LyCORIS files): the DoRA weight
    /// `m ⊙ (W + Δ) / ‖W + Δ‖` is computed at full strength and
    /// `s · (DoRA weight − W)` added, so `s = 0` is off.
    Interpolate,
}

/// One Kronecker factor of a LoKr layer.
#[derive(Debug, Clone)]
pub enum KronFactor {
    /// Stored whole (`lokr_w1`, `lokr_w2`).
    Whole(F32Tensor),
    /// Stored as `a · b` (`lokr_w1_a`/`lokr_w1_b`, `lokr_w2_a`/`lokr_w2_b`).
    Product(F32Tensor, F32Tensor),
}

impl KronFactor {
    /// Rows of the factor's matrix.
    pub fn rows(&self) -> usize {
        match self {
            Self::Whole(w) => w.shape[0],
            Self::Product(a, _) => a.shape[0],
        }
    }

    /// Columns of the factor's matrix (trailing dimensions flattened).
    pub fn cols(&self) -> usize {
        match self {
            Self::Whole(w) => w.shape[1..].iter().product(),
            Self::Product(_, b) => b.shape[1..].iter().product(),
        }
    }

    /// The rank of a product, `None` for a whole factor.
    pub fn rank(&self) -> Option<usize> {
        match self {
            Self::Whole(_) => None,
            Self::Product(a, _) => Some(a.shape[1]),
        }
    }

    /// The convolution kernel the factor carries, if it is 4-D.
    pub fn kernel(&self) -> Option<&[usize]> {
        let t = match self {
            Self::Whole(w) => w,
            Self::Product(_, b) => b,
        };
        (t.shape.len() == 4).then(|| &t.shape[2..])
    }

    fn matrix(&self) -> Array2<f32> {
        match self {
            Self::Whole(w) => view(w).to_owned(),
            Self::Product(a, b) => view(a).dot(&view(b)),
        }
    }

    fn describe(&self, name: &str) -> String {
        match self {
            Self::Whole(w) => format!("{name} {:?}", w.shape),
            Self::Product(a, b) => format!("{name}_a {:?} · {name}_b {:?}", a.shape, b.shape),
        }
    }
}

/// How a layer's delta is stored.
#[derive(Debug, Clone)]
pub enum Factors {
    /// LoRA/LoCon.
    LowRank {
        /// `[rank, in]` or `[rank, in, kh, kw]`.
        down: F32Tensor,
        /// `[out, rank]` or `[out, rank, 1, 1]`.
        up: F32Tensor,
    },
    /// LoHa: `(w1_a · w1_b) ⊙ (w2_a · w2_b)`.
    Hadamard {
        /// `[out, rank]`.
        w1_a: F32Tensor,
        /// `[rank, in·kh·kw]` or `[rank, in, kh, kw]`.
        w1_b: F32Tensor,
        /// `[out, rank]`.
        w2_a: F32Tensor,
        /// As `w1_b`.
        w2_b: F32Tensor,
    },
    /// LoKr: `w1 ⊗ w2`.
    Kronecker {
        /// `[a, c]`: the coarse factor.
        w1: KronFactor,
        /// `[b, d]` or `[b, d, kh, kw]` (flattened `[b, d·kh·kw]` as a product).
        w2: KronFactor,
    },
}

/// A tensor as a matrix: first dimension × the rest.
fn view(t: &F32Tensor) -> ArrayView2<'_, f32> {
    let rows = t.shape.first().copied().unwrap_or(1);
    let cols = t.data.len().checked_div(rows).unwrap_or(0);
    ArrayView2::from_shape((rows, cols), &t.data).expect("tensor data matches its shape (checked on read)")
}

impl Factors {
    /// The adapter type, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::LowRank { .. } => "LoRA",
            Self::Hadamard { .. } => "LoHa",
            Self::Kronecker { .. } => "LoKr",
        }
    }

    /// Output features of the delta.
    pub fn out_features(&self) -> usize {
        match self {
            Self::LowRank { up, .. } => up.shape[0],
            Self::Hadamard { w1_a, .. } => w1_a.shape[0],
            Self::Kronecker { w1, w2 } => w1.rows().saturating_mul(w2.rows()),
        }
    }

    /// Input features of the delta, times the kernel size for a convolution.
    pub fn in_features(&self) -> usize {
        match self {
            Self::LowRank { down, .. } => down.shape[1..].iter().product(),
            Self::Hadamard { w1_b, .. } => w1_b.shape[1..].iter().product(),
            Self::Kronecker { w1, w2 } => w1.cols().saturating_mul(w2.cols()),
        }
    }

    /// The convolution kernel the file states, when a factor is 4-D.
    pub fn kernel(&self) -> Option<&[usize]> {
        match self {
            Self::LowRank { down, .. } => (down.shape.len() == 4).then(|| &down.shape[2..]),
            Self::Hadamard { w1_b, .. } => (w1_b.shape.len() == 4).then(|| &w1_b.shape[2..]),
            Self::Kronecker { w2, .. } => w2.kernel(),
        }
    }

    /// The rank alpha is divided by: LoRA's and LoHa's inner dimension, LoKr's
    /// decomposed factor's (w2's if both are); `None` for a LoKr with both
    /// factors whole, which LyCORIS applies unscaled.
    pub fn rank(&self) -> Option<usize> {
        match self {
            Self::LowRank { down, .. } => Some(down.shape[0]),
            Self::Hadamard { w1_b, .. } => Some(w1_b.shape[0]),
            Self::Kronecker { w1, w2 } => w2.rank().or(w1.rank()),
        }
    }

    /// The tensors' shapes, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::LowRank { down, up } => format!("down {:?}, up {:?}", down.shape, up.shape),
            Self::Hadamard { w1_a, w1_b, w2_a, w2_b } => {
                format!("w1_a {:?} · w1_b {:?} ⊙ w2_a {:?} · w2_b {:?}", w1_a.shape, w1_b.shape, w2_a.shape, w2_b.shape)
            }
            Self::Kronecker { w1, w2 } => format!("{} ⊗ {}", w1.describe("w1"), w2.describe("w2")),
        }
    }

    /// The unscaled delta, `[out, in·kh·kw]`.
    pub fn delta(&self) -> Array2<f32> {
        match self {
            Self::LowRank { down, up } => view(up).dot(&view(down)),
            Self::Hadamard { w1_a, w1_b, w2_a, w2_b } => {
                let mut d = view(w1_a).dot(&view(w1_b));
                d *= &view(w2_a).dot(&view(w2_b));
                d
            }
            Self::Kronecker { w1, w2 } => kron(&w1.matrix(), &w2.matrix()),
        }
    }
}

/// The Kronecker product: `out[i·p + k, j·q + l] = a[i, j] · b[k, l]`.
fn kron(a: &Array2<f32>, b: &Array2<f32>) -> Array2<f32> {
    let ((m, n), (p, q)) = (a.dim(), b.dim());
    let mut out = Array2::zeros((m * p, n * q));
    for i in 0..m {
        for j in 0..n {
            let s = a[[i, j]];
            out.slice_mut(ndarray::s![i * p..(i + 1) * p, j * q..(j + 1) * q]).assign(&(b * s));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], data: Vec<f32>) -> F32Tensor {
        assert_eq!(shape.iter().product::<usize>(), data.len());
        F32Tensor { shape: shape.to_vec(), data }
    }

    fn seq(n: usize, start: f32) -> Vec<f32> {
        (0..n).map(|i| start + 0.25 * i as f32).collect()
    }

    /// LoHa against the element-wise definition, written out.
    #[test]
    fn loha_is_the_hadamard_product_of_two_low_rank_products() {
        let (out, inn, r) = (3, 4, 2);
        let (w1_a, w1_b, w2_a, w2_b) = (seq(out * r, -1.0), seq(r * inn, 0.5), seq(out * r, 0.1), seq(r * inn, -0.7));
        let f = Factors::Hadamard {
            w1_a: t(&[out, r], w1_a.clone()),
            w1_b: t(&[r, inn], w1_b.clone()),
            w2_a: t(&[out, r], w2_a.clone()),
            w2_b: t(&[r, inn], w2_b.clone()),
        };
        let d = f.delta();
        for o in 0..out {
            for i in 0..inn {
                let p1: f32 = (0..r).map(|k| w1_a[o * r + k] * w1_b[k * inn + i]).sum();
                let p2: f32 = (0..r).map(|k| w2_a[o * r + k] * w2_b[k * inn + i]).sum();
                assert!((d[[o, i]] - p1 * p2).abs() < 1e-6, "[{o}, {i}]");
            }
        }
        assert_eq!((f.out_features(), f.in_features(), f.rank()), (out, inn, Some(r)));
    }

    /// LoKr on a convolution: the flattened 2-D product equals the 4-D
    /// Kronecker product of w1[a, c, 1, 1] and w2[b, d, kh, kw] (how LyCORIS
    /// builds it), and w2 = w2_a · w2_b.
    #[test]
    fn lokr_is_the_kronecker_product_in_pytorch_weight_order() {
        let (a, c, b, d, kh, kw, r) = (2, 3, 2, 2, 3, 1, 2);
        let w1 = seq(a * c, -0.5);
        let (w2_a, w2_b) = (seq(b * r, 0.3), seq(r * d * kh * kw, -0.2));
        let f = Factors::Kronecker {
            w1: KronFactor::Whole(t(&[a, c], w1.clone())),
            w2: KronFactor::Product(t(&[b, r], w2_a.clone()), t(&[r, d, kh, kw], w2_b.clone())),
        };
        assert_eq!((f.out_features(), f.in_features(), f.kernel(), f.rank()), (a * b, c * d * kh * kw, Some(&[kh, kw][..]), Some(r)));
        let dm = f.delta();
        let w2 = |bi: usize, di: usize, y: usize, x: usize| -> f32 { (0..r).map(|k| w2_a[bi * r + k] * w2_b[((k * d + di) * kh + y) * kw + x]).sum() };
        for ai in 0..a {
            for bi in 0..b {
                for ci in 0..c {
                    for di in 0..d {
                        for y in 0..kh {
                            for x in 0..kw {
                                let (o, i) = (ai * b + bi, ((ci * d + di) * kh + y) * kw + x);
                                let want = w1[ai * c + ci] * w2(bi, di, y, x);
                                assert!((dm[[o, i]] - want).abs() < 1e-6, "[{o}, {i}]: {} vs {want}", dm[[o, i]]);
                            }
                        }
                    }
                }
            }
        }
        let whole = Factors::Kronecker { w1: KronFactor::Whole(t(&[1, 1], vec![2.0])), w2: KronFactor::Whole(t(&[1, 2], vec![1.0, 3.0])) };
        assert_eq!(whole.rank(), None, "both whole: no rank, applied unscaled");
        assert_eq!(whole.delta().into_raw_vec_and_offset().0, vec![2.0, 6.0]);
    }
}
