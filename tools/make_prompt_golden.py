#!/usr/bin/env python3
"""Golden embeddings for Kiln's weighted prompts (AUTOMATIC1111 prompt syntax).

What it makes (tests/fixtures/golden/prompts/):
  index.json        one entry per prompt: name, prompt, file, shape, the parsed pieces
                    ([text, weight] or "BREAK"), and per chunk the 77 token ids and weights
  <name>.npy        float32 [1, 77*chunks, 32]: the weighted text embeddings

Reference algorithm: re-implemented here (not imported) from the documented behaviour of
AUTOMATIC1111/stable-diffusion-webui v1.10.x:
  - modules/prompt_parser.py  parse_prompt_attention (its docstring and doctests): the
    attention token pattern, `(x)` *1.1, `[x]` /1.1, `(x:w)`, escapes, BREAK split with
    `\\s*\\bBREAK\\b\\s*`, unclosed brackets applied to the rest (lenient), runs of equal
    weight merged;
  - modules/sd_hijack_clip.py FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line /
    process_tokens / forward: each piece tokenized on its own (no special tokens), chunks of
    75 tokens, BREAK starts a chunk, comma padding backtrack (option default 20), chunk =
    [BOS] + tokens padded with EOS to 75 + [EOS], multiplier 1.0 on BOS/EOS/padding, tokens
    after the first EOS replaced by the pad token when pad != EOS (SD 2.x), an empty prompt is
    one chunk; chunks encoded one by one and joined on the sequence axis (torch.hstack);
  - modules/sd_emphasis.py EmphasisOriginal (the default "Original" emphasis):
    z = last_hidden_state; m0 = z.mean(); z = z * w[:, None]; z = z * (m0 / z.mean()).
    A1111 takes the means with torch in float32; here (and in Kiln) they are accumulated in
    float64 and rounded to float32, see encode() for why that matters on the tiny fixture.
Not covered (and not in Kiln): prompt editing [a:b:n], alternation [a|b], AND, textual
inversion, CLIP skip, the "Original" emphasis's old implementation.

The parser here is deliberately the *lenient* A1111 one; Kiln's Rust parser is strict (it
refuses what A1111 would silently reinterpret). Every prompt below is valid, so the two must
agree exactly; that is what tests/prompts.rs checks.

Encoder: the SAME graph Kiln runs, tests/fixtures/variants/te-bias/text_encoder/model.onnx
(tiny-sd's encoder with a realistic final LayerNorm bias, see tools/make_te_bias_variant.py:
on tiny-sd's zero-bias encoder the mean restoration divides rounding noise by rounding noise),
through onnxruntime (CPUExecutionProvider), one [1, 77] chunk per call. Tokenizer: transformers'
slow CLIPTokenizer from tests/fixtures/tiny-sd/tokenizer (with ftfy, as Kiln follows).

Usage (from the repo root): /work/venv/bin/python tools/make_prompt_golden.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "tiny-sd"
ENCODER = REPO / "tests" / "fixtures" / "variants" / "te-bias" / "text_encoder" / "model.onnx"
OUT = REPO / "tests" / "fixtures" / "golden" / "prompts"
CHUNK = 75
COMMA_BACKTRACK = 20

# --- prompt_parser.parse_prompt_attention, as documented -----------------------------------

ATTENTION_TOKEN = re.compile(
    r"""
      \\[()\[\]\\]          # escaped bracket or backslash
    | \\                    # lone backslash (dropped)
    | \( | \[               # openers
    | :([+-]?[.\d]+)\)      # explicit weight closing a round group
    | \) | \]               # closers
    | [^\\()\[\]:]+         # plain text
    | :                     # a colon that is not a weight
    """,
    re.X,
)
BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_attention(text: str) -> list[list]:
    """[[text, weight], ...]; BREAK is ["BREAK", -1]."""
    out: list[list] = []
    rounds: list[int] = []
    squares: list[int] = []

    def scale(start: int, factor: float) -> None:
        for item in out[start:]:
            item[1] *= factor

    for m in ATTENTION_TOKEN.finditer(text):
        tok, weight = m.group(0), m.group(1)
        if tok.startswith("\\"):
            out.append([tok[1:], 1.0])
        elif tok == "(":
            rounds.append(len(out))
        elif tok == "[":
            squares.append(len(out))
        elif weight is not None and rounds:
            scale(rounds.pop(), float(weight))
        elif tok == ")" and rounds:
            scale(rounds.pop(), 1.1)
        elif tok == "]" and squares:
            scale(squares.pop(), 1 / 1.1)
        else:
            for k, part in enumerate(BREAK_SPLIT.split(tok)):
                if k:
                    out.append(["BREAK", -1])
                out.append([part, 1.0])
    for start in rounds:
        scale(start, 1.1)
    for start in squares:
        scale(start, 1 / 1.1)
    if not out:
        out = [["", 1.0]]
    merged: list[list] = []
    for item in out:
        if merged and merged[-1][1] == item[1]:
            merged[-1][0] += item[0]
        else:
            merged.append(list(item))
    return merged


# --- sd_hijack_clip: chunking ---------------------------------------------------------------


def make_chunks(tok, prompt: str):
    parsed = parse_attention(prompt)
    token_lists = tok([t for t, _ in parsed], truncation=False, add_special_tokens=False)["input_ids"]
    bos, eos = tok.bos_token_id, tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    comma = tok.get_vocab().get(",</w>")
    chunks: list[tuple[list[int], list[float]]] = []
    cur_t: list[int] = []
    cur_w: list[float] = []
    last_comma = -1

    def close():
        nonlocal cur_t, cur_w, last_comma
        ids = [bos] + cur_t + [eos] * (CHUNK - len(cur_t)) + [eos]
        ws = [1.0] + cur_w + [1.0] * (CHUNK - len(cur_w)) + [1.0]
        if pad != eos:
            first = ids.index(eos)
            ids = ids[: first + 1] + [pad] * (len(ids) - first - 1)
        chunks.append((ids, ws))
        cur_t, cur_w, last_comma = [], [], -1

    for ids, (text, weight) in zip(token_lists, parsed):
        if text == "BREAK" and weight == -1:
            close()
            continue
        for t in ids:
            if t == comma:
                last_comma = len(cur_t)
            elif len(cur_t) == CHUNK and last_comma != -1 and len(cur_t) - last_comma <= COMMA_BACKTRACK:
                keep = last_comma + 1
                moved_t, moved_w = cur_t[keep:], cur_w[keep:]
                cur_t, cur_w = cur_t[:keep], cur_w[:keep]
                close()
                cur_t, cur_w = moved_t, moved_w
            if len(cur_t) == CHUNK:
                close()
            cur_t.append(t)
            cur_w.append(weight)
    if cur_t or not chunks:
        close()
    return parsed, chunks


# --- encoding + sd_emphasis "Original" --------------------------------------------------------


def encode(session, chunks) -> tuple[np.ndarray, float]:
    """Weighted embeddings, and the largest relative gap between the float64 mean
    restoration used for the golden and torch's float32 one (A1111's literal code)."""
    import torch

    zs = []
    gap = 0.0
    for ids, ws in chunks:
        z = session.run(["last_hidden_state"], {"input_ids": np.array([ids], dtype=np.int64)})[0].astype(np.float32)
        w = np.asarray(ws, dtype=np.float32)  # A1111: torch.asarray(python floats) -> float32
        # The means are taken in float64 and rounded to float32. A1111 takes them
        # with torch in float32; with a real (non-zero) final LayerNorm bias the two
        # agree to float32 rounding (that gap is printed).
        original_mean = np.float32(z.astype(np.float64).mean())
        zw = z * w[None, :, None]
        new_mean = np.float32(zw.astype(np.float64).mean())
        out = zw * (original_mean / new_mean)
        zs.append(out.astype(np.float32))
        # A1111's own arithmetic, for the record.
        zt = torch.from_numpy(z)
        mt = torch.asarray([ws])
        zt2 = zt * mt.reshape(mt.shape + (1,)).expand(zt.shape)
        ref = (zt2 * (zt.mean() / zt2.mean())).numpy()
        gap = max(gap, float(np.abs(ref - out).max() / max(np.abs(out).max(), 1e-30)))
    return np.concatenate(zs, axis=1), gap


def long_prompt(tok, target: int, words: list[str], sep: str) -> str:
    """Cycles `words` joined by `sep` until the prompt has `target` tokens (exactly)."""
    out: list[str] = []
    i = 0
    while True:
        cand = sep.join(out + [words[i % len(words)]])
        n = len(tok(cand, add_special_tokens=False)["input_ids"])
        if n > target:
            break
        out.append(words[i % len(words)])
        i += 1
    text = sep.join(out)
    # Top up with one-token words to hit the target exactly.
    while len(tok(text, add_special_tokens=False)["input_ids"]) < target:
        text += " stone"
    assert len(tok(text, add_special_tokens=False)["input_ids"]) == target
    return text


def main() -> int:
    import onnxruntime as ort
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(FIXTURE / "tokenizer"))
    assert tok.fix_text is not None, "install ftfy: Kiln follows transformers' ftfy path"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(ENCODER), opts, providers=["CPUExecutionProvider"])

    texture_words = [
        "mossy stone", "cracked bricks", "(wet:1.2) cobbles", "lichen", "[dust]", "autumn leaves",
        "puddles", "moss", "granite", "weathered oak", "rusty iron", "((chipped paint))",
    ]
    plain_list = ["mossy stone", "cracked bricks", "wet cobbles", "lichen", "dust", "autumn leaves", "puddles", "granite"]
    long_150 = long_prompt(tok, 150, plain_list, ", ")
    comma_list = long_prompt(tok, 220, texture_words, ", ")
    # No commas at all: the split falls exactly at 75 tokens.
    plain_words = ["seamless tileable texture of ancient cobblestone", "with moss and (lichen:1.3)", "under soft light"]
    no_commas = long_prompt(tok, 110, plain_words, " ")
    # 72 tokens, a comma, then words: the comma lies within 20 tokens of the chunk end,
    # so everything after it moves to chunk 2 (comma padding backtrack).
    head = long_prompt(tok, 70, ["granite slab"], " ")
    backtrack = head + ", (mossy:1.1) weathered granite floor tiles with deep cracks"

    prompts = [
        ("plain", "mossy stone brick wall"),
        ("round", "a (mossy) stone wall"),
        ("square", "a [mossy] stone wall"),
        ("explicit_up", "a (mossy:1.5) stone wall"),
        ("explicit_down", "a (mossy:0.5) stone wall"),
        ("nested", "((mossy)) stone [[wall]]"),
        ("nested_explicit", "(((rusty:1.3) iron) plate:0.8) on the floor"),
        ("escapes", "a \\(literal\\) \\[bracket\\] wall \\\\ done"),
        ("escape_in_group", "a (b\\)c) d"),
        ("break", "stone wall BREAK moss on top"),
        ("leading_break", "BREAK stone"),
        ("colon_text", "style: oil painting, (grass:1.1)"),
        ("merge", "(unnecessary)(parens)"),
        ("strong", "(lava:2.0) floor, [[[[ash]]]]"),
        ("mixed", "(mossy:1.2), (stone:0.9), [wall], brick BREAK (moss:1.4)"),
        ("long_150", long_150),
        ("long_weighted", comma_list),
        ("long_no_commas", no_commas),
        ("comma_backtrack", backtrack),
        ("empty", ""),
    ]

    OUT.mkdir(parents=True, exist_ok=True)
    index = []
    for name, prompt in prompts:
        parsed, chunks = make_chunks(tok, prompt)
        z, gap = encode(session, chunks)
        np.save(OUT / f"{name}.npy", z)
        n_tokens = len(tok(prompt, add_special_tokens=False)["input_ids"])
        index.append(
            {
                "name": name,
                "prompt": prompt,
                "file": f"{name}.npy",
                "shape": list(z.shape),
                "pieces": ["BREAK" if (t == "BREAK" and w == -1) else [t, w] for t, w in parsed],
                "chunks": [{"ids": ids, "weights": ws} for ids, ws in chunks],
            }
        )
        print(f"{name:16} chunks={len(chunks)} shape={list(z.shape)} raw_tokens={n_tokens} "
              f"f32-mean gap={gap:.1e} {prompt[:50]!r}")
    (OUT / "index.json").write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n")

    import importlib.metadata as md

    versions = {p: md.version(p) for p in ["transformers", "onnxruntime", "torch", "numpy", "ftfy"]}
    (OUT / "README.md").write_text(
        "# weighted-prompt goldens\n\n"
        "Made by `tools/make_prompt_golden.py` (see its docstring for the A1111 files followed): "
        "AUTOMATIC1111 prompt weighting, chunking and \"Original\" emphasis re-implemented in Python, "
        "encoded with `tests/fixtures/variants/te-bias/text_encoder/model.onnx` (tiny-sd's encoder with "
        "a realistic final LayerNorm bias: tools/make_te_bias_variant.py) through onnxruntime.\n\n"
        + "".join(f"- {k} {v}\n" for k, v in versions.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
