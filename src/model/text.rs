//! Prompt → text embeddings: the text encoder behind an LRU cache.
//!
//! Plain prompts are encoded as diffusers does (one 77-token sequence).
//! Weighted prompts follow AUTOMATIC1111 (`sd_hijack_clip.py` with the
//! "Original" emphasis of `sd_emphasis.py`): each 77-token chunk from
//! [`ClipTokenizer::weighted_chunks`](crate::tokenizer::ClipTokenizer::weighted_chunks)
//! goes through the text encoder on its own; its `last_hidden_state` `z` is
//! multiplied per token by the weights, then by `mean(z) / mean(z·w)` so the
//! overall mean is restored; the chunks are concatenated along the sequence
//! axis into `[1, 77·k, dim]`.
use ndarray::{concatenate, ArrayD, Axis, IxDyn};

use super::{GraphInput, ModelInner};
use crate::error::{Error, Result};
use crate::tokenizer::weighting::PromptSyntax;

impl ModelInner {
    /// Token embeddings `[1, seq, dim]` for one prompt: the text encoder's
    /// `last_hidden_state`, 77 tokens in plain mode, 77·chunks when weighted.
    pub(crate) fn encode_text(
        &self,
        prompt: &str,
        syntax: PromptSyntax,
        options: Option<&ort::session::RunOptions>,
    ) -> Result<ArrayD<f32>> {
        if let Some(hit) = self.embedding_cache.lock().get(syntax, prompt) {
            return Ok(hit);
        }
        let embeddings = match syntax {
            PromptSyntax::Plain => self.run_text_encoder(self.tokenizer.encode(prompt)?, options)?,
            PromptSyntax::Weighted => self.run_weighted(prompt, options)?,
        };
        self.embedding_cache.lock().put(syntax, prompt, &embeddings);
        Ok(embeddings)
    }

    fn run_text_encoder(&self, ids: Vec<i64>, options: Option<&ort::session::RunOptions>) -> Result<ArrayD<f32>> {
        let len = ids.len();
        let ids = ArrayD::from_shape_vec(IxDyn(&[1, len]), ids).map_err(|e| Error::internal(e.to_string()))?;
        self.text_encoder.run(vec![(&self.text_io.input_ids, GraphInput::Int(ids))], &self.text_io.output, options)
    }

    fn run_weighted(&self, prompt: &str, options: Option<&ort::session::RunOptions>) -> Result<ArrayD<f32>> {
        let chunks = self.tokenizer.weighted_chunks(prompt)?;
        let mut encoded = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let mut z = self.run_text_encoder(chunk.ids, options)?;
            apply_emphasis(&mut z, &chunk.weights)?;
            encoded.push(z);
        }
        let views: Vec<_> = encoded.iter().map(|z| z.view()).collect();
        concatenate(Axis(1), &views).map_err(|e| Error::internal(format!("joining prompt chunks: {e}")))
    }
}

/// Mean of all values, accumulated in f64, rounded to f32 (torch's `z.mean()`
/// on a float32 tensor, up to summation order).
fn mean(z: &ArrayD<f32>) -> f32 {
    (z.iter().map(|&v| v as f64).sum::<f64>() / z.len().max(1) as f64) as f32
}

/// Mean of the absolute values (the embeddings' magnitude), accumulated in f64.
fn mean_abs(z: &ArrayD<f32>) -> f32 {
    (z.iter().map(|&v| (v as f64).abs()).sum::<f64>() / z.len().max(1) as f64) as f32
}

/// The smallest |mean| / mean|z| at which A1111's mean restoration is still
/// well-conditioned. The restoration multiplies by mean(z) / mean(z·w); a
/// rounding difference of about 1e-7 of the magnitude (what ONNX Runtime's
/// kernels differ by between CPUs) moves that factor by 1e-7 / this ratio.
/// At 1e-5 that is 1 %; below it the factor is rounding noise and would
/// change from one CPU to the next, so Kiln refuses rather than guess.
/// Trained CLIP encoders sit far above it (their final LayerNorm bias gives
/// the embeddings a sizeable mean; Kiln's bundled default model: 5e-4);
/// random-weight encoders with zero biases sit far below (tiny-sd: 2.5e-10).
pub(crate) const MIN_MEAN_RATIO: f32 = 1e-5;

/// A1111's "Original" emphasis on one chunk `z` `[1, seq, dim]`:
/// `z *= w` per token, then `z *= mean_before / mean_after` (in f32).
/// An error, never a NaN or noise-driven result, when either mean is too
/// small against the embeddings' magnitude ([`MIN_MEAN_RATIO`]).
pub(crate) fn apply_emphasis(z: &mut ArrayD<f32>, weights: &[f32]) -> Result<()> {
    let shape = z.shape().to_vec();
    if shape.len() != 3 || shape[0] != 1 || shape[1] != weights.len() {
        return Err(Error::model(format!(
            "text encoder returned shape {shape:?} for a {}-token chunk; expected [1, {}, dim]",
            weights.len(),
            weights.len()
        )));
    }
    if weights.iter().all(|&w| w == 1.0) {
        return Ok(()); // exactly what the formula gives: z * 1 * (m / m)
    }
    let before = mean(z);
    let magnitude_before = mean_abs(z);
    for (t, mut row) in z.index_axis_mut(Axis(0), 0).axis_iter_mut(Axis(0)).enumerate() {
        let w = weights[t];
        row.mapv_inplace(|v| v * w);
    }
    let after = mean(z);
    let magnitude_after = mean_abs(z);
    let ratio = before / after;
    // Ill unless |m| is at least the bound; a NaN on either side is ill too.
    let ill = |m: f32, magnitude: f32| {
        !matches!(m.abs().partial_cmp(&(MIN_MEAN_RATIO * magnitude)), Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal))
    };
    if !ratio.is_finite() || ill(before, magnitude_before) || ill(after, magnitude_after) {
        return Err(Error::invalid(format!(
            "prompt weighting: A1111's mean restoration multiplies by mean(z) / mean(z*w) = {before:e} / {after:e}, \
             but this text encoder's embeddings (mean |z| {magnitude_before:e}) have a mean below {MIN_MEAN_RATIO:e} \
             of their magnitude, so that factor would be rounding noise; use plain prompts with this model, or other weights"
        )));
    }
    z.mapv_inplace(|v| v * ratio);
    Ok(())
}

/// A small LRU of prompt → text-encoder output, so repeated prompts (the empty
/// negative prompt above all) skip the text encoder.
#[derive(Default)]
pub(crate) struct EmbeddingCache {
    capacity: usize,
    entries: Vec<((PromptSyntax, String), ArrayD<f32>)>,
    hits: u64,
    misses: u64,
}

impl EmbeddingCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { capacity, ..Default::default() }
    }

    /// (hits, misses) so far.
    pub(crate) fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    pub(crate) fn get(&mut self, syntax: PromptSyntax, prompt: &str) -> Option<ArrayD<f32>> {
        let i = self.entries.iter().position(|((s, p), _)| *s == syntax && p == prompt);
        match i {
            Some(i) => {
                let entry = self.entries.remove(i);
                let value = entry.1.clone();
                self.entries.push(entry);
                self.hits += 1;
                Some(value)
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    pub(crate) fn put(&mut self, syntax: PromptSyntax, prompt: &str, value: &ArrayD<f32>) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity {
            self.entries.remove(0);
        }
        self.entries.push(((syntax, prompt.to_string()), value.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emphasis_scales_tokens_then_restores_the_mean() {
        // Two tokens, two dims; mean 1.0 before.
        let mut z = ArrayD::from_shape_vec(IxDyn(&[1, 2, 2]), vec![1.0f32, 2.0, 0.5, 0.5]).unwrap();
        apply_emphasis(&mut z, &[2.0, 1.0]).unwrap();
        // z·w = [2, 4, 0.5, 0.5], mean 1.75; times 1 / 1.75.
        let want = [2.0 / 1.75, 4.0 / 1.75, 0.5 / 1.75, 0.5 / 1.75];
        for (g, w) in z.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
        let mean: f32 = z.iter().sum::<f32>() / 4.0;
        assert!((mean - 1.0).abs() < 1e-6);
        // All ones: untouched. Weights cancelling the mean: an error, not NaN.
        let mut same = ArrayD::from_shape_vec(IxDyn(&[1, 2, 1]), vec![0.25f32, -0.5]).unwrap();
        let before = same.clone();
        apply_emphasis(&mut same, &[1.0, 1.0]).unwrap();
        assert_eq!(same, before);
        let e = apply_emphasis(&mut same, &[2.0, 1.0]).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::InvalidArgument);
    }

    #[test]
    fn a_mean_that_is_rounding_noise_is_refused_not_amplified() {
        // mean 5e-8 against magnitude ~1 (a zero-bias random encoder): refused.
        let mut z = ArrayD::from_shape_vec(IxDyn(&[1, 2, 1]), vec![1.0f32, -0.9999999]).unwrap();
        let e = apply_emphasis(&mut z, &[1.1, 1.0]).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("rounding noise"), "{e}");
        // mean 1e-3 of the magnitude (the default model's order): applied.
        let mut z = ArrayD::from_shape_vec(IxDyn(&[1, 2, 1]), vec![1.0f32, -0.998]).unwrap();
        apply_emphasis(&mut z, &[1.0, 1.001]).unwrap();
        assert!(z.iter().all(|v| v.is_finite()));
    }
}
