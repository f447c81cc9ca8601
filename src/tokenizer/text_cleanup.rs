//! Prompt clean-up before BPE: transformers' `CLIPTokenizer` with ftfy,
//! `whitespace_clean(ftfy.fix_text(text)).lower()`, re-implemented for the
//! parts of ftfy 6.3's default `fix_text` that matter for prompts (see the
//! tokenizer module docs for what is knowingly left out).
use unicode_normalization::UnicodeNormalization;

/// transformers' `CLIPTokenizer` clean-up with ftfy:
/// `whitespace_clean(ftfy.fix_text(text)).lower()`.
pub(super) fn clean_text(text: &str) -> String {
    let fixed = fix_text(text);
    // `whitespace_clean`: `re.sub(r"\s+", " ", t).strip()`.
    let words: Vec<&str> = fixed.split(is_py_space).filter(|w| !w.is_empty()).collect();
    words.join(" ").to_lowercase()
}

/// Python's `str.isspace`, which is what `\s` matches in a `str` regex.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{1C}'..='\u{1F}')
}

/// `ftfy.fix_text` with its default config, minus mojibake repair (see the
/// module doc). ftfy fixes the text line by line; HTML unescaping ("auto") is
/// turned off at the first line containing `<` and stays off for the rest.
fn fix_text(text: &str) -> String {
    let mut unescape = true;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        unescape &= !line.contains('<');
        out.push_str(&fix_line(line, unescape));
    }
    out
}

/// `ftfy.fix_and_explain` on one line: the fixers in ftfy's order, repeated
/// until the text stops changing (so `&amp;lt;` ends as `<`).
fn fix_line(line: &str, unescape: bool) -> String {
    let mut text = line.to_string();
    // ftfy loops without a bound; every fixer here shrinks or settles the text.
    for _ in 0..16 {
        let mut next = if unescape { unescape_html(&text) } else { text.clone() };
        next = map_chars(&next, fix_c1_control);
        next = map_chars(&next, fix_latin_ligature);
        next = map_chars(&next, fix_character_width);
        next = map_chars(&next, uncurl_quote);
        next = fix_line_breaks(&next);
        next = remove_terminal_escapes(&next);
        next = map_chars(&next, remove_control_char);
        next = next.nfc().collect();
        if next == text {
            break;
        }
        text = next;
    }
    text
}

/// Applies a per-character fixer that writes each character's replacement.
fn map_chars(text: &str, fix: fn(char, &mut String)) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        fix(c, &mut out);
    }
    out
}

/// Windows-1252 characters for bytes 0x80..=0x9F (ftfy's "sloppy" variant:
/// the five undefined bytes stay as the C1 controls they are).
const CP1252_80_9F: [char; 32] = [
    '\u{20AC}', '\u{81}', '\u{201A}', '\u{192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{2C6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8D}', '\u{17D}', '\u{8F}',
    '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{2DC}', '\u{2122}', '\u{161}', '\u{203A}', '\u{153}', '\u{9D}', '\u{17E}', '\u{178}',
];

/// `fix_c1_controls`: U+0080..U+009F read as the Windows-1252 bytes they were.
fn fix_c1_control(c: char, out: &mut String) {
    match c as u32 {
        cp @ 0x80..=0x9F => out.push(CP1252_80_9F[(cp - 0x80) as usize]),
        _ => out.push(c),
    }
}

/// `fix_latin_ligatures`: Latin typographic ligatures and legacy digraphs.
fn fix_latin_ligature(c: char, out: &mut String) {
    out.push_str(match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "\u{2BC}n", // the apostrophe is then straightened by `uncurl_quote`
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "D\u{17D}",
        'ǅ' => "D\u{17E}",
        'ǆ' => "d\u{17E}",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "\u{17F}t",
        'ﬆ' => "st",
        _ => {
            out.push(c);
            return;
        }
    });
}

/// `fix_character_width`: the Halfwidth and Fullwidth Forms block
/// (U+FF01..U+FFEF) to its NFKC form, and the ideographic space to a space.
fn fix_character_width(c: char, out: &mut String) {
    match c as u32 {
        0x3000 => out.push(' '),
        0xFF01..=0xFFEF => out.extend(std::iter::once(c).nfkc()),
        _ => out.push(c),
    }
}

/// `uncurl_quotes`: U+2018..U+201B and U+02BC to `'`, U+201C..U+201F to `"`.
fn uncurl_quote(c: char, out: &mut String) {
    out.push(match c {
        '\u{2BC}' | '\u{2018}'..='\u{201B}' => '\'',
        '\u{201C}'..='\u{201F}' => '"',
        _ => c,
    });
}

/// `fix_line_breaks`: CRLF, CR, U+2028, U+2029 and U+0085 to `\n`.
fn fix_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n").replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

/// `remove_terminal_escapes`: ANSI sequences `ESC [ (digit|;)* letter`
/// (ftfy's `\d` also takes non-ASCII digits; only ASCII ones are taken here).
fn remove_terminal_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("\u{1B}[") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let params = after.find(|c: char| !(c.is_ascii_digit() || c == ';')).unwrap_or(after.len());
        match after[params..].chars().next() {
            Some(c) if c.is_ascii_alphabetic() => rest = &after[params + 1..],
            _ => {
                out.push_str("\u{1B}[");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `remove_control_chars`: invisible controls ftfy drops. Whitespace controls
/// (tab, LF, FF, CR), C1 controls, joiners and bidi marks are kept.
fn remove_control_char(c: char, out: &mut String) {
    let drop = matches!(c as u32, 0x00..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0x206A..=0x206F | 0xFEFF
        | 0xFFF9..=0xFFFC);
    if !drop {
        out.push(c);
    }
}

/// ftfy's `unescape_html`: every `&name;`, `&#123;` or `&#x7B;` (1 to 24 ASCII
/// letters/digits) that names a character is replaced; anything else stays.
fn unescape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let numeric = after.starts_with('#');
        let body_start = usize::from(numeric);
        let body_len = after[body_start..].bytes().take_while(u8::is_ascii_alphanumeric).count();
        let end = body_start + body_len;
        let decoded = if (1..=24).contains(&body_len) && after[end..].starts_with(';') {
            let body = &after[body_start..end];
            match numeric {
                true => decode_char_ref(body),
                false => decode_named_entity(body),
            }
        } else {
            None
        };
        match decoded {
            Some(s) => {
                out.push_str(&s);
                rest = &after[end + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `&#DDD;` / `&#xHH;` as Python's `html.unescape` decodes them. `None` when
/// that would not consume the whole reference (ftfy then keeps the text), and
/// for `;` itself, which ftfy's check cannot tell apart from that case.
fn decode_char_ref(body: &str) -> Option<String> {
    let (digits, radix) = match body.strip_prefix(['x', 'X']) {
        Some(hex) => (hex, 16),
        None => (body, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    // Saturate: anything past U+10FFFF decodes the same way.
    let cp = digits.chars().fold(0u64, |n, c| (n * radix as u64 + c.to_digit(radix).unwrap() as u64).min(1 << 32));
    let decoded = match cp {
        0x00 => "\u{FFFD}".to_string(),
        0x0D => "\r".to_string(),
        0x80..=0x9F => CP1252_80_9F[(cp - 0x80) as usize].to_string(),
        0xD800..=0xDFFF | 0x11_0000.. => "\u{FFFD}".to_string(),
        // Python's `_invalid_codepoints`: other controls and noncharacters vanish.
        0x01..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0xFDD0..=0xFDEF => String::new(),
        _ if cp & 0xFFFE == 0xFFFE => String::new(),
        _ => char::from_u32(cp as u32)?.to_string(),
    };
    (decoded != ";").then_some(decoded)
}

/// A named entity as ftfy decodes it: the exact (case-sensitive) name, or an
/// all-caps spelling of a lower-case name (`&EACUTE;` -> `É`, `&SZLIG;` -> `SS`),
/// except where Python's `html.unescape` would read the all-caps name as
/// one of its legacy semicolon-less entities plus trailing text (`&LTIMES;`).
fn decode_named_entity(name: &str) -> Option<String> {
    if let Some(c) = lookup_entity(name) {
        return Some(c.to_string());
    }
    let lower = name.to_ascii_lowercase();
    if name != name.to_ascii_uppercase() || lower == name {
        return None;
    }
    const LEGACY_CAPS: [&str; 8] = ["AMP", "COPY", "ETH", "GT", "LT", "QUOT", "REG", "THORN"];
    if LEGACY_CAPS.iter().any(|p| name.starts_with(p) && name != *p) {
        return None;
    }
    lookup_entity(&lower).map(|c| c.to_uppercase().collect())
}

fn lookup_entity(name: &str) -> Option<char> {
    HTML_ENTITIES.binary_search_by(|(n, _)| n.cmp(&name)).ok().map(|i| HTML_ENTITIES[i].1)
}

/// The HTML 4 named entities plus `apos`, with their HTML5 values, sorted by name.
#[rustfmt::skip]
const HTML_ENTITIES: [(&str, char); 253] = [
    ("AElig", '\u{c6}'), ("Aacute", '\u{c1}'), ("Acirc", '\u{c2}'), ("Agrave", '\u{c0}'), ("Alpha", '\u{391}'),
    ("Aring", '\u{c5}'), ("Atilde", '\u{c3}'), ("Auml", '\u{c4}'), ("Beta", '\u{392}'), ("Ccedil", '\u{c7}'),
    ("Chi", '\u{3a7}'), ("Dagger", '\u{2021}'), ("Delta", '\u{394}'), ("ETH", '\u{d0}'), ("Eacute", '\u{c9}'),
    ("Ecirc", '\u{ca}'), ("Egrave", '\u{c8}'), ("Epsilon", '\u{395}'), ("Eta", '\u{397}'), ("Euml", '\u{cb}'),
    ("Gamma", '\u{393}'), ("Iacute", '\u{cd}'), ("Icirc", '\u{ce}'), ("Igrave", '\u{cc}'), ("Iota", '\u{399}'),
    ("Iuml", '\u{cf}'), ("Kappa", '\u{39a}'), ("Lambda", '\u{39b}'), ("Mu", '\u{39c}'), ("Ntilde", '\u{d1}'),
    ("Nu", '\u{39d}'), ("OElig", '\u{152}'), ("Oacute", '\u{d3}'), ("Ocirc", '\u{d4}'), ("Ograve", '\u{d2}'),
    ("Omega", '\u{3a9}'), ("Omicron", '\u{39f}'), ("Oslash", '\u{d8}'), ("Otilde", '\u{d5}'), ("Ouml", '\u{d6}'),
    ("Phi", '\u{3a6}'), ("Pi", '\u{3a0}'), ("Prime", '\u{2033}'), ("Psi", '\u{3a8}'), ("Rho", '\u{3a1}'),
    ("Scaron", '\u{160}'), ("Sigma", '\u{3a3}'), ("THORN", '\u{de}'), ("Tau", '\u{3a4}'), ("Theta", '\u{398}'),
    ("Uacute", '\u{da}'), ("Ucirc", '\u{db}'), ("Ugrave", '\u{d9}'), ("Upsilon", '\u{3a5}'), ("Uuml", '\u{dc}'),
    ("Xi", '\u{39e}'), ("Yacute", '\u{dd}'), ("Yuml", '\u{178}'), ("Zeta", '\u{396}'), ("aacute", '\u{e1}'),
    ("acirc", '\u{e2}'), ("acute", '\u{b4}'), ("aelig", '\u{e6}'), ("agrave", '\u{e0}'), ("alefsym", '\u{2135}'),
    ("alpha", '\u{3b1}'), ("amp", '&'), ("and", '\u{2227}'), ("ang", '\u{2220}'), ("apos", '\''),
    ("aring", '\u{e5}'), ("asymp", '\u{2248}'), ("atilde", '\u{e3}'), ("auml", '\u{e4}'), ("bdquo", '\u{201e}'),
    ("beta", '\u{3b2}'), ("brvbar", '\u{a6}'), ("bull", '\u{2022}'), ("cap", '\u{2229}'), ("ccedil", '\u{e7}'),
    ("cedil", '\u{b8}'), ("cent", '\u{a2}'), ("chi", '\u{3c7}'), ("circ", '\u{2c6}'), ("clubs", '\u{2663}'),
    ("cong", '\u{2245}'), ("copy", '\u{a9}'), ("crarr", '\u{21b5}'), ("cup", '\u{222a}'), ("curren", '\u{a4}'),
    ("dArr", '\u{21d3}'), ("dagger", '\u{2020}'), ("darr", '\u{2193}'), ("deg", '\u{b0}'), ("delta", '\u{3b4}'),
    ("diams", '\u{2666}'), ("divide", '\u{f7}'), ("eacute", '\u{e9}'), ("ecirc", '\u{ea}'), ("egrave", '\u{e8}'),
    ("empty", '\u{2205}'), ("emsp", '\u{2003}'), ("ensp", '\u{2002}'), ("epsilon", '\u{3b5}'), ("equiv", '\u{2261}'),
    ("eta", '\u{3b7}'), ("eth", '\u{f0}'), ("euml", '\u{eb}'), ("euro", '\u{20ac}'), ("exist", '\u{2203}'),
    ("fnof", '\u{192}'), ("forall", '\u{2200}'), ("frac12", '\u{bd}'), ("frac14", '\u{bc}'), ("frac34", '\u{be}'),
    ("frasl", '\u{2044}'), ("gamma", '\u{3b3}'), ("ge", '\u{2265}'), ("gt", '>'), ("hArr", '\u{21d4}'),
    ("harr", '\u{2194}'), ("hearts", '\u{2665}'), ("hellip", '\u{2026}'), ("iacute", '\u{ed}'), ("icirc", '\u{ee}'),
    ("iexcl", '\u{a1}'), ("igrave", '\u{ec}'), ("image", '\u{2111}'), ("infin", '\u{221e}'), ("int", '\u{222b}'),
    ("iota", '\u{3b9}'), ("iquest", '\u{bf}'), ("isin", '\u{2208}'), ("iuml", '\u{ef}'), ("kappa", '\u{3ba}'),
    ("lArr", '\u{21d0}'), ("lambda", '\u{3bb}'), ("lang", '\u{27e8}'), ("laquo", '\u{ab}'), ("larr", '\u{2190}'),
    ("lceil", '\u{2308}'), ("ldquo", '\u{201c}'), ("le", '\u{2264}'), ("lfloor", '\u{230a}'), ("lowast", '\u{2217}'),
    ("loz", '\u{25ca}'), ("lrm", '\u{200e}'), ("lsaquo", '\u{2039}'), ("lsquo", '\u{2018}'), ("lt", '<'),
    ("macr", '\u{af}'), ("mdash", '\u{2014}'), ("micro", '\u{b5}'), ("middot", '\u{b7}'), ("minus", '\u{2212}'),
    ("mu", '\u{3bc}'), ("nabla", '\u{2207}'), ("nbsp", '\u{a0}'), ("ndash", '\u{2013}'), ("ne", '\u{2260}'),
    ("ni", '\u{220b}'), ("not", '\u{ac}'), ("notin", '\u{2209}'), ("nsub", '\u{2284}'), ("ntilde", '\u{f1}'),
    ("nu", '\u{3bd}'), ("oacute", '\u{f3}'), ("ocirc", '\u{f4}'), ("oelig", '\u{153}'), ("ograve", '\u{f2}'),
    ("oline", '\u{203e}'), ("omega", '\u{3c9}'), ("omicron", '\u{3bf}'), ("oplus", '\u{2295}'), ("or", '\u{2228}'),
    ("ordf", '\u{aa}'), ("ordm", '\u{ba}'), ("oslash", '\u{f8}'), ("otilde", '\u{f5}'), ("otimes", '\u{2297}'),
    ("ouml", '\u{f6}'), ("para", '\u{b6}'), ("part", '\u{2202}'), ("permil", '\u{2030}'), ("perp", '\u{22a5}'),
    ("phi", '\u{3c6}'), ("pi", '\u{3c0}'), ("piv", '\u{3d6}'), ("plusmn", '\u{b1}'), ("pound", '\u{a3}'),
    ("prime", '\u{2032}'), ("prod", '\u{220f}'), ("prop", '\u{221d}'), ("psi", '\u{3c8}'), ("quot", '"'),
    ("rArr", '\u{21d2}'), ("radic", '\u{221a}'), ("rang", '\u{27e9}'), ("raquo", '\u{bb}'), ("rarr", '\u{2192}'),
    ("rceil", '\u{2309}'), ("rdquo", '\u{201d}'), ("real", '\u{211c}'), ("reg", '\u{ae}'), ("rfloor", '\u{230b}'),
    ("rho", '\u{3c1}'), ("rlm", '\u{200f}'), ("rsaquo", '\u{203a}'), ("rsquo", '\u{2019}'), ("sbquo", '\u{201a}'),
    ("scaron", '\u{161}'), ("sdot", '\u{22c5}'), ("sect", '\u{a7}'), ("shy", '\u{ad}'), ("sigma", '\u{3c3}'),
    ("sigmaf", '\u{3c2}'), ("sim", '\u{223c}'), ("spades", '\u{2660}'), ("sub", '\u{2282}'), ("sube", '\u{2286}'),
    ("sum", '\u{2211}'), ("sup", '\u{2283}'), ("sup1", '\u{b9}'), ("sup2", '\u{b2}'), ("sup3", '\u{b3}'),
    ("supe", '\u{2287}'), ("szlig", '\u{df}'), ("tau", '\u{3c4}'), ("there4", '\u{2234}'), ("theta", '\u{3b8}'),
    ("thetasym", '\u{3d1}'), ("thinsp", '\u{2009}'), ("thorn", '\u{fe}'), ("tilde", '\u{2dc}'), ("times", '\u{d7}'),
    ("trade", '\u{2122}'), ("uArr", '\u{21d1}'), ("uacute", '\u{fa}'), ("uarr", '\u{2191}'), ("ucirc", '\u{fb}'),
    ("ugrave", '\u{f9}'), ("uml", '\u{a8}'), ("upsih", '\u{3d2}'), ("upsilon", '\u{3c5}'), ("uuml", '\u{fc}'),
    ("weierp", '\u{2118}'), ("xi", '\u{3be}'), ("yacute", '\u{fd}'), ("yen", '\u{a5}'), ("yuml", '\u{ff}'),
    ("zeta", '\u{3b6}'), ("zwj", '\u{200d}'), ("zwnj", '\u{200c}'),
];

#[cfg(test)]
mod tests {
    use super::{clean_text, HTML_ENTITIES};

    #[test]
    fn clean_text_follows_ftfy_path() {
        assert_eq!(clean_text("  Mossy\tBRICK\n wall "), "mossy brick wall");
        // No spaces around CJK ideographs on the ftfy path.
        assert_eq!(clean_text("日本の城"), "日本の城");
        // ftfy drops NUL but keeps zero-width characters.
        assert_eq!(clean_text("a\u{0}b\u{200B}c"), "ab\u{200B}c");
        assert_eq!(clean_text(""), "");
        assert_eq!(clean_text("it\u{2019}s \u{201C}Smart\u{201D}"), "it's \"smart\"");
        assert_eq!(clean_text("\u{FB01}ne \u{FB04}"), "fine ffl");
        assert_eq!(clean_text("\u{FF26}\u{FF55}\u{FF4C}\u{FF4C}\u{3000}x"), "full x");
        assert_eq!(clean_text("e\u{301}"), "\u{E9}");
        assert_eq!(clean_text("\u{1B}[31mred\u{1B}[0m"), "red");
        assert_eq!(clean_text("a\u{85}b"), "a\u{2026}b"); // C1 read as Windows-1252
    }

    #[test]
    fn html_entities_follow_ftfy() {
        assert_eq!(clean_text("salt &amp; pepper"), "salt & pepper");
        assert_eq!(clean_text("&amp;lt;"), "<"); // repeated until stable
        assert_eq!(clean_text("&#233;&#xE9;&#XE9;"), "ééé");
        assert_eq!(clean_text("&EACUTE; &SZLIG;"), "é ss");
        assert_eq!(clean_text("&LTIMES; &nTILDE; &#59; &#12ab; &amp"), "&ltimes; &ntilde; &#59; &#12ab; &amp");
        // "auto": a line with `<` keeps its entities, and so do later lines.
        assert_eq!(clean_text("&amp;\n<b> &amp;\n&amp;"), "& <b> &amp; &amp;");
        assert!(HTML_ENTITIES.windows(2).all(|w| w[0].0 < w[1].0), "entity table must be sorted");
    }
}
