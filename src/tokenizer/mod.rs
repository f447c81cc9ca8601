//! CLIP's byte-level BPE, matching transformers' slow `CLIPTokenizer` as it
//! normally runs, i.e. with `ftfy` installed.
//!
//! Pipeline, in transformers' order:
//! 1. The prompt is split on the literal text of the added/special tokens
//!    (`<|startoftext|>`, `<|endoftext|>`, and e.g. SD 2.x's pad token `!`);
//!    those map straight to their ids.
//! 2. Every other piece is cleaned as `whitespace_clean(ftfy.fix_text(t)).lower()`
//!    (`text_cleanup::clean_text`), with the parts of ftfy 6.3 `fix_text` (default config)
//!    that matter for prompts, each applied as ftfy does it:
//!    HTML entity unescaping (only on lines without a `<`), C1 controls read
//!    as Windows-1252, Latin ligatures split, full/half-width forms narrowed,
//!    curly quotes straightened, line breaks unified, ANSI terminal escapes and
//!    invisible control characters removed, NFC; repeated until nothing changes.
//! 3. BPE merges, byte-to-unicode mapping and word splitting are done by the
//!    `tokenizers` crate with CLIP's word pattern.
//! 4. Start and end tokens, truncation and padding are applied here.
//!
//! Knowingly not implemented from ftfy: mojibake repair (`fix_encoding` with
//! its `restore_byte_a0` / `replace_lossy_sequences` / `decode_inconsistent_utf8`
//! helpers, e.g. "cafÃ©" -> "café", "x Â y" -> "x\u{a0}y"; since `&Acirc;` and
//! `&Atilde;` decode to such text, ftfy goes on to "repair" them and Kiln does
//! not), `fix_surrogates` (a Rust `str` cannot hold surrogates), and HTML5-only
//! entity names: the named entities decoded are the HTML 4 set plus `&apos;`
//! (`&amp;`, `&lt;`, `&eacute;`, `&hellip;`, `&mdash;`,
//! ...), rarer HTML5 names such as `&check;` are left as typed. Numeric
//! references (`&#233;`, `&#xE9;`) are decoded like Python's `html.unescape`.
//! Without ftfy, transformers uses `BasicTokenizer` instead (CJK ideographs
//! spaced apart, no quote/width/ligature/entity fixes); Kiln does not follow
//! that path.
use std::path::Path;

use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use self::text_cleanup::clean_text;
use crate::error::{Error, Result};

mod text_cleanup;
pub mod weighting;

use self::weighting::Piece;

/// A1111's `comma_padding_backtrack` default: when a chunk fills up, the
/// tokens after its last comma move to the next chunk if that comma is within
/// this many tokens of the end.
pub(crate) const COMMA_BACKTRACK: usize = 20;

/// One text-encoder input of a weighted prompt: `max_len` ids
/// (`[BOS] + 75 tokens + [EOS]`, padded) and one weight per id.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedChunk {
    /// Token ids, `max_len` of them.
    pub ids: Vec<i64>,
    /// Per-token weights (1.0 for start, end and padding), as f32 like A1111's tensor.
    pub weights: Vec<f32>,
}

/// The word pattern of CLIP (`CLIPTokenizer.pat`), without its special tokens,
/// which are matched earlier as added tokens.
const CLIP_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// A CLIP tokenizer with its special tokens and fixed sequence length.
#[derive(Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    /// Added/special token texts and their ids, longest text first; the
    /// prompt is split on these before clean-up, like transformers'
    /// added-token trie. A textual-inversion token may stand for several ids.
    added: Vec<(String, Vec<u32>)>,
    bos: u32,
    eos: u32,
    pad: u32,
    max_len: usize,
}

impl ClipTokenizer {
    /// Loads `vocab.json` + `merges.txt` (or `tokenizer.json`) and the special
    /// tokens named in `tokenizer_config.json`. `max_len` caps the length (77).
    pub fn from_dir(dir: &Path, max_len: usize) -> Result<Self> {
        let vocab = dir.join("vocab.json");
        let merges = dir.join("merges.txt");
        let bad = |file: &Path, e: &dyn std::fmt::Display| Error::model(format!("{}: {e}", file.display()));
        let mut inner = if vocab.is_file() && merges.is_file() {
            let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
                .unk_token("<|endoftext|>".into())
                .end_of_word_suffix("</w>".into())
                .build()
                .map_err(|e| bad(&vocab, &e))?;
            let mut t = Tokenizer::new(bpe);
            let split = Split::new(SplitPattern::Regex(CLIP_PATTERN.into()), SplitDelimiterBehavior::Removed, true)
                .map_err(|e| Error::internal(format!("CLIP pattern: {e}")))?;
            t.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Split(split),
                PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)),
            ]))));
            t
        } else {
            let file = dir.join("tokenizer.json");
            let mut t = Tokenizer::from_file(&file).map_err(|e| bad(&file, &e))?;
            // Kiln cleans the text itself and adds special tokens itself.
            t.with_normalizer(None::<NormalizerWrapper>);
            t.with_post_processor(None::<tokenizers::PostProcessorWrapper>);
            t
        };
        for text in ["<|startoftext|>", "<|endoftext|>"] {
            if inner.token_to_id(text).is_none() {
                return Err(Error::model(format!("{}: not a CLIP vocabulary (no {text})", dir.display())));
            }
        }
        // Inside cleaned text these two still match whole, like the
        // `<\|startoftext\|>|<\|endoftext\|>` head of CLIP's word pattern.
        inner.add_special_tokens(&[
            AddedToken::from("<|startoftext|>", true),
            AddedToken::from("<|endoftext|>", true),
        ]);

        let config = read_optional_json(&dir.join("tokenizer_config.json"))?;
        let special = read_optional_json(&dir.join("special_tokens_map.json"))?;
        let token_named = |key: &str, default: &str| -> String {
            [&config, &special]
                .iter()
                .find_map(|v| token_text(v.get(key)?))
                .unwrap_or_else(|| default.to_string())
        };
        let id = |text: &str| -> Result<u32> {
            inner.token_to_id(text).ok_or_else(|| {
                Error::model(format!("{}: special token {text:?} is not in the vocabulary", dir.display()))
            })
        };
        let mut added: Vec<(String, Vec<u32>)> = Vec::new();
        let mut add = |text: String, id: u32| {
            if !text.is_empty() && !added.iter().any(|(t, _)| *t == text) {
                added.push((text, vec![id]));
            }
        };
        let bos_text = token_named("bos_token", "<|startoftext|>");
        let eos_text = token_named("eos_token", "<|endoftext|>");
        let pad_text = token_named("pad_token", "<|endoftext|>");
        let (bos, eos, pad) = (id(&bos_text)?, id(&eos_text)?, id(&pad_text)?);
        add(bos_text, bos);
        add(eos_text, eos);
        add(pad_text, pad);
        let unk = token_named("unk_token", "<|endoftext|>");
        if let Some(tid) = inner.token_to_id(&unk) {
            add(unk, tid);
        }
        if let Some(map) = config.get("added_tokens_decoder").and_then(|v| v.as_object()) {
            for (key, token) in map {
                let (Some(text), Ok(tid)) = (token_text(token), key.parse::<u32>()) else {
                    return Err(Error::model(format!("{}: bad added_tokens_decoder entry {key:?}", dir.display())));
                };
                add(text, tid);
            }
        }
        added.sort_by_key(|(text, _)| std::cmp::Reverse(text.len()));

        let config_len = config
            .get("model_max_length")
            .and_then(|v| v.as_u64())
            .filter(|n| (2..100_000).contains(n))
            .map(|n| n as usize)
            .unwrap_or(77);
        Ok(Self { inner, added, bos, eos, pad, max_len: config_len.min(max_len.max(2)) })
    }

    /// Token ids of `text`, with start/end tokens, truncated and padded to the
    /// model's sequence length.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let body = self.content_ids(text)?;
        let take = body.len().min(self.max_len - 2);
        let mut ids = Vec::with_capacity(self.max_len);
        ids.push(self.bos as i64);
        ids.extend(body[..take].iter().map(|&i| i as i64));
        ids.push(self.eos as i64);
        ids.resize(self.max_len, self.pad as i64);
        Ok(ids)
    }

    /// A prompt in A1111's weighting syntax as text-encoder chunks: parsed
    /// (see [`weighting`]), each piece tokenized on its own, then cut into
    /// chunks of `max_len - 2` tokens (75) at `BREAK`, when full, or at the
    /// last comma within 20 tokens of a full chunk's end (A1111's
    /// `comma_padding_backtrack` default). Each
    /// chunk is padded with the end token to 75, wrapped in start/end tokens,
    /// and everything after its first end token becomes the pad token (SD 2.x).
    /// An empty prompt is one chunk.
    pub fn weighted_chunks(&self, prompt: &str) -> Result<Vec<WeightedChunk>> {
        let pieces = weighting::parse(prompt)?;
        let chunk_len = self.max_len - 2;
        let comma = self.inner.token_to_id(",</w>");
        let mut b = ChunkBuilder { tok: self, chunks: Vec::new(), tokens: Vec::new(), weights: Vec::new(), last_comma: None };
        for piece in &pieces {
            let (text, weight) = match piece {
                Piece::Break => {
                    b.finish();
                    continue;
                }
                Piece::Text { text, weight } => (text, *weight as f32),
            };
            for token in self.content_ids(text)? {
                if Some(token) == comma {
                    b.last_comma = Some(b.tokens.len());
                } else if let Some(at) = b.last_comma.filter(|&at| b.tokens.len() == chunk_len && chunk_len - at <= COMMA_BACKTRACK) {
                    let moved_tokens = b.tokens.split_off(at + 1);
                    let moved_weights = b.weights.split_off(at + 1);
                    b.finish();
                    b.tokens = moved_tokens;
                    b.weights = moved_weights;
                }
                if b.tokens.len() == chunk_len {
                    b.finish();
                }
                b.tokens.push(token);
                b.weights.push(weight);
            }
        }
        if !b.tokens.is_empty() || b.chunks.is_empty() {
            b.finish();
        }
        Ok(b.chunks)
    }

    /// This tokenizer plus textual-inversion tokens, each standing for its
    /// ids (matched literally, before clean-up, like transformers' added
    /// tokens). A token that is already a word of the vocabulary or an added
    /// token is refused.
    pub fn with_tokens(&self, tokens: &[(String, Vec<u32>)]) -> Result<Self> {
        let mut t = self.clone();
        for (text, ids) in tokens {
            let known = t.inner.token_to_id(text).is_some()
                || t.inner.token_to_id(&format!("{text}</w>")).is_some()
                || t.added.iter().any(|(a, _)| a == text);
            if known {
                return Err(Error::invalid(format!("token {text:?} is already in the tokenizer; give the embedding another token")));
            }
            t.added.push((text.clone(), ids.clone()));
        }
        t.added.sort_by_key(|(text, _)| std::cmp::Reverse(text.len()));
        Ok(t)
    }

    /// Sequence length (77 for SD).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Number of content tokens `text` has before truncation.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self.content_ids(text)?.len())
    }

    /// The ids between start and end token, untruncated: added tokens typed
    /// literally map to their ids, the text between them is cleaned and BPE'd.
    fn content_ids(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        let mut piece_start = 0;
        let mut pos = 0;
        while pos < text.len() {
            match self.added.iter().find(|(t, _)| text[pos..].starts_with(t.as_str())) {
                Some((t, id)) => {
                    self.push_cleaned(&text[piece_start..pos], &mut ids)?;
                    ids.extend_from_slice(id);
                    pos += t.len();
                    piece_start = pos;
                }
                None => pos += text[pos..].chars().next().map_or(1, char::len_utf8),
            }
        }
        self.push_cleaned(&text[piece_start..], &mut ids)?;
        Ok(ids)
    }

    fn push_cleaned(&self, piece: &str, ids: &mut Vec<u32>) -> Result<()> {
        let cleaned = clean_text(piece);
        if cleaned.is_empty() {
            return Ok(());
        }
        let encoding = self
            .inner
            .encode(cleaned.as_str(), false)
            .map_err(|e| Error::internal(format!("tokenizer failed: {e}")))?;
        ids.extend_from_slice(encoding.get_ids());
        Ok(())
    }
}

/// The chunk being filled and the ones done (A1111's `tokenize_line` state).
struct ChunkBuilder<'a> {
    tok: &'a ClipTokenizer,
    chunks: Vec<WeightedChunk>,
    tokens: Vec<u32>,
    weights: Vec<f32>,
    /// Index in `tokens` of the last comma of the current chunk.
    last_comma: Option<usize>,
}

impl ChunkBuilder<'_> {
    /// Pads the current chunk with the end token to 75, wraps it in start/end
    /// tokens, turns everything after its first end token into the pad token,
    /// and starts an empty one.
    fn finish(&mut self) {
        let t = self.tok;
        let chunk_len = t.max_len - 2;
        self.last_comma = None;
        let mut ids = Vec::with_capacity(t.max_len);
        ids.push(t.bos as i64);
        ids.extend(self.tokens.drain(..).map(|id| id as i64));
        ids.resize(chunk_len + 1, t.eos as i64);
        ids.push(t.eos as i64);
        if let Some(first_end) = ids.iter().position(|&id| id == t.eos as i64) {
            for id in &mut ids[first_end + 1..] {
                *id = t.pad as i64;
            }
        }
        let mut weights = Vec::with_capacity(t.max_len);
        weights.push(1.0);
        weights.append(&mut self.weights);
        weights.resize(t.max_len, 1.0);
        self.chunks.push(WeightedChunk { ids, weights });
    }
}

fn read_optional_json(path: &Path) -> Result<serde_json::Value> {
    if !path.is_file() {
        return Ok(serde_json::Value::Null);
    }
    crate::model::layout::read_json(path)
}

/// A special token is a string or `{"content": "..."}`.
fn token_text(v: &serde_json::Value) -> Option<String> {
    v.as_str()
        .map(str::to_string)
        .or_else(|| v.get("content").and_then(|c| c.as_str()).map(str::to_string))
}
