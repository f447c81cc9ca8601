//! SDXL conditioning, as diffusers' `StableDiffusionXLPipeline.encode_prompt`
//! and `_get_add_time_ids` make it.
//!
//! Each text encoder (`text_encoder`, then `text_encoder_2`; a refiner-style
//! export has only the second) reads its own prompt (`prompt`, `prompt_2`)
//! through its own tokenizer; a refiner-style export's only encoder reads
//! `prompt` (diffusers zips `[prompt, prompt_2]` with its one encoder, so
//! `prompt_2` goes unused there); the per-token embeddings are the penultimate
//! hidden states (`hidden_states[-(clip_skip + 2)]`, no final LayerNorm),
//! concatenated along the width. The pooled embedding (`text_embeds`) comes
//! from the last encoder. The negative side always uses `hidden_states[-2]`
//! (diffusers ignores CLIP skip there) and, when the model's
//! `force_zeros_for_empty_prompt` is set and both negative prompts are empty,
//! is all zeros. The U-Net also takes `time_ids`: original size, crop
//! top-left and target size (height first, as diffusers), or for a refiner
//! original size, crop and an aesthetic score.
use std::sync::Arc;

use ndarray::{concatenate, ArrayD, Axis, IxDyn};

use super::{Graph, GraphInput, ModelInner, TensorSpec, TextEncoderIo};
use crate::error::{Error, Result};
use crate::tokenizer::weighting::PromptSyntax;
use crate::tokenizer::ClipTokenizer;

/// The parts only SDXL models have.
pub(crate) struct XlText {
    /// `text_encoder_2` and `tokenizer_2`, when the export has both encoders.
    pub(crate) second: Option<(Arc<Graph>, TextEncoderIo, Arc<ClipTokenizer>)>,
    /// The U-Net's pooled text input.
    pub(crate) text_embeds: TensorSpec,
    /// The U-Net's size/crop conditioning input.
    pub(crate) time_ids: TensorSpec,
    /// Time ids hold an aesthetic score instead of the target size (refiner).
    pub(crate) aesthetic: bool,
    /// An empty negative prompt gives zero embeddings.
    pub(crate) force_zeros: bool,
}

/// Per-token and pooled embeddings for one side of classifier-free guidance.
#[derive(Debug, Clone)]
pub(crate) struct XlEmbeds {
    /// `[1, seq, dim₁ + dim₂]`.
    pub(crate) hidden: ArrayD<f32>,
    /// `[1, projection]`.
    pub(crate) pooled: ArrayD<f32>,
}

/// Size conditioning of one side, in pixels (diffusers' tuples, height first).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TimeIds {
    /// `original_size` (height, width).
    pub(crate) original: (usize, usize),
    /// `crops_coords_top_left` (top, left).
    pub(crate) crop: (usize, usize),
    /// `target_size` (height, width).
    pub(crate) target: (usize, usize),
    /// Refiner: `aesthetic_score`.
    pub(crate) aesthetic_score: f32,
}

impl XlText {
    /// How many time ids the U-Net takes: 6, or 5 with an aesthetic score.
    pub(crate) fn time_id_count(&self) -> usize {
        if self.aesthetic {
            5
        } else {
            6
        }
    }

    /// The time ids the U-Net takes for `t`, `[1, n]`.
    pub(crate) fn time_ids(&self, t: &TimeIds) -> ArrayD<f32> {
        let mut v = vec![t.original.0 as f32, t.original.1 as f32, t.crop.0 as f32, t.crop.1 as f32];
        if self.aesthetic {
            v.push(t.aesthetic_score);
        } else {
            v.extend([t.target.0 as f32, t.target.1 as f32]);
        }
        let n = v.len();
        ArrayD::from_shape_vec(IxDyn(&[1, n]), v).expect("time ids shape")
    }
}

impl ModelInner {
    /// The text encoders in concatenation order: each graph, its I/O and its tokenizer.
    fn xl_encoders(&self, xl: &XlText) -> Vec<(Arc<Graph>, TextEncoderIo, Arc<ClipTokenizer>)> {
        let mut v = vec![(Arc::clone(&self.text_encoder), self.text_io.clone(), Arc::clone(&self.tokenizer))];
        if let Some((g, io, t)) = &xl.second {
            v.push((Arc::clone(g), io.clone(), Arc::clone(t)));
        }
        v
    }

    /// SDXL embeddings of `prompts` (one per encoder; a refiner-style model's
    /// only encoder takes the first, as in diffusers), taking each encoder's hidden state `skip` layers
    /// before its penultimate one.
    pub(crate) fn encode_xl(
        &self,
        xl: &XlText,
        prompts: [&str; 2],
        skip: u32,
        syntax: PromptSyntax,
        options: Option<&ort::session::RunOptions>,
    ) -> Result<XlEmbeds> {
        let mut all = self.encode_xl_many(xl, &[(prompts, skip)], syntax, options)?;
        all.pop().ok_or_else(|| Error::internal("no SDXL embeddings"))
    }

    /// [`encode_xl`](Self::encode_xl) for several (prompts, skip) pairs, one
    /// encoder at a time: under per-stage residency each encoder is loaded
    /// once for all of them instead of the two taking turns per prompt.
    pub(crate) fn encode_xl_many(
        &self,
        xl: &XlText,
        jobs: &[([&str; 2], u32)],
        syntax: PromptSyntax,
        options: Option<&ort::session::RunOptions>,
    ) -> Result<Vec<XlEmbeds>> {
        let encoders = self.xl_encoders(xl);
        // [job][encoder] → (hidden, pooled)
        let mut outs: Vec<Vec<(ArrayD<f32>, ArrayD<f32>)>> = jobs.iter().map(|_| Vec::with_capacity(encoders.len())).collect();
        for (index, (graph, io, tokenizer)) in encoders.iter().enumerate() {
            for ((prompts, skip), out) in jobs.iter().zip(outs.iter_mut()) {
                // One encoder (refiner-style): diffusers pairs it with `prompt`.
                let prompt = prompts[index];
                let layer = hidden_layer(graph.name, io, *skip)?;
                let key = format!("\u{1}xl{index}:{layer}\u{1}{prompt}");
                let cached = {
                    let mut cache = self.embedding_cache.lock();
                    cache.get(syntax, &key).zip(cache.get(syntax, &format!("{key}\u{1}pooled")))
                };
                let hit = match cached {
                    Some(hit) => hit,
                    None => {
                        let encoded = encode_one(graph, io, tokenizer, prompt, layer, syntax, options)?;
                        let mut cache = self.embedding_cache.lock();
                        cache.put(syntax, &key, &encoded.0);
                        cache.put(syntax, &format!("{key}\u{1}pooled"), &encoded.1);
                        encoded
                    }
                };
                out.push(hit);
            }
        }
        let mut result = Vec::with_capacity(jobs.len());
        for (encoded, (_, skip)) in outs.into_iter().zip(jobs) {
            let pooled = encoded.last().map(|(_, p)| p.clone()).ok_or_else(|| Error::internal("SDXL model without text encoders"))?;
            let mut hiddens: Vec<ArrayD<f32>> = encoded.into_iter().map(|(h, _)| h).collect();
            // Weighted prompts can differ in chunk count between the encoders:
            // pad the shorter with that encoder's empty-prompt chunks, as A1111
            // pads a prompt against its negative.
            let longest = hiddens.iter().map(|h| h.shape()[1]).max().unwrap_or(0);
            for (i, h) in hiddens.iter_mut().enumerate() {
                if h.shape()[1] < longest {
                    let (graph, io, tokenizer) = &encoders[i];
                    let layer = hidden_layer(graph.name, io, *skip)?;
                    let empty = encode_one(graph, io, tokenizer, "", layer, syntax, options)?.0;
                    pad_chunks(h, &empty, longest)?;
                }
            }
            let views: Vec<_> = hiddens.iter().map(|h| h.view()).collect();
            let hidden = concatenate(Axis(2), &views).map_err(|e| Error::internal(format!("joining SDXL embeddings: {e}")))?;
            result.push(XlEmbeds { hidden, pooled });
        }
        Ok(result)
    }
}

/// The hidden state SDXL reads from an encoder with CLIP skip `skip`:
/// `hidden_states[-(skip + 2)]` (index 0 is the token embedding, the last
/// index the last layer).
fn hidden_layer(graph_name: &str, io: &TextEncoderIo, skip: u32) -> Result<usize> {
    let layers = io.hidden_states.len();
    (skip as usize).checked_add(2).and_then(|back| layers.checked_sub(back)).ok_or_else(|| {
        Error::invalid(format!(
            "clip_skip {skip}: {graph_name} has {layers} hidden-state outputs; SDXL takes hidden_states[-(clip_skip + 2)]"
        ))
    })
}

/// Appends copies of `empty` (one chunk) to `h` until it is `len` tokens long.
pub(crate) fn pad_chunks(h: &mut ArrayD<f32>, empty: &ArrayD<f32>, len: usize) -> Result<()> {
    let chunk = empty.shape()[1];
    let missing = len - h.shape()[1];
    if chunk == 0 || !missing.is_multiple_of(chunk) {
        return Err(Error::internal(format!("prompt lengths {} and {len} are not whole chunks of {chunk}", h.shape()[1])));
    }
    let mut parts = vec![h.view()];
    parts.extend(std::iter::repeat_n(empty.view(), missing / chunk));
    *h = concatenate(Axis(1), &parts).map_err(|e| Error::internal(e.to_string()))?;
    Ok(())
}

/// One encoder's hidden state at `layer` (`[1, 77·chunks, dim]`) and pooled
/// embedding (`[1, projection]`; A1111 takes it from the first chunk).
fn encode_one(
    graph: &Graph,
    io: &TextEncoderIo,
    tokenizer: &ClipTokenizer,
    prompt: &str,
    layer: usize,
    syntax: PromptSyntax,
    options: Option<&ort::session::RunOptions>,
) -> Result<(ArrayD<f32>, ArrayD<f32>)> {
    let pooled_name = io.pooled.clone().unwrap_or_else(|| io.output.clone());
    let run = |ids: Vec<i64>| -> Result<(ArrayD<f32>, ArrayD<f32>)> {
        let len = ids.len();
        let ids = ArrayD::from_shape_vec(IxDyn(&[1, len]), ids).map_err(|e| Error::internal(e.to_string()))?;
        let mut out =
            graph.run_many(vec![(&io.input_ids, GraphInput::Int(ids))], &[&io.hidden_states[layer], &pooled_name], options)?;
        let pooled = out.pop().ok_or_else(|| Error::internal("no pooled output"))?;
        let hidden = out.pop().ok_or_else(|| Error::internal("no hidden state output"))?;
        Ok((hidden, pooled))
    };
    match syntax {
        PromptSyntax::Plain => run(tokenizer.encode(prompt)?),
        PromptSyntax::Weighted => {
            let mut hidden = Vec::new();
            let mut pooled = None;
            for chunk in tokenizer.weighted_chunks(prompt)? {
                let (mut z, p) = run(chunk.ids)?;
                super::text::apply_emphasis(&mut z, &chunk.weights)?;
                hidden.push(z);
                pooled.get_or_insert(p);
            }
            let views: Vec<_> = hidden.iter().map(|z| z.view()).collect();
            let hidden = concatenate(Axis(1), &views).map_err(|e| Error::internal(format!("joining prompt chunks: {e}")))?;
            Ok((hidden, pooled.ok_or_else(|| Error::internal("weighted prompt without chunks"))?))
        }
    }
}
