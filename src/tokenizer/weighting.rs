//! AUTOMATIC1111-style prompt weighting (`(text)`, `[text]`, `(text:1.5)`,
//! `BREAK`), parsed strictly.
//!
//! The semantics follow stable-diffusion-webui 1.10 (`modules/prompt_parser.py`
//! `parse_prompt_attention`, `modules/sd_hijack_clip.py`, `modules/sd_emphasis.py`
//! "Original"):
//!
//! - `(text)` multiplies the weight of everything inside by 1.1, `[text]` by
//!   1 / 1.1, `(text:w)` by `w`; nesting multiplies (the innermost group is
//!   applied first, in f64, exactly as Python does it).
//! - `\(` `\)` `\[` `\]` `\\` are the literal characters. A backslash before
//!   any other character is dropped, as A1111 does.
//! - `BREAK` (upper case, a whole word, outside brackets) ends the current
//!   75-token chunk; the whitespace around it is removed.
//! - After parsing, neighbouring pieces of equal weight are joined, and each
//!   piece is tokenized on its own.
//!
//! Where A1111 is lenient, Kiln refuses with `InvalidArgument` and a message
//! naming the 1-based character column, so that **every prompt Kiln accepts is
//! read exactly as A1111 reads it**:
//!
//! - an unmatched `)` or `]`, a bracket closed by the other kind (`(a]`), or
//!   one never closed (A1111 silently applies an unclosed bracket to the rest);
//! - inside `( )`, a `:` not followed directly by a number and `)`
//!   (`(a:x)`, `(a:)`, `(a: 1.5)`, `(a:1.2.3)`): A1111 reads most of these as
//!   literal text, `(a:1.2.3)` makes it fail;
//! - a `:` or `|` directly inside `[ ]`: that is A1111's prompt editing
//!   (`[from:to:when]`) and alternation (`[a|b]`), which Kiln does not do;
//! - `BREAK` inside brackets (A1111 then encodes the word "BREAK" with a
//!   negative weight).
//!
//! Not supported at all (read as plain text): `AND` (composable diffusion),
//! textual-inversion embedding names, LoRA tags `<lora:...>`.
use crate::error::{Error, Result};

/// How a prompt's text becomes text-encoder input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PromptSyntax {
    /// diffusers: the text as typed, truncated to 77 tokens (the default).
    #[default]
    Plain,
    /// AUTOMATIC1111: weighting syntax, `BREAK`, and prompts longer than 75
    /// tokens in 75-token chunks.
    Weighted,
}

/// One piece of a parsed prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Text with the weight every token of it gets.
    Text {
        /// The text, escapes resolved.
        text: String,
        /// Product of the enclosing groups' multipliers (f64, as Python).
        weight: f64,
    },
    /// `BREAK`: start a new chunk.
    Break,
}

const ROUND: f64 = 1.1;

#[derive(Clone, Copy)]
enum Kind {
    Round,
    Square,
}

struct Open {
    kind: Kind,
    start: usize,
    column: usize,
}

/// Python's `str.isspace()` (what `\s` matches in `re` on str).
fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// A word character for `\b` in Python's `re` on str.
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn syntax_error(column: usize, message: impl std::fmt::Display) -> Error {
    Error::invalid(format!("prompt syntax error at column {column}: {message}"))
}

/// Whether `s` is a number Python's `float()` takes and A1111's weight pattern
/// `[+-]?[.\d]+` matches: digits with at most one `.`, at least one digit.
fn is_weight_number(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits = body.chars().filter(|c| c.is_ascii_digit()).count();
    let dots = body.chars().filter(|&c| c == '.').count();
    digits > 0 && dots <= 1 && digits + dots == body.len()
}

/// Parses `prompt` into weighted pieces (see the module docs for the rules).
pub fn parse(prompt: &str) -> Result<Vec<Piece>> {
    let chars: Vec<char> = prompt.chars().collect();
    let n = chars.len();
    // (text, weight) with `None` text for BREAK.
    let mut res: Vec<(Option<String>, f64)> = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    let multiply = |res: &mut Vec<(Option<String>, f64)>, start: usize, m: f64| {
        for item in &mut res[start..] {
            item.1 *= m;
        }
    };
    let describe = |o: &Open| match o.kind {
        Kind::Round => format!("'(' opened at column {}", o.column),
        Kind::Square => format!("'[' opened at column {}", o.column),
    };
    let mut i = 0;
    while i < n {
        let c = chars[i];
        let column = i + 1;
        match c {
            '\\' => match chars.get(i + 1) {
                Some(&e @ ('(' | ')' | '[' | ']' | '\\')) => {
                    res.push((Some(e.to_string()), 1.0));
                    i += 2;
                }
                _ => {
                    // A1111 keeps an empty piece for a lone backslash.
                    res.push((Some(String::new()), 1.0));
                    i += 1;
                }
            },
            '(' => {
                stack.push(Open { kind: Kind::Round, start: res.len(), column });
                i += 1;
            }
            '[' => {
                stack.push(Open { kind: Kind::Square, start: res.len(), column });
                i += 1;
            }
            ')' | ']' => {
                let (kind, m) = if c == ')' { (Kind::Round, ROUND) } else { (Kind::Square, 1.0 / ROUND) };
                match stack.last() {
                    None => return Err(syntax_error(column, format!("'{c}' has no matching opening bracket (write \\{c} for a literal one)"))),
                    Some(o) if !matches!((o.kind, kind), (Kind::Round, Kind::Round) | (Kind::Square, Kind::Square)) => {
                        return Err(syntax_error(column, format!("'{c}' closes the {}", describe(o))));
                    }
                    Some(_) => {
                        let o = stack.pop().expect("non-empty");
                        multiply(&mut res, o.start, m);
                    }
                }
                i += 1;
            }
            ':' => {
                // A1111's weight token: `:` [+-]? [.\d]+ `)`.
                let mut j = i + 1;
                if matches!(chars.get(j), Some('+' | '-')) {
                    j += 1;
                }
                let digits_start = j;
                while j < n && (chars[j].is_ascii_digit() || chars[j] == '.') {
                    j += 1;
                }
                let weight_token = j > digits_start && chars.get(j) == Some(&')');
                let found: String = chars[i..n.min(i + 12)].iter().collect();
                match stack.last() {
                    Some(o @ Open { kind: Kind::Square, .. }) => {
                        return Err(syntax_error(
                            column,
                            format!("':' directly inside the {}: prompt editing [from:to:when] is not supported", describe(o)),
                        ));
                    }
                    Some(o) if !weight_token => {
                        return Err(syntax_error(
                            column,
                            format!("in the {}, ':' must be followed directly by a number and ')', as in (text:1.2); found {found:?}", describe(o)),
                        ));
                    }
                    Some(_) => {
                        let number: String = chars[i + 1..j].iter().collect();
                        if !is_weight_number(&number) {
                            return Err(syntax_error(column + 1, format!("invalid weight {number:?}")));
                        }
                        let w: f64 = number.parse().map_err(|_| syntax_error(column + 1, format!("invalid weight {number:?}")))?;
                        let o = stack.pop().expect("non-empty");
                        multiply(&mut res, o.start, w);
                        i = j + 1;
                    }
                    None if weight_token => {
                        return Err(syntax_error(j + 1, "')' has no matching opening bracket (write \\) for a literal one)"));
                    }
                    None => {
                        res.push((Some(":".into()), 1.0));
                        i += 1;
                    }
                }
            }
            _ => {
                let start = i;
                while i < n && !matches!(chars[i], '\\' | '(' | ')' | '[' | ']' | ':') {
                    i += 1;
                }
                if let Some(o @ Open { kind: Kind::Square, .. }) = stack.last() {
                    if let Some(k) = chars[start..i].iter().position(|&c| c == '|') {
                        return Err(syntax_error(
                            start + k + 1,
                            format!("'|' directly inside the {}: alternation [a|b] is not supported", describe(o)),
                        ));
                    }
                }
                push_splitting_breaks(&chars[start..i], start, !stack.is_empty(), &mut res)?;
            }
        }
    }
    if let Some(o) = stack.first() {
        let more = if stack.len() > 1 { format!(" ({} brackets are unclosed)", stack.len()) } else { String::new() };
        let close = match o.kind {
            Kind::Round => ')',
            Kind::Square => ']',
        };
        return Err(syntax_error(o.column, format!("the {} is never closed with '{close}'{more}", describe(o))));
    }
    if res.is_empty() {
        res.push((Some(String::new()), 1.0));
    }
    // Join neighbours of equal weight (A1111 compares the f64 weights exactly).
    let mut pieces: Vec<Piece> = Vec::new();
    for (text, weight) in res {
        match (text, pieces.last_mut()) {
            (None, _) => pieces.push(Piece::Break),
            (Some(t), Some(Piece::Text { text, weight: w })) if *w == weight => text.push_str(&t),
            (Some(t), _) => pieces.push(Piece::Text { text: t, weight }),
        }
    }
    Ok(pieces)
}

/// Splits one run of plain text on `\s*\bBREAK\b\s*` (Python `re.split`
/// semantics) and pushes the parts with BREAK markers between them.
fn push_splitting_breaks(seg: &[char], offset: usize, in_brackets: bool, res: &mut Vec<(Option<String>, f64)>) -> Result<()> {
    const WORD: [char; 5] = ['B', 'R', 'E', 'A', 'K'];
    let mut part_start = 0;
    let mut search = 0;
    let mut k = 0;
    while k + WORD.len() <= seg.len() {
        let hit = seg[k..k + WORD.len()] == WORD
            && (k == 0 || !is_word(seg[k - 1]))
            && seg.get(k + WORD.len()).is_none_or(|&c| !is_word(c));
        if !hit {
            k += 1;
            continue;
        }
        if in_brackets {
            return Err(syntax_error(offset + k + 1, "BREAK must be outside brackets"));
        }
        let mut m_start = k;
        while m_start > search && is_space(seg[m_start - 1]) {
            m_start -= 1;
        }
        let mut m_end = k + WORD.len();
        while m_end < seg.len() && is_space(seg[m_end]) {
            m_end += 1;
        }
        res.push((Some(seg[part_start..m_start].iter().collect()), 1.0));
        res.push((None, -1.0));
        part_start = m_end;
        search = m_end;
        k = m_end;
    }
    res.push((Some(seg[part_start..].iter().collect()), 1.0));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str, weight: f64) -> Piece {
        Piece::Text { text: text.into(), weight }
    }

    #[test]
    fn documented_examples() {
        assert_eq!(parse("normal text").unwrap(), vec![t("normal text", 1.0)]);
        assert_eq!(parse("an (important) word").unwrap(), vec![t("an ", 1.0), t("important", 1.1), t(" word", 1.0)]);
        assert_eq!(parse("\\(literal\\]").unwrap(), vec![t("(literal]", 1.0)]);
        assert_eq!(parse("(unnecessary)(parens)").unwrap(), vec![t("unnecessaryparens", 1.1)]);
        // A1111's docstring example, balanced: a ((house:1.3)) [on] a (hill:0.5), sun, (((sky))).
        let got = parse("a ((house:1.3)) [on] (hill:0.5), sun, (((sky))).").unwrap();
        assert_eq!(
            got,
            vec![
                t("a ", 1.0),
                t("house", 1.3 * 1.1),
                t(" ", 1.0),
                t("on", 1.0 / 1.1),
                t(" ", 1.0),
                t("hill", 0.5),
                t(", sun, ", 1.0),
                t("sky", 1.1 * 1.1 * 1.1),
                t(".", 1.0),
            ]
        );
        assert_eq!(parse("").unwrap(), vec![t("", 1.0)]);
    }

    #[test]
    fn breaks_split_and_eat_whitespace() {
        assert_eq!(parse("a BREAK b").unwrap(), vec![t("a", 1.0), Piece::Break, t("b", 1.0)]);
        assert_eq!(parse("BREAK").unwrap(), vec![t("", 1.0), Piece::Break, t("", 1.0)]);
        assert_eq!(parse("aBREAK b, BREAKING").unwrap(), vec![t("aBREAK b, BREAKING", 1.0)]);
        assert_eq!(parse("a,BREAK,b").unwrap(), vec![t("a,", 1.0), Piece::Break, t(",b", 1.0)]);
        assert_eq!(
            parse("x BREAK BREAK y").unwrap(),
            vec![t("x", 1.0), Piece::Break, t("", 1.0), Piece::Break, t("y", 1.0)]
        );
    }

    #[test]
    fn escapes_and_colons() {
        assert_eq!(parse("a \\\\ b").unwrap(), vec![t("a \\ b", 1.0)]);
        assert_eq!(parse("c:\\d").unwrap(), vec![t("c:d", 1.0)]);
        assert_eq!(parse("style: oil").unwrap(), vec![t("style: oil", 1.0)]);
        assert_eq!(parse("(a:.5)(b:2.)(c:-1)").unwrap(), vec![t("a", 0.5), t("b", 2.0), t("c", -1.0)]);
        assert_eq!(parse("((a:2))").unwrap(), vec![t("a", 2.0 * 1.1)]);
        assert_eq!(parse("(\\(x\\))").unwrap(), vec![t("(x)", 1.1)]);
        assert_eq!(parse("a|b").unwrap(), vec![t("a|b", 1.0)]);
    }

    fn err(p: &str) -> String {
        let e = parse(p).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::InvalidArgument);
        e.message().to_string()
    }

    #[test]
    fn strict_errors_name_the_column() {
        assert!(err("a (b").contains("column 3"), "{}", err("a (b"));
        assert!(err("a b)").contains("column 4"));
        assert!(err("a [b").contains("column 3"));
        assert!(err("a]").contains("column 2"));
        assert!(err("(a]").contains("closes the '(' opened at column 1"));
        assert!(err("(a:x)").contains("column 3"));
        assert!(err("(a:)").contains("column 3"));
        assert!(err("(a: 1.5)").contains("column 3"));
        assert!(err("(a:1.2.3)").contains("invalid weight"));
        assert!(err("(a:.)").contains("invalid weight"));
        assert!(err("x:1.5)").contains("column 6"));
        assert!(err("[a:b:0.5]").contains("prompt editing"));
        assert!(err("[a|b]").contains("column 3"));
        assert!(err("(a BREAK b)").contains("column 4"));
        assert!(err("((a)").contains("column 1"));
    }
}
