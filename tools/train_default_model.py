#!/usr/bin/env python3
"""Train kiln-tiny-textures, Kiln's bundled default model, on the CPU, and export it.

Stages (each resumable; outputs under --work, outside the repo):
  data        render the procedural dataset (tools/texture_dataset.py) into a cache
  classifier  train the family classifier used to judge generated images (procedural data only)
  vae         train the AutoencoderKL; report PSNR and the classifier's accuracy on reconstructions
  latents     encode the dataset once (posterior mean and std) and derive the latent scaling factor
  unet        train the CLIP text encoder and the U-Net together on the cached latents, with EMA
  export      save a diffusers pipeline from the EMA weights and export it with optimum into --out

Why these choices (a 2-core CPU, ~2 hours): the VAE downsamples 4x (64 px -> 16x16x4 latents), so the
U-Net works on 256 positions; group norms have 4+ channels per group (one channel per group is an
instance norm, which erases each channel's mean, i.e. the colour: a first run lost every hue); the
U-Net has attention only at 8x8 and 4x4; the text encoder keeps CLIP's real 49408-token vocabulary (the tokenizer path is the real one) but a 48-wide embedding,
because the embedding table is most of its size. All convolutions train with circular padding: the
data is periodic, and Kiln's `--seamless` mode rewrites the exported (zero-padded) graphs to exactly
that wrap, so seamless generation runs the network the way it was trained. Min-SNR loss weighting and
EMA weights make the most of few steps.

    python tools/train_default_model.py --stages all --vae-minutes 15 --unet-minutes 75
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import texture_dataset as TD  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
torch.set_num_threads(int(os.environ.get("KILN_TRAIN_THREADS", "2")))

TEXT_HIDDEN = 48


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------
def _render_chunk(args):
    start, stop, seed, split = args
    imgs, caps, fams = [], [], []
    for i in range(start, stop):
        s = TD.sample(i, seed, split)
        imgs.append(s.image)
        caps.append(s.caption)
        fams.append(s.family)
    return np.stack(imgs), caps, fams


def render_split(n, seed, split):
    from multiprocessing import Pool

    chunks = [(a, min(n, a + 500), seed, split) for a in range(0, n, 500)]
    with Pool(2) as p:
        parts = p.map(_render_chunk, chunks)
    return (np.concatenate([p[0] for p in parts]), sum([p[1] for p in parts], []), np.array(sum([p[2] for p in parts], [])))


def stage_data(a, work):
    path = work / "data.npz"
    if path.exists():
        log("data: cached")
        return
    t = time.time()
    imgs, caps, fams = render_split(a.train_samples, a.seed, "train")
    vimgs, vcaps, vfams = render_split(1600, a.seed, "eval")
    np.savez(path, images=imgs, captions=np.array(caps), families=fams, eval_images=vimgs, eval_captions=np.array(vcaps), eval_families=vfams)
    log(f"data: {len(imgs)} train + {len(vimgs)} held-out images in {time.time() - t:.0f} s")


def load_data(work):
    d = np.load(work / "data.npz")
    return {k: d[k] for k in d.files}


def to_tensor(imgs):  # uint8 NHWC -> float NCHW in [-1, 1]
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def random_roll(x, multiple=1):
    """Periodic data: any circular shift is another valid sample."""
    h, w = x.shape[-2:]
    dy = int(torch.randint(0, h // multiple, ())) * multiple
    dx = int(torch.randint(0, w // multiple, ())) * multiple
    return torch.roll(x, (dy, dx), (-2, -1))


def circular(module):
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d) and m.padding != (0, 0):
            m.padding_mode = "circular"
    return module


def zeros_padding(module):
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.padding_mode = "zeros"
    return module


# --------------------------------------------------------------------------------------------------
# classifier (the judge; trained only on procedural images)
# --------------------------------------------------------------------------------------------------
class FamilyClassifier(torch.nn.Module):
    def __init__(self, n):
        super().__init__()

        def block(i, o):
            return torch.nn.Sequential(torch.nn.Conv2d(i, o, 3, padding=1), torch.nn.BatchNorm2d(o), torch.nn.ReLU(), torch.nn.Conv2d(o, o, 3, padding=1), torch.nn.BatchNorm2d(o), torch.nn.ReLU(), torch.nn.MaxPool2d(2))

        self.features = torch.nn.Sequential(block(3, 16), block(16, 32), block(32, 64), block(64, 128))
        self.head = torch.nn.Linear(256, n)

    def forward(self, x):  # x in [-1, 1], any size >= 16
        f = self.features(x)
        return self.head(torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1))


def blur(x, sigma):
    if sigma <= 0.05:
        return x
    r = max(2, int(math.ceil(2.5 * sigma)))
    k = torch.exp(-torch.arange(-r, r + 1).float() ** 2 / (2 * sigma * sigma))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="circular"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="circular"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def augment_for_classifier(x):
    # The judge must name the family of an image that is softer than the procedural original (a
    # small VAE loses fine detail), so it trains on blurred copies too: blur up to sigma 2.5 px.
    x = random_roll(x)
    if torch.rand(()) < 0.5:
        x = x.flip(-1)
    x = blur(x, float(torch.rand(()) * 2.5))
    x = x * (1 + 0.08 * torch.randn(x.shape[0], 1, 1, 1)) + 0.04 * torch.randn(x.shape[0], 3, 1, 1)
    x = x + 0.03 * torch.randn_like(x)
    return x.clamp(-1, 1)


def load_classifier(work):
    clf = FamilyClassifier(len(TD.FAMILIES))
    clf.load_state_dict(torch.load(work / "classifier.pt"))
    return clf.eval()


@torch.no_grad()
def classify(clf, x, bs=256):
    return torch.cat([clf(x[i : i + bs]).argmax(1) for i in range(0, len(x), bs)])


def stage_classifier(a, work):
    if (work / "classifier.pt").exists():
        log("classifier: cached")
        return
    d = load_data(work)
    x = to_tensor(d["images"])
    y = torch.from_numpy(d["families"]).long()
    clf = FamilyClassifier(len(TD.FAMILIES))
    opt = torch.optim.AdamW(clf.parameters(), 2e-3, weight_decay=1e-4)
    steps = a.classifier_steps
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    t = time.time()
    for step in range(steps):
        idx = torch.randint(0, len(x), (128,))
        loss = F.cross_entropy(clf(augment_for_classifier(x[idx])), y[idx], label_smoothing=0.05)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            log(f"classifier step {step} loss {loss.item():.3f}")
    clf.eval()
    torch.save(clf.state_dict(), work / "classifier.pt")
    vx = to_tensor(d["eval_images"])
    vy = torch.from_numpy(d["eval_families"]).long()
    acc = (classify(clf, vx) == vy).float().mean().item()
    acc_blur = {s: (classify(clf, blur(vx, s)) == vy).float().mean().item() for s in (1.0, 2.0)}
    log(f"classifier: {time.time() - t:.0f} s, held-out accuracy {acc:.3f} (blurred: {acc_blur})")
    json.dump({"heldout_accuracy": acc, "heldout_accuracy_blurred": acc_blur, "steps": steps}, open(work / "classifier.json", "w"))


# --------------------------------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------------------------------
def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64), layers_per_block=1, latent_channels=4, norm_num_groups=8,
        sample_size=64, scaling_factor=1.0,
    )


def grad_l1(a, b):
    ga = (a - torch.roll(a, 1, -1), a - torch.roll(a, 1, -2))
    gb = (b - torch.roll(b, 1, -1), b - torch.roll(b, 1, -2))
    return sum((p - q).abs().mean() for p, q in zip(ga, gb))


def psnr(a, b):
    mse = ((a - b) ** 2).mean().item() / 4.0  # [-1,1] -> [0,1]
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def stage_vae(a, work):
    ck = work / "vae.pt"
    if (work / "vae.json").exists():
        log("vae: cached")
        return
    d = load_data(work)
    x = to_tensor(d["images"])
    vae = circular(make_vae())
    opt = torch.optim.AdamW(vae.parameters(), 1e-3, weight_decay=0.0)
    step, spent = 0, 0.0
    if ck.exists():
        s = torch.load(ck)
        vae.load_state_dict(s["model"])
        opt.load_state_dict(s["opt"])
        step, spent = s["step"], s["spent"]
    budget = a.vae_minutes * 60
    t0 = time.time() - spent
    last_ck = time.time()
    while time.time() - t0 < budget:
        frac = (time.time() - t0) / budget
        for g in opt.param_groups:
            g["lr"] = 6e-4 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac))) * min(1.0, (step + 1) / 100)
        idx = torch.randint(0, len(x), (a.vae_batch,))
        xb = random_roll(x[idx])
        post = vae.encode(xb).latent_dist
        z = post.sample()
        rec = vae.decode(z).sample
        kl = post.kl().mean() / (64 * 64 * 3)
        loss = (rec - xb).abs().mean() + 0.5 * ((rec - xb) ** 2).mean() + 0.25 * grad_l1(rec, xb) + 1e-4 * kl
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            log(f"vae step {step} loss {loss.item():.4f} psnr {psnr(rec.detach(), xb):.1f} dB kl {kl.item():.3f}")
        if time.time() - last_ck > 300:
            torch.save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step, "spent": time.time() - t0}, ck)
            last_ck = time.time()
    torch.save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step, "spent": time.time() - t0}, ck)
    # judge: PSNR and family accuracy of reconstructions of held-out images (posterior mean)
    vae.eval()
    clf = load_classifier(work)
    vx = to_tensor(d["eval_images"])
    vy = torch.from_numpy(d["eval_families"]).long()
    with torch.no_grad():
        rec = torch.cat([vae.decode(vae.encode(vx[i : i + 200]).latent_dist.mean).sample for i in range(0, len(vx), 200)]).clamp(-1, 1)
    acc = (classify(clf, rec) == vy).float().mean().item()
    report = {"steps": step, "minutes": (time.time() - t0) / 60, "heldout_psnr_db": psnr(rec, vx), "classifier_accuracy_on_reconstructions": acc}
    json.dump(report, open(work / "vae.json", "w"), indent=1)
    log(f"vae: {report}")


def load_vae(work):
    vae = circular(make_vae())
    vae.load_state_dict(torch.load(work / "vae.pt")["model"])
    return vae.eval()


# --------------------------------------------------------------------------------------------------
# latents
# --------------------------------------------------------------------------------------------------
def stage_latents(a, work):
    if (work / "latents.pt").exists():
        log("latents: cached")
        return
    d = load_data(work)
    vae = load_vae(work)
    x = to_tensor(d["images"])
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(x), 256):
            post = vae.encode(x[i : i + 256]).latent_dist
            means.append(post.mean.half())
            stds.append(post.std.half())
    mean, std = torch.cat(means), torch.cat(stds)
    z = mean.float() + std.float() * torch.randn(mean.shape)
    scaling = 1.0 / z.std().item()
    torch.save({"mean": mean, "std": std, "scaling_factor": scaling}, work / "latents.pt")
    log(f"latents: {tuple(mean.shape)}, latent std {z.std().item():.3f} -> scaling_factor {scaling:.5f}")


# --------------------------------------------------------------------------------------------------
# text encoder + U-Net
# --------------------------------------------------------------------------------------------------
def make_tokenizer(vocab_dir):
    from transformers import CLIPTokenizer

    return CLIPTokenizer(str(vocab_dir / "vocab.json"), str(vocab_dir / "merges.txt"), unk_token="<|endoftext|>",
                         bos_token="<|startoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>", model_max_length=77)


def vocab_dir(work):
    v = work / "vocab"
    if not (v / "vocab.json").exists():
        from make_tiny_fixture import find_bpe, write_clip_vocab

        write_clip_vocab(find_bpe(None), v)
    return v


def make_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=TEXT_HIDDEN, intermediate_size=TEXT_HIDDEN * 2, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=TEXT_HIDDEN, hidden_act="quick_gelu",
        layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))


def make_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(64, 96, 128), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN, attention_head_dim=8, norm_num_groups=16)


def make_scheduler_config():
    from make_tiny_fixture import SD15_SCHEDULER

    return dict(SD15_SCHEDULER)


def stage_unet(a, work):
    from diffusers import DDPMScheduler

    lat = torch.load(work / "latents.pt")
    scaling = lat["scaling_factor"]
    d = load_data(work)
    captions = list(d["captions"])
    tok = make_tokenizer(vocab_dir(work))
    uniq = sorted(set(captions)) + [""]
    ids_of = {c: i for i, c in enumerate(uniq)}
    all_ids = torch.tensor(tok(uniq, padding="max_length", max_length=77, truncation=True).input_ids)
    cap_index = torch.tensor([ids_of[c] for c in captions])
    empty = ids_of[""]

    torch.manual_seed(a.seed)
    te, unet = make_text_encoder(), circular(make_unet())
    ema_te, ema_unet = make_text_encoder(), circular(make_unet())
    ema_te.load_state_dict(te.state_dict())
    ema_unet.load_state_dict(unet.state_dict())
    params = list(te.parameters()) + list(unet.parameters())
    opt = torch.optim.AdamW(params, a.lr, weight_decay=1e-2)
    noise_sched = DDPMScheduler.from_config(make_scheduler_config())
    acp = noise_sched.alphas_cumprod
    snr = acp / (1 - acp)
    ck = work / "unet.pt"
    step, spent = 0, 0.0
    if ck.exists():
        s = torch.load(ck)
        te.load_state_dict(s["te"]); unet.load_state_dict(s["unet"])
        ema_te.load_state_dict(s["ema_te"]); ema_unet.load_state_dict(s["ema_unet"])
        opt.load_state_dict(s["opt"]); step, spent = s["step"], s["spent"]
        log(f"unet: resumed at step {step} ({spent / 60:.1f} min)")
    budget = a.unet_minutes * 60
    t0 = time.time() - spent
    last_ck = time.time()
    ema_params = list(ema_te.parameters()) + list(ema_unet.parameters())

    def save():
        torch.save({"te": te.state_dict(), "unet": unet.state_dict(), "ema_te": ema_te.state_dict(), "ema_unet": ema_unet.state_dict(),
                    "opt": opt.state_dict(), "step": step, "spent": time.time() - t0, "scaling_factor": scaling}, ck)

    while time.time() - t0 < budget:
        frac = (time.time() - t0) / budget
        lr = a.lr * min(1.0, (step + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, len(cap_index), (a.batch,))
        z = (lat["mean"][idx].float() + lat["std"][idx].float() * torch.randn(a.batch, 4, 16, 16)) * scaling
        z = random_roll(z)
        if torch.rand(()) < 0.5:
            z = z.flip(-1)
        ci = cap_index[idx].clone()
        ci[torch.rand(a.batch) < 0.1] = empty  # caption dropout: unconditional branch for guidance
        noise = torch.randn_like(z)
        t = torch.randint(0, 1000, (a.batch,))
        zt = noise_sched.add_noise(z, noise, t)
        ctx = te(all_ids[ci])[0]
        pred = unet(zt, t, ctx).sample
        w = torch.clamp(snr[t], max=5.0) / snr[t]  # min-SNR-5 weighting, epsilon prediction
        loss = (w * ((pred - noise) ** 2).mean((1, 2, 3))).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(a.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema_params, params):
                pe.lerp_(p, 1 - decay)
        if step % 50 == 0:
            log(f"unet step {step} loss {loss.item():.4f} lr {lr:.2e} {(time.time() - t0) / step:.2f} s/step")
        if time.time() - last_ck > 300:
            save()
            last_ck = time.time()
    save()
    log(f"unet: done, {step} steps in {(time.time() - t0) / 60:.1f} min")


# --------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------
def build_pipeline(work):
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    s = torch.load(work / "unet.pt")
    te, unet = make_text_encoder(), make_unet()
    te.load_state_dict(s["ema_te"])
    unet.load_state_dict(s["ema_unet"])
    vae = make_vae()
    vae.load_state_dict(torch.load(work / "vae.pt")["model"])
    vae.register_to_config(scaling_factor=float(s["scaling_factor"]))
    for m in (te, unet, vae):
        zeros_padding(m).eval()
    return StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=make_tokenizer(vocab_dir(work)), unet=unet,
                                   scheduler=PNDMScheduler.from_config(make_scheduler_config()), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False), s["step"]


def stage_export(a, work):
    from optimum.exporters.onnx import main_export

    pipe, steps = build_pipeline(work)
    out = Path(a.out).resolve()
    with tempfile.TemporaryDirectory(prefix="kiln_tiny_textures_") as tmp:
        pt = Path(tmp) / "pt"
        pipe.save_pretrained(str(pt), safe_serialization=True)
        card = (out / "README.md").read_text() if (out / "README.md").exists() else None  # the hand-written model card
        if out.exists():
            shutil.rmtree(out)
        main_export(str(pt), output=str(out), task="text-to-image", device="cpu", do_validation=True, local_files_only=True)
        if card is not None:
            (out / "README.md").write_text(card)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    info = {"unet_steps": steps, "bytes": total,
            "params": {"text_encoder": sum(p.numel() for p in pipe.text_encoder.parameters()),
                       "unet": sum(p.numel() for p in pipe.unet.parameters()),
                       "vae": sum(p.numel() for p in pipe.vae.parameters())}}
    json.dump(info, open(work / "export.json", "w"), indent=1)
    log(f"export: {out} {total / 1e6:.1f} MB {info}")


STAGES = ["data", "classifier", "vae", "latents", "unet", "export"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", default="all", help="comma list of " + ",".join(STAGES) + " or all")
    ap.add_argument("--work", default=os.environ.get("KILN_TRAIN_DIR", "/work/kiln-train"))
    ap.add_argument("--out", default=str(REPO / "models" / "kiln-tiny-textures"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-samples", type=int, default=24000)
    ap.add_argument("--classifier-steps", type=int, default=400)
    ap.add_argument("--vae-minutes", type=float, default=14)
    ap.add_argument("--vae-batch", type=int, default=24)
    ap.add_argument("--unet-minutes", type=float, default=80)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--ema", type=float, default=0.999)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    stages = STAGES if a.stages == "all" else a.stages.split(",")
    for s in stages:
        t = time.time()
        globals()["stage_" + s](a, work)
        log(f"stage {s}: {time.time() - t:.0f} s")


if __name__ == "__main__":
    main()
