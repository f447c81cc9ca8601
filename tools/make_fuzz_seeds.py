#!/usr/bin/env python3
"""Writes the seed corpora of the cargo-fuzz targets into fuzz/seeds/<target>/.

Small, valid inputs from which libFuzzer's mutations start: prompts, the
tiny fixture's configs, tiny ONNX graphs with padded convolutions, and PNGs
of every colour type. Needs numpy, Pillow, onnx and torch (/work/venv has them).
Run from the repository root: /work/venv/bin/python tools/make_fuzz_seeds.py
"""
import io
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"


def write(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def prompts():
    for i, text in enumerate([
        "mossy stone brick wall",
        "a (red:1.3) [[brick]] wall, (moss:0.8) BREAK lava",
        "\\(escaped\\) ((nested (deep:1.5))) &amp; caf\u00e9 \uff21 \u201cquoted\u201d",
        "(unclosed [mixed) BREAK BREAK (x:1e400)",
        ", ".join(["grass"] * 60),
    ]):
        write("prompt", f"prompt{i}.txt", text.encode())


def configs():
    fx = ROOT / "tests" / "fixtures" / "tiny-sd"
    files = ["model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
             "vae_decoder/config.json", "text_encoder/config.json"]
    parts = [(fx / f).read_bytes() if (fx / f).is_file() else b"{}" for f in files]
    matting = (ROOT / "tests" / "fixtures" / "matting" / "fixed" / "config.json")
    parts.append(matting.read_bytes() if matting.is_file() else b"{}")
    write("configs", "tiny-sd", bytes([20]) + b"\0".join(parts))
    dpm = b'{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity, "use_karras_sigmas": true, "num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "prediction_type": "v_prediction", "timestep_spacing": "trailing"}'
    write("configs", "dpm-infinity", bytes([4]) + b"\0".join([parts[0], dpm] + parts[2:]))


def conv_model(pads, opset, auto_pad=None, group=1):
    w = numpy_helper.from_array(np.ones((2, 2 // group, 3, 3), np.float32), "w")
    attrs = {"pads": pads, "kernel_shape": [3, 3], "group": group}
    if auto_pad:
        attrs = {"auto_pad": auto_pad, "kernel_shape": [3, 3]}
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **attrs),
             helper.make_node("Relu", ["y"], ["z"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, "h", 8])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2, "h", 8])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def matmul_model():
    """The shapes the int8 rewrite handles: two MatMuls sharing an input and a
    weight used twice, a Gemm with transB and a bias (converted), and a Gemm
    with alpha 2 (left alone)."""
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    g = numpy_helper.from_array(rng.standard_normal((5, 3)).astype(np.float32), "g")
    c = numpy_helper.from_array(rng.standard_normal((5,)).astype(np.float32), "c")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"], name="mm1"),
             helper.make_node("MatMul", ["x", "w"], ["b"], name=""),
             helper.make_node("Add", ["a", "b"], ["s"], name="add"),
             helper.make_node("Gemm", ["s", "g", "c"], ["t"], name="gemm", transB=1),
             helper.make_node("Gemm", ["t", "g"], ["u"], name="gemm2", alpha=2.0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("u", TensorProto.FLOAT, [2, 3])], [w, g, c])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def attention_model():
    """diffusers' attention as PyTorch exports it (torch.onnx.export, as
    optimum does): q, k, v projections, heads split, scaled_dot_product_attention,
    heads merged; self-attention over dynamic tokens, 2 heads of 4."""
    import torch
    import torch.nn.functional as F

    class Attention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(5)
            self.q, self.k, self.v = (torch.nn.Linear(8, 8, bias=False) for _ in range(3))
            self.out = torch.nn.Linear(8, 8)

        def forward(self, x):
            b = x.shape[0]
            split = lambda t: t.view(b, -1, 2, 4).transpose(1, 2)
            o = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)))
            return self.out(o.transpose(1, 2).reshape(b, -1, 8))

    buf = io.BytesIO()
    torch.onnx.export(Attention().eval(), (torch.zeros(1, 6, 8),), buf, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "b", 1: "s"}, "y": {0: "b", 1: "s"}}, opset_version=17, dynamo=False)
    return buf.getvalue()


def lora_slots_model():
    """Layers the LoRA-slot rewrite adapts, named as exports name them: a
    MatMul with its bias Add, a Gemm with transB, a strided 3x3 Conv."""
    rng = np.random.default_rng(4)
    w = numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal((6,)).astype(np.float32), "b")
    g = numpy_helper.from_array(rng.standard_normal((2, 6)).astype(np.float32), "g")
    k = numpy_helper.from_array(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "k")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"], name="/blocks.0/ff/MatMul"),
             helper.make_node("Add", ["b", "a"], ["ab"], name="/blocks.0/ff/Add"),
             helper.make_node("Gemm", ["ab", "g"], ["t"], name="/blocks.0/proj/Gemm", transB=1),
             helper.make_node("Reshape", ["t", "shape"], ["img"], name="/reshape"),
             helper.make_node("Conv", ["img", "k"], ["y"], name="/down.0/conv/Conv",
                              kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])]
    shape = numpy_helper.from_array(np.array([1, 2, 2, 2], np.int64), "shape")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 1, 1])], [w, b, g, k, shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def onnx_graphs():
    write("onnx", "matmul-gemm", bytes([0]) + matmul_model())
    write("onnx", "lora-slots", bytes([0]) + lora_slots_model())
    write("onnx", "attention-sdpa", bytes([0]) + attention_model())
    for axes in range(3):
        write("onnx", f"conv-pads-{axes}", bytes([axes]) + conv_model([1, 1, 1, 1], 17))
    write("onnx", "conv-asymmetric", bytes([2]) + conv_model([0, 2, 1, 0], 13, group=2))
    write("onnx", "conv-auto-pad", bytes([2]) + conv_model([1, 1, 1, 1], 17, auto_pad="SAME_UPPER"))
    write("onnx", "conv-opset9", bytes([2]) + conv_model([1, 1, 1, 1], 9))
    for kind in ["fixed", "dynamic"]:
        p = ROOT / "tests" / "fixtures" / "matting" / kind / "model.onnx"
        if p.is_file():
            write("onnx", f"matting-{kind}", bytes([2]) + p.read_bytes())


def pngs():
    rng = np.random.default_rng(14)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    images = {
        "rgb8": Image.fromarray(rgb, "RGB"),
        "rgba8": Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA"),
        "grey8": Image.fromarray(rgb[..., 0], "L"),
        "palette": Image.fromarray(rgb, "RGB").convert("P"),
        "grey16": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257),
        "one-bit": Image.fromarray(rgb[..., 0] > 127),
    }
    for name, img in images.items():
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        write("png_inputs", name, buf.getvalue())
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG", interlace=1)
    write("png_inputs", "rgb8-interlaced", buf.getvalue())


def adapters():
    # Small LoRA and embedding files of every layout the test fixtures hold
    # (kohya, PEFT with metadata, LyCORIS LoHa/LoKr, refusals, diffusers'
    # learned_embeds, an SDXL clip_l/clip_g embedding).
    fixtures = ROOT / "tests" / "fixtures"
    for rel in [
        "lora/brick-style.safetensors",
        "lora/detail.kohya.safetensors",
        "lora/detail.peft.safetensors",
        "lora/broken/loha.safetensors",
        "lora/broken/rank_mismatch.safetensors",
        "lora/learned_embeds.safetensors",
        "sdxl-embedding/xl-brick.safetensors",
        "lycoris/broken/loha_tucker.safetensors",
        "lycoris/broken/lokr_too_wide.safetensors",
        "lycoris/broken/lokr_missing_w2.safetensors",
        "lycoris/broken/mixed_kinds.safetensors",
        "lycoris_full/broken/bias_only.safetensors",
        "lycoris_full/broken/shared_bias.safetensors",
    ]:
        write("adapters", rel.replace("/", "-"), (fixtures / rel).read_bytes())
    # Valid LyCORIS and DoRA modules, small: a 3x3 conv and attention and
    # text-encoder projections of the LoHa, f16 LoKr, kohya DoRA and
    # LyCORIS-made (Tucker, DoRA on LoHa/LoKr, per-input DoRA, full diff) fixtures.
    from safetensors.numpy import load_file, save

    for rel, modules in [
        ("lycoris/patina.loha.safetensors", ("resnets_0_conv1", "attn1_to_q")),
        ("lycoris/grain.lokr.safetensors", ("resnets_0_conv1", "layers_0_mlp_fc1", "attn2_to_k")),
        ("dora/sheen.kohya.safetensors", ("resnets_0_conv1", "attn1_to_q", "layers_0_mlp_fc1")),
        # Made by LyCORIS: Tucker cores on the conv, DoRA on LoHa/LoKr, DoRA per input channel.
        ("lycoris_native/relief.locon.safetensors", ("resnets_0_conv1", "attn1_to_q")),
        ("lycoris_native/weave.loha.safetensors", ("resnets_0_conv1", "layers_0_mlp_fc1")),
        ("lycoris_native/knot.lokr.safetensors", ("resnets_0_conv1", "attn2_to_k")),
        ("lycoris_native/gloss.loha.safetensors", ("resnets_0_conv1", "attn1_to_q")),
        ("lycoris_native/frost.lokr.safetensors", ("resnets_0_conv1", "layers_0_mlp_fc1")),
        ("lycoris_native/dust.locon.safetensors", ("resnets_0_conv1", "attn1_to_q", "layers_0_mlp_fc1")),
        # LyCORIS full: diff and diff_b on a conv and a Linear with a bias, diff alone on the text encoder.
        ("lycoris_full/sculpt.full.safetensors", ("resnets_0_conv1", "attn1_to_out_0", "layers_0_mlp_fc1")),
    ]:
        tensors = load_file(str(fixtures / rel))
        subset = {}
        for key, value in sorted(tensors.items()):
            module = key.split(".")[0]
            if ("down_blocks_0_" in module or "layers_0_" in module) and module.endswith(modules):
                subset[key] = value
        write("adapters", rel.replace("/", "-"), save(subset))


def c_options():
    # Structured by the target's `arbitrary` decoding: any bytes are an input;
    # these only give the first mutations something of each size to work on.
    rng = np.random.default_rng(14)
    for i, n in enumerate([2, 300, 400]):
        write("c_options", f"bytes{i}", rng.integers(0, 256, n, dtype=np.uint8).tobytes())


if __name__ == "__main__":
    # (png_inputs/palette-partial-entry is not written here: it is the input
    # CI's fuzz run found crashing png 0.18.1, kept as it was.)
    adapters()
    c_options()
    prompts()
    configs()
    onnx_graphs()
    pngs()
