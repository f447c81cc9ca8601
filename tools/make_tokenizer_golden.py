#!/usr/bin/env python3
"""Golden CLIP token ids for Kiln's Rust tokenizer tests.

What it makes:
  tests/fixtures/golden/tokenizer_ids.json           [{"prompt", "ids"[77]}] from transformers'
                                                      slow CLIPTokenizer (tiny-sd/tokenizer,
                                                      SD 1.x convention: pad = <|endoftext|>)
  tests/fixtures/golden/tokenizer_ids_pad_bang.json  same, SD 2.x convention: pad_token "!" (id 0)
  tests/fixtures/golden/tokenizer_ids_noftfy.json    same prompts through transformers' fallback
                                                      path (BasicTokenizer, used when ftfy is absent)
  tests/fixtures/tokenizer-pad-bang/                 the SD 2.x-style tokenizer files
  a tokenizer section in tests/fixtures/golden/README.md

Why: diffusers tokenizes with `tokenizer(prompt, padding="max_length",
max_length=77, truncation=True)`. Kiln's Rust tokenizer must produce the same
ids for the same vocab.json/merges.txt. ftfy changes the result for some inputs
(HTML entities, curly quotes, full-width forms, CJK spacing differs in the
fallback path), so the file records which path made the golden ids.

Usage (from repo root): /work/venv/bin/python tools/make_tokenizer_golden.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOK_DIR = REPO / "tests" / "fixtures" / "tiny-sd" / "tokenizer"
GOLDEN = REPO / "tests" / "fixtures" / "golden"
PAD_BANG_DIR = REPO / "tests" / "fixtures" / "tokenizer-pad-bang"
MAX_LEN = 77
BOS, EOS = 49406, 49407

LONG = (
    "a highly detailed seamless tileable texture of ancient mossy cobblestone bricks with "
    "cracks, lichen, puddles and scattered autumn leaves, photorealistic, 8k, physically "
    "based rendering, albedo map, normal map, roughness map, ambient occlusion, studio "
    "lighting, octane render, unreal engine 5, trending on artstation, masterpiece, best "
    "quality, ultra sharp focus, intricate details, volumetric fog, golden hour, cinematic "
    "composition, wide angle lens, depth of field, bokeh, award winning photograph"
)

PROMPTS = [
    # plain / case
    "a photo of a cat",
    "mossy stone brick wall",
    "rusty iron plate",
    "Mossy Stone BRICK Wall",
    "A PHOTO OF A CAT",
    "grass",
    "a",
    # punctuation
    "brick-wall, mossy!!",
    "stone; wood: metal... glass?",
    "wall/floor\\ceiling",
    "\"quoted\" and 'single'",
    "a--b__c..d",
    # apostrophes / contractions
    "it's a dog's life",
    "don't stop, we'll see, they're here, I'm ok, you've been, he'd go",
    "rock 'n' roll",
    "it\u2019s curly",  # right single quotation mark (ftfy uncurls it)
    "\u201csmart quotes\u201d",
    # numbers
    "1024x1024",
    "3.14",
    "2nd floor, 3rd wall, 21st century",
    "4k 8k 16k uhd",
    "year 1999 and 2024",
    "0123456789",
    # unicode
    "café crème",
    "naïve façade",
    "日本の城",
    "🔥 lava",
    "lava 🔥🔥🔥 and ❄️ ice",
    "αβγ δέλτα",
    "Москва кирпич",
    "Ｆｕｌｌｗｉｄｔｈ text",  # ftfy folds full-width forms
    "\ufb01ne ligature",  # ﬁ ligature (ftfy expands it)
    "e\u0301 combining acute",  # NFC -> é
    # whitespace
    "tab\tseparated\twords",
    "line\nbreak\r\nwindows",
    "multiple     spaces",
    "   leading and trailing   ",
    "\t\n  \n",
    "",
    # long (> 77 tokens, truncated)
    LONG,
    # html entities, special tokens
    "salt &amp; pepper",
    "a &lt;b&gt; tag",
    "<|endoftext|>",
    "before <|endoftext|> after",
    "<|startoftext|>hello",
    # prompt-weighting syntax (tokenized literally by diffusers)
    "(mossy:1.3) [stone]",
    "((masterpiece)), {best quality}, <lora:foo:0.8>",
    # urls, underscores, misc
    "https://example.com/textures?id=42&x=y",
    "snake_case_name and CamelCaseName",
    "user@example.com #hashtag $100 50% a+b=c ~tilde `backtick` ^caret |pipe|",
    "sci-fi metal panel, 4-way symmetric, PBR",
]

PAD_BANG_PROMPTS = [
    "a photo of a cat",
    "mossy stone brick wall",
    "",
    "rusty iron plate, (mossy:1.3)",
    LONG,
    "!!! bang !!!",
]


def encode(tok, prompts):
    out = []
    for p in prompts:
        ids = tok(p, padding="max_length", max_length=MAX_LEN, truncation=True).input_ids
        assert len(ids) == MAX_LEN and ids[0] == BOS and EOS in ids, (p, ids)
        out.append({"prompt": p, "ids": ids})
    return out


def check_padding(rows, pad_id):
    """After stripping the trailing pad run, the last id must be EOS."""
    for r in rows:
        ids = list(r["ids"])
        if pad_id == EOS:
            assert ids[-1] == EOS, (r["prompt"], ids)
            continue
        while ids and ids[-1] == pad_id:
            ids.pop()
        assert ids and ids[-1] == EOS, (r["prompt"], r["ids"])


def fallback_path(tok):
    """Switch a slow CLIPTokenizer to the path transformers uses without ftfy."""
    from transformers.models.clip.tokenization_clip import BasicTokenizer

    tok.fix_text = None
    tok.nlp = BasicTokenizer(strip_accents=False, do_split_on_punc=False)
    tok.cache = {"<|startoftext|>": "<|startoftext|>", "<|endoftext|>": "<|endoftext|>"}
    return tok


def main() -> None:
    import importlib.metadata as md

    from transformers import CLIPTokenizer, CLIPTokenizerFast

    try:
        import ftfy  # noqa: F401

        ftfy_version = md.version("ftfy")
    except ImportError:
        ftfy_version = None

    tok = CLIPTokenizer.from_pretrained(str(TOK_DIR))
    path_used = "ftfy" if tok.fix_text is not None else "BasicTokenizer fallback"
    if ftfy_version is None:
        sys.exit("ftfy is not installed; install it (tools/requirements-fixtures.txt) so the golden ids use "
                 "the same path as openai CLIP and the usual diffusers setup")
    assert tok("a photo of a cat").input_ids == [BOS, 320, 1125, 539, 320, 2368, EOS]

    assert len(PROMPTS) >= 40
    rows = encode(tok, PROMPTS)
    check_padding(rows, EOS)
    long_row = next(r for r in rows if r["prompt"] == LONG)
    assert long_row["ids"][-1] == EOS and EOS not in long_row["ids"][:-1], "long prompt must truncate"
    GOLDEN.mkdir(parents=True, exist_ok=True)
    (GOLDEN / "tokenizer_ids.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    # the path transformers takes without ftfy
    nof = fallback_path(CLIPTokenizer.from_pretrained(str(TOK_DIR)))
    rows_nof = encode(nof, PROMPTS)
    (GOLDEN / "tokenizer_ids_noftfy.json").write_text(
        json.dumps(rows_nof, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    diff_nof = [r["prompt"] for r, s in zip(rows, rows_nof) if r["ids"] != s["ids"]]

    # the fast (Rust `tokenizers`) implementation, for information only
    fast = CLIPTokenizerFast.from_pretrained(str(TOK_DIR), from_slow=True)
    rows_fast = encode(fast, PROMPTS)
    diff_fast = [r["prompt"] for r, s in zip(rows, rows_fast) if r["ids"] != s["ids"]]

    # SD 2.x convention: pad with "!" (id 0)
    bang = CLIPTokenizer.from_pretrained(str(TOK_DIR), pad_token="!")
    assert bang.pad_token_id == 0
    if PAD_BANG_DIR.exists():
        for f in PAD_BANG_DIR.iterdir():
            f.unlink()
    bang.save_pretrained(str(PAD_BANG_DIR))
    bang2 = CLIPTokenizer.from_pretrained(str(PAD_BANG_DIR))
    assert bang2.pad_token_id == 0
    rows_bang = encode(bang2, PAD_BANG_PROMPTS)
    check_padding(rows_bang, 0)
    (GOLDEN / "tokenizer_ids_pad_bang.json").write_text(
        json.dumps(rows_bang, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )

    def show(p):
        return json.dumps(p, ensure_ascii=False)

    section = [
        "<!-- tokenizer-golden:begin -->",
        "## Tokenizer ids (tools/make_tokenizer_golden.py)",
        "",
        f"- transformers {md.version('transformers')}, slow `CLIPTokenizer.from_pretrained(\"tests/fixtures/tiny-sd/tokenizer\")`,",
        "  `padding=\"max_length\", max_length=77, truncation=True`; every row has 77 ids, starts with 49406,",
        "  and the EOS 49407 is always present (truncation keeps it as the last id).",
        f"- **Path used: {path_used}** (ftfy {ftfy_version} installed). transformers' CLIPTokenizer",
        "  imports ftfy when available: text = whitespace_clean(ftfy.fix_text(text)).lower(). Without ftfy it uses",
        "  `BasicTokenizer(strip_accents=False, do_split_on_punc=False)` (lower-case, NFC, control-char",
        "  removal, spaces around CJK ideographs) instead.",
        "- `tokenizer_ids.json`: ftfy path (= openai CLIP's own preprocessing). Literal `<|endoftext|>` /",
        "  `<|startoftext|>` in the prompt are matched as special tokens (ids 49407 / 49406), not BPE'd.",
        f"- `tokenizer_ids_noftfy.json`: the same prompts through the no-ftfy fallback; it differs on {len(diff_nof)} prompt(s):",
        *[f"  - {show(p)}" for p in diff_nof],
        f"- For information, the fast tokenizer (`CLIPTokenizerFast`, HF `tokenizers`) differs from",
        f"  `tokenizer_ids.json` on {len(diff_fast)} prompt(s):",
        *[f"  - {show(p)}" for p in diff_fast],
        "- `tokenizer_ids_pad_bang.json`: SD 2.x convention, pad_token \"!\" (id 0): after the EOS the row is",
        "  padded with 0. Tokenizer files in `tests/fixtures/tokenizer-pad-bang/`.",
        "<!-- tokenizer-golden:end -->",
    ]
    readme = GOLDEN / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.exists() else "# golden outputs\n"
    block = "\n".join(section)
    pat = re.compile(r"<!-- tokenizer-golden:begin -->.*?<!-- tokenizer-golden:end -->", re.S)
    text = pat.sub(lambda _m: block, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + block + "\n"
    readme.write_text(text, encoding="utf-8")

    print(f"path: {path_used}; {len(rows)} prompts; pad-bang {len(rows_bang)}")
    print("differs without ftfy:", diff_nof)
    print("differs in fast tokenizer:", diff_fast)


if __name__ == "__main__":
    main()
