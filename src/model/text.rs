//! Prompt → text embeddings: the text encoder behind an LRU cache.
use ndarray::{ArrayD, IxDyn};

use super::{GraphInput, ModelInner};
use crate::error::{Error, Result};

impl ModelInner {
    /// Token embeddings `[1, seq, dim]` for one prompt (the text encoder's
    /// `last_hidden_state`).
    pub(crate) fn encode_text(&self, prompt: &str, options: Option<&ort::session::RunOptions>) -> Result<ArrayD<f32>> {
        if let Some(hit) = self.embedding_cache.lock().get(prompt) {
            return Ok(hit);
        }
        let embeddings = self.run_text_encoder(prompt, options)?;
        self.embedding_cache.lock().put(prompt, &embeddings);
        Ok(embeddings)
    }

    fn run_text_encoder(&self, prompt: &str, options: Option<&ort::session::RunOptions>) -> Result<ArrayD<f32>> {
        let ids = self.tokenizer.encode(prompt)?;
        let len = ids.len();
        let ids = ArrayD::from_shape_vec(IxDyn(&[1, len]), ids).map_err(|e| Error::internal(e.to_string()))?;
        self.text_encoder.run(vec![(&self.text_io.input_ids, GraphInput::Int(ids))], &self.text_io.output, options)
    }
}


/// A small LRU of prompt → text-encoder output, so repeated prompts (the empty
/// negative prompt above all) skip the text encoder.
#[derive(Default)]
pub(crate) struct EmbeddingCache {
    capacity: usize,
    entries: Vec<(String, ArrayD<f32>)>,
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

    fn get(&mut self, prompt: &str) -> Option<ArrayD<f32>> {
        let i = self.entries.iter().position(|(p, _)| p == prompt);
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

    fn put(&mut self, prompt: &str, value: &ArrayD<f32>) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity {
            self.entries.remove(0);
        }
        self.entries.push((prompt.to_string(), value.clone()));
    }
}
