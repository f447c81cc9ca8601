"""txt2img: examples/c/txt2img.c in Python, and the same pixels.

    python txt2img.py MODEL_DIR PROMPT OUT.png

Loads ONNX Runtime, loads the model, generates one image at the model's native size with the
default settings and seed 42, and writes it as a PNG. Every failure prints Kiln's own message.
"""

from __future__ import annotations

import sys

import kiln


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print("usage: txt2img MODEL_DIR PROMPT OUT.png", file=sys.stderr)
        return 2
    model_dir, prompt, out = argv[1:]
    step = "kiln_runtime_create"
    try:
        with kiln.Runtime() as runtime:
            print(f"ONNX Runtime {runtime.onnxruntime_version}")
            step = "kiln_model_load"
            with runtime.load_model(model_dir) as model:
                step = "kiln_model_generate"
                with model.generate(prompt, seed=42) as image:
                    print(f"generated {image.width}x{image.height}")
                    step = "kiln_image_write_png"
                    image.save(out)
    except kiln.KilnError as e:
        print(f"txt2img: {step} failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
