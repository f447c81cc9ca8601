//! The factors of one adapted layer and the weight delta they make.
//!
//! - LoRA and LoCon: delta = up · down.
//! - LoHa (LyCORIS): delta = (w1_a · w1_b) ⊙ (w2_a · w2_b), element by element.
//! - LoKr (LyCORIS): delta = w1 ⊗ w2 (Kronecker product), each factor stored
//!   whole or as a product a · b.
//! - LyCORIS's `use_tucker` convolutions store a decomposed matrix as a core
//!   `[r1, r2, kh, kw]` and two modes instead of `a · b` (LoCon's
//!   `lora_mid`, LoHa's `hada_t1`/`hada_t2`, LoKr's `lokr_t2`).
//! - LyCORIS full (`algo=full`): the difference itself, `diff`, stored whole.
//!
//! A convolution's trailing dimensions (in × kh × kw) are flattened, so every
//! delta is an `[out, in·kh·kw]` matrix in PyTorch's weight order; for LoKr
//! that is the 4-D Kronecker product of `w1[a, c, 1, 1]` and `w2[b, d, kh, kw]`
//! reshaped, as LyCORIS and PEFT build it. The shapes are checked when the file
//! is read ([`super::format`]), so computing a delta cannot fail.
use ndarray::{Array2, ArrayView2, ArrayView3, Axis};

use super::format::F32Tensor;

/// DoRA (weight-decomposed LoRA): after the merge each output row (or each
/// input channel) of the weight is rescaled to this magnitude,
/// `W' = m ⊙ V / ‖V‖`.
#[derive(Debug, Clone, PartialEq)]
pub struct Magnitude {
    /// One value per output row or input channel, as `axis` says.
    pub values: Vec<f32>,
    /// How the LoRA's strength enters.
    pub strength: DoraStrength,
    /// What each value is the norm of.
    pub axis: DoraAxis,
}

/// What a DoRA magnitude's norms run over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoraAxis {
    /// Each output row (PEFT, kohya, LyCORIS's default `wd_on_out = True`).
    Output,
    /// Each input channel, over every output and kernel position (LyCORIS
    /// `wd_on_out = False`).
    Input,
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

/// A matrix stored as smaller factors: a LoRA pair, each half of a LoHa,
/// LoKr's decomposed factor.
#[derive(Debug, Clone)]
pub enum Decomposed {
    /// `a · b`: `a` `[rows, r]` (or `[rows, r, 1, 1]`), `b` `[r, cols]` or
    /// `[r, c, kh, kw]`.
    Product {
        /// The output side (`lora_up`, `hada_w1_a`, `lokr_w2_a`).
        a: F32Tensor,
        /// The input side (`lora_down`, `hada_w1_b`, `lokr_w2_b`).
        b: F32Tensor,
    },
    /// LyCORIS's Tucker form of a convolution (`use_tucker`):
    /// `m[o, (c, y, x)] = Σ_jk core[j, k, y, x] · a[j, o] · b[k, c]`.
    Tucker {
        /// `[r1, r2, kh, kw]` (`lora_mid`, `hada_t1`/`hada_t2`, `lokr_t2`).
        core: F32Tensor,
        /// `[r1, rows]`, the output mode (LoCon's `lora_up` is stored
        /// `[rows, r1, 1, 1]` and transposed when read).
        a: F32Tensor,
        /// `[r2, c]`, the input mode.
        b: F32Tensor,
    },
}

impl Decomposed {
    /// Rows of the matrix (outputs).
    pub fn rows(&self) -> usize {
        match self {
            Self::Product { a, .. } => a.shape[0],
            Self::Tucker { a, .. } => a.shape[1],
        }
    }

    /// Columns of the matrix: inputs times the kernel size.
    pub fn cols(&self) -> usize {
        match self {
            Self::Product { b, .. } => b.shape[1..].iter().product(),
            Self::Tucker { core, b, .. } => b.shape[1].saturating_mul(core.shape[2..].iter().product()),
        }
    }

    /// The rank alpha is divided by: the input side's inner dimension, as
    /// LyCORIS (`lora_dim`) and ComfyUI (`b.shape[0]`) take it.
    pub fn rank(&self) -> usize {
        match self {
            Self::Product { b, .. } | Self::Tucker { b, .. } => b.shape[0],
        }
    }

    /// The largest inner dimension (a Tucker core has two), which with the
    /// matrix's size bounds the work of [`Self::matrix`].
    pub fn widest_rank(&self) -> usize {
        match self {
            Self::Product { b, .. } => b.shape[0],
            Self::Tucker { core, .. } => core.shape[0].max(core.shape[1]),
        }
    }

    /// The convolution kernel, when the factors carry one.
    pub fn kernel(&self) -> Option<&[usize]> {
        let t = match self {
            Self::Product { b, .. } => b,
            Self::Tucker { core, .. } => core,
        };
        (t.shape.len() == 4).then(|| &t.shape[2..])
    }

    /// The `[rows, cols]` matrix.
    pub fn matrix(&self) -> Array2<f32> {
        match self {
            Self::Product { a, b } => view(a).dot(&view(b)),
            Self::Tucker { core, a, b } => {
                let (r1, r2) = (core.shape[0], core.shape[1]);
                let kk: usize = core.shape[2..].iter().product();
                let c = b.shape[1];
                let core = ArrayView3::from_shape((r1, r2, kk), &core.data).expect("core data matches its shape (checked on read)");
                let bt = view(b).reversed_axes();
                // Contract the input mode first: t[j, (c, q)] = Σ_k b[k, c] · core[j, k, q].
                let mut t = Array2::zeros((r1, c * kk));
                for j in 0..r1 {
                    let m = bt.dot(&core.index_axis(Axis(0), j));
                    t.row_mut(j).iter_mut().zip(m.iter()).for_each(|(d, s)| *d = *s);
                }
                view(a).reversed_axes().dot(&t)
            }
        }
    }

    /// The tensors' shapes, for messages: `names` are the output and input
    /// sides' names (and the core's).
    pub(crate) fn describe(&self, [a_name, b_name, core_name]: [&str; 3]) -> String {
        match self {
            Self::Product { a, b } => format!("{a_name} {:?} · {b_name} {:?}", a.shape, b.shape),
            Self::Tucker { core, a, b } => format!("{core_name} {:?} ×₁ {a_name}ᵀ {:?} ×₂ {b_name}ᵀ {:?}", core.shape, a.shape, b.shape),
        }
    }
}

/// One Kronecker factor of a LoKr layer.
#[derive(Debug, Clone)]
pub enum KronFactor {
    /// Stored whole (`lokr_w1`, `lokr_w2`).
    Whole(F32Tensor),
    /// Stored as `a · b` (`lokr_w1_a`/`lokr_w1_b`, `lokr_w2_a`/`lokr_w2_b`),
    /// or for w2 of a convolution as a Tucker core (`lokr_t2`).
    Decomposed(Decomposed),
}

impl KronFactor {
    /// Rows of the factor's matrix.
    pub fn rows(&self) -> usize {
        match self {
            Self::Whole(w) => w.shape[0],
            Self::Decomposed(d) => d.rows(),
        }
    }

    /// Columns of the factor's matrix (trailing dimensions flattened).
    pub fn cols(&self) -> usize {
        match self {
            Self::Whole(w) => w.shape[1..].iter().product(),
            Self::Decomposed(d) => d.cols(),
        }
    }

    /// The rank of a decomposed factor, `None` for a whole one.
    pub fn rank(&self) -> Option<usize> {
        match self {
            Self::Whole(_) => None,
            Self::Decomposed(d) => Some(d.rank()),
        }
    }

    /// The convolution kernel the factor carries, if it is 4-D.
    pub fn kernel(&self) -> Option<&[usize]> {
        match self {
            Self::Whole(w) => (w.shape.len() == 4).then(|| &w.shape[2..]),
            Self::Decomposed(d) => d.kernel(),
        }
    }

    fn matrix(&self) -> Array2<f32> {
        match self {
            Self::Whole(w) => view(w).to_owned(),
            Self::Decomposed(d) => d.matrix(),
        }
    }

    fn describe(&self, name: &str) -> String {
        match self {
            Self::Whole(w) => format!("lokr_{name} {:?}", w.shape),
            Self::Decomposed(d) => d.describe([&format!("lokr_{name}_a"), &format!("lokr_{name}_b"), "lokr_t2"]),
        }
    }
}

/// How a layer's delta is stored.
#[derive(Debug, Clone)]
pub enum Factors {
    /// LoRA/LoCon: `up · down` (`a` = up, `b` = down), or with a Tucker
    /// `lora_mid` core.
    LowRank(Decomposed),
    /// LoHa: the element-wise product of two decomposed matrices
    /// (`hada_w1_a · hada_w1_b ⊙ hada_w2_a · hada_w2_b`, or Tucker halves).
    Hadamard(Decomposed, Decomposed),
    /// LoKr: `w1 ⊗ w2`.
    Kronecker {
        /// `[a, c]`: the coarse factor.
        w1: KronFactor,
        /// `[b, d]` or `[b, d, kh, kw]` (flattened `[b, d·kh·kw]` as a product).
        w2: KronFactor,
    },
    /// LyCORIS full: the weight difference `diff`, `[out, in]` or
    /// `[out, in, kh, kw]`, applied unscaled by alpha (it has no rank).
    Full(F32Tensor),
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
            Self::LowRank(_) => "LoRA",
            Self::Hadamard(..) => "LoHa",
            Self::Kronecker { .. } => "LoKr",
            Self::Full(_) => "full diff",
        }
    }

    /// Output features of the delta.
    pub fn out_features(&self) -> usize {
        match self {
            Self::LowRank(d) | Self::Hadamard(d, _) => d.rows(),
            Self::Kronecker { w1, w2 } => w1.rows().saturating_mul(w2.rows()),
            Self::Full(d) => d.shape[0],
        }
    }

    /// Input features of the delta, times the kernel size for a convolution.
    pub fn in_features(&self) -> usize {
        match self {
            Self::LowRank(d) | Self::Hadamard(d, _) => d.cols(),
            Self::Kronecker { w1, w2 } => w1.cols().saturating_mul(w2.cols()),
            Self::Full(d) => d.shape[1..].iter().product(),
        }
    }

    /// The convolution kernel the file states, when a factor is 4-D.
    pub fn kernel(&self) -> Option<&[usize]> {
        match self {
            Self::LowRank(d) | Self::Hadamard(d, _) => d.kernel(),
            Self::Kronecker { w2, .. } => w2.kernel(),
            Self::Full(d) => (d.shape.len() == 4).then(|| &d.shape[2..]),
        }
    }

    /// The rank alpha is divided by: LoRA's and LoHa's inner dimension, LoKr's
    /// decomposed factor's (w2's if both are); `None` for a LoKr with both
    /// factors whole, which LyCORIS applies unscaled, and for a full diff.
    pub fn rank(&self) -> Option<usize> {
        match self {
            Self::LowRank(d) | Self::Hadamard(d, _) => Some(d.rank()),
            Self::Kronecker { w1, w2 } => w2.rank().or(w1.rank()),
            Self::Full(_) => None,
        }
    }

    /// The largest inner dimension of any decomposed part (0 when none is).
    pub fn widest_rank(&self) -> usize {
        let kron = |f: &KronFactor| match f {
            KronFactor::Whole(_) => 0,
            KronFactor::Decomposed(d) => d.widest_rank(),
        };
        match self {
            Self::LowRank(d) => d.widest_rank(),
            Self::Hadamard(d1, d2) => d1.widest_rank().max(d2.widest_rank()),
            Self::Kronecker { w1, w2 } => kron(w1).max(kron(w2)),
            Self::Full(_) => 0,
        }
    }

    /// The tensors' shapes, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::LowRank(d) => d.describe(["up", "down", "lora_mid"]),
            Self::Hadamard(d1, d2) => {
                format!("{} ⊙ {}", d1.describe(["w1_a", "w1_b", "hada_t1"]), d2.describe(["w2_a", "w2_b", "hada_t2"]))
            }
            Self::Kronecker { w1, w2 } => format!("{} ⊗ {}", w1.describe("w1"), w2.describe("w2")),
            Self::Full(d) => format!("diff {:?}", d.shape),
        }
    }

    /// The unscaled delta, `[out, in·kh·kw]`.
    pub fn delta(&self) -> Array2<f32> {
        match self {
            Self::LowRank(d) => d.matrix(),
            Self::Hadamard(d1, d2) => {
                let mut d = d1.matrix();
                d *= &d2.matrix();
                d
            }
            Self::Kronecker { w1, w2 } => kron(&w1.matrix(), &w2.matrix()),
            Self::Full(d) => view(d).to_owned(),
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
        let f = Factors::Hadamard(
            Decomposed::Product { a: t(&[out, r], w1_a.clone()), b: t(&[r, inn], w1_b.clone()) },
            Decomposed::Product { a: t(&[out, r], w2_a.clone()), b: t(&[r, inn], w2_b.clone()) },
        );
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
            w2: KronFactor::Decomposed(Decomposed::Product { a: t(&[b, r], w2_a.clone()), b: t(&[r, d, kh, kw], w2_b.clone()) }),
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

    /// A Tucker core against its definition, written out:
    /// m[o, (c, y, x)] = Σ_jk core[j, k, y, x] · a[j, o] · b[k, c], with
    /// distinct ranks so a swapped mode cannot pass.
    #[test]
    fn tucker_is_the_core_times_both_modes_in_pytorch_weight_order() {
        let (r1, r2, out, c, kh, kw) = (2, 3, 4, 5, 3, 2);
        let (core, a, b) = (seq(r1 * r2 * kh * kw, -1.3), seq(r1 * out, 0.4), seq(r2 * c, -0.9));
        let d = Decomposed::Tucker { core: t(&[r1, r2, kh, kw], core.clone()), a: t(&[r1, out], a.clone()), b: t(&[r2, c], b.clone()) };
        assert_eq!((d.rows(), d.cols(), d.rank(), d.kernel()), (out, c * kh * kw, r2, Some(&[kh, kw][..])));
        let m = d.matrix();
        for o in 0..out {
            for ci in 0..c {
                for y in 0..kh {
                    for x in 0..kw {
                        let want: f32 = (0..r1)
                            .flat_map(|j| (0..r2).map(move |k| (j, k)))
                            .map(|(j, k)| core[((j * r2 + k) * kh + y) * kw + x] * a[j * out + o] * b[k * c + ci])
                            .sum();
                        let got = m[[o, (ci * kh + y) * kw + x]];
                        assert!((got - want).abs() < 1e-4 * want.abs().max(1.0), "[{o}, {ci}, {y}, {x}]: {got} vs {want}");
                    }
                }
            }
        }
        // A LoHa of two Tucker halves is their element-wise product.
        let d2 = Decomposed::Tucker { core: t(&[r1, r2, kh, kw], seq(r1 * r2 * kh * kw, 0.2)), a: t(&[r1, out], seq(r1 * out, -0.3)), b: t(&[r2, c], seq(r2 * c, 0.7)) };
        let loha = Factors::Hadamard(d.clone(), d2.clone()).delta();
        assert_eq!(loha, &m * &d2.matrix());
        assert_eq!(Factors::Hadamard(d, d2).rank(), Some(r2));
    }
}
