//! CLIP's byte-level BPE, matching transformers' `CLIPTokenizer`.
//!
//! The BPE merges, byte-to-unicode mapping and word splitting are done by the
//! `tokenizers` crate. The text clean-up before it follows the slow
//! `CLIPTokenizer` without `ftfy` (transformers' `BasicTokenizer` with
//! `strip_accents=False`, no punctuation split): control characters dropped,
//! whitespace collapsed, spaces around CJK ideographs, NFC, lower case.
//! Start and end tokens, truncation and padding are applied here.
use std::path::Path;

use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};
use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, ErrorKind, Result};

/// The word pattern of CLIP (`CLIPTokenizer.pat`), without its special tokens,
/// which are matched earlier as added tokens.
const CLIP_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// A CLIP tokenizer with its special tokens and fixed sequence length.
pub struct ClipTokenizer {
    inner: Tokenizer,
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
        let id = |text: String| -> Result<u32> {
            inner.token_to_id(&text).ok_or_else(|| {
                Error::model(format!("{}: special token {text:?} is not in the vocabulary", dir.display()))
            })
        };
        let bos = id(token_named("bos_token", "<|startoftext|>"))?;
        let eos = id(token_named("eos_token", "<|endoftext|>"))?;
        let pad = id(token_named("pad_token", "<|endoftext|>"))?;
        let config_len = config
            .get("model_max_length")
            .and_then(|v| v.as_u64())
            .filter(|&n| n >= 2 && n < 100_000)
            .map(|n| n as usize)
            .unwrap_or(77);
        Ok(Self { inner, bos, eos, pad, max_len: config_len.min(max_len.max(2)) })
    }

    /// Token ids of `text`, with start/end tokens, truncated and padded to the
    /// model's sequence length.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let cleaned = clean_text(text);
        let encoding = self
            .inner
            .encode(cleaned.as_str(), false)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("tokenizer failed: {e}")))?;
        let body = encoding.get_ids();
        let take = body.len().min(self.max_len - 2);
        let mut ids = Vec::with_capacity(self.max_len);
        ids.push(self.bos as i64);
        ids.extend(body[..take].iter().map(|&i| i as i64));
        ids.push(self.eos as i64);
        ids.resize(self.max_len, self.pad as i64);
        Ok(ids)
    }

    /// Sequence length (77 for SD).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Number of content tokens `text` has before truncation.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        let cleaned = clean_text(text);
        self.inner
            .encode(cleaned.as_str(), false)
            .map(|e| e.get_ids().len())
            .map_err(|e| Error::internal(format!("tokenizer failed: {e}")))
    }
}

/// transformers' `BasicTokenizer.tokenize` as `CLIPTokenizer` uses it, joined by spaces.
fn clean_text(text: &str) -> String {
    let mut spaced = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        let cp = c as u32;
        if cp == 0 || cp == 0xFFFD || is_control(c) {
            continue;
        }
        if is_whitespace(c) {
            spaced.push(' ');
        } else if is_cjk(cp) {
            spaced.push(' ');
            spaced.push(c);
            spaced.push(' ');
        } else {
            spaced.push(c);
        }
    }
    let normalized: String = spaced.nfc().collect();
    let words: Vec<String> = normalized.split_whitespace().map(|w| w.to_lowercase()).collect();
    words.join(" ")
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r') || c.is_whitespace() && unicode_category_zs(c)
}

/// Python's `unicodedata.category(c) == "Zs"`.
fn unicode_category_zs(c: char) -> bool {
    matches!(c as u32, 0x20 | 0xA0 | 0x1680 | 0x2000..=0x200A | 0x202F | 0x205F | 0x3000)
}

/// `BasicTokenizer._is_control`: categories Cc/Cf/Cn/Co/Cs except \t \n \r.
fn is_control(c: char) -> bool {
    if matches!(c, '\t' | '\n' | '\r') {
        return false;
    }
    let cp = c as u32;
    c.is_control() // Cc
        || matches!(cp, 0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x8E2 | 0x180E | 0x200B..=0x200F
            | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB
            | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
            | 0xE0001 | 0xE0020..=0xE007F) // Cf
        || matches!(cp, 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD) // Co
}

/// `BasicTokenizer._is_chinese_char`: the CJK ideograph blocks.
fn is_cjk(cp: u32) -> bool {
    matches!(cp, 0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
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

#[cfg(test)]
mod tests {
    use super::clean_text;

    #[test]
    fn clean_text_matches_basic_tokenizer_rules() {
        assert_eq!(clean_text("  Mossy\tBRICK\n wall "), "mossy brick wall");
        assert_eq!(clean_text("日本の城"), "日 本 の 城");
        assert_eq!(clean_text("a\u{0}b\u{200B}c"), "abc");
        assert_eq!(clean_text(""), "");
    }
}
