"""The book's training recipe in plain PyTorch + diffusers, for scripts/bench/time_to_quality.sh.

    python scripts/bench/train_diffusers.py --like CKPT --out DIR --cpu-minutes 5,10,20 [--threads 1]

CKPT is a checkpoint written by the book's `train` example. Its `config`
metadata (a TrainConfig) gives everything: the UNet config (diffusers field
names, so UNet2DModel.from_config builds the same network), the schedule,
prediction, loss weighting, optimizer, warm-up, gradient clipping, EMA decay,
label dropout, batch size and seed. This script trains that recipe with
diffusers' UNet2DModel and torch.optim.AdamW:
  - the same data order: the book's seeded Fisher–Yates permutation per epoch
    (data::batches::permutation), reimplemented here bit for bit;
  - the same loss: t ~ U{0..T-1}, ε ~ N(0, I), MSE to the target, min-SNR weights;
  - the same EMA rule: d = min(decay, (1 + k)/(10 + k)).
Random draws (t, ε, dropout of labels) come from torch's generator, so they
differ from the Rust side's: only the recipe and the data order are shared.

At each CPU-time budget (process CPU time, user + system, all threads added up,
as the book's `train --cpu-minutes` counts it) it writes DIR/snap-M.safetensors,
readable by the book's `sample --checkpoint` (tensors ema.* and model.*, the
same config metadata), and appends "M steps cpu_seconds" to DIR/log.txt.
"""
import argparse
import json
import math
import os
import time
import gzip

import numpy as np
import torch
from diffusers import UNet2DModel
from safetensors import safe_open
from safetensors.torch import save_file

MASK = (1 << 64) - 1


def permutation(n, seed, epoch):
    """data::batches::permutation: splitmix64 driving a Fisher–Yates shuffle."""
    state = ((seed * 0x9E3779B97F4A7C15) & MASK) ^ ((epoch + 0xD1B54A32D192ED03) & MASK)
    p = list(range(n))
    for i in range(n - 1, 0, -1):
        state = (state + 0x9E3779B97F4A7C15) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        z ^= z >> 31
        j = z % (i + 1)
        p[i], p[j] = p[j], p[i]
    return torch.tensor(p, dtype=torch.int64)


def load_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--like", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cpu-minutes", required=True, help="comma-separated budgets, ascending")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    with safe_open(args.like, "pt") as f:
        meta = f.metadata()
    tc = json.loads(meta["config"])
    unet_cfg = {k: v for k, v in tc["model"].items() if k != "model"}
    if tc["model"].get("model") != "unet":
        raise SystemExit(f"{args.like}: not a UNet checkpoint")
    if tc["schedule"] != "linear":
        raise SystemExit("only the linear schedule is implemented here")
    if tc.get("lr_schedule", {"kind": "constant"})["kind"] != "constant":
        raise SystemExit("only a constant learning rate after warm-up is implemented here")
    T, batch, seed = tc["timesteps"], tc["batch_size"], tc["seed"]
    opt_cfg = tc["optimizer"]
    K = unet_cfg["num_class_embeds"] - 1

    images = torch.from_numpy(load_idx(os.path.join(args.data_dir, "train-images-idx3-ubyte.gz")).copy())
    images = images.reshape(-1, 1, 28, 28).float() / 127.5 - 1.0
    labels = torch.from_numpy(load_idx(os.path.join(args.data_dir, "train-labels-idx1-ubyte.gz")).astype(np.int64))
    n = images.shape[0]
    per_epoch = n // batch

    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0)
    sqrt_ab = alpha_bar.sqrt().float()
    sqrt_1m = (1 - alpha_bar).sqrt().float()
    snr = (alpha_bar / (1 - alpha_bar)).float()
    weighting = tc.get("loss_weighting", {"kind": "uniform"})
    pred = tc["prediction"]

    torch.manual_seed(seed)
    model = UNet2DModel.from_config(unet_cfg)
    model.train()
    ema = UNet2DModel.from_config(unet_cfg)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=opt_cfg["lr"], betas=(opt_cfg["beta1"], opt_cfg["beta2"]),
                            eps=opt_cfg["eps"], weight_decay=opt_cfg["weight_decay"])
    budgets = [float(m) for m in args.cpu_minutes.split(",")]
    log = open(os.path.join(args.out, "log.txt"), "a")
    cpu0, step, perm, perm_epoch = time.process_time(), 0, None, -1
    ema_params, live_params = list(ema.parameters()), list(model.parameters())

    while budgets:
        epoch, i = divmod(step, per_epoch)
        if epoch != perm_epoch:
            perm, perm_epoch = permutation(n, seed, epoch), epoch
        idx = perm[i * batch:(i + 1) * batch]
        x0, y = images[idx], labels[idx]
        if tc["p_uncond"] > 0:
            y = torch.where(torch.rand(y.shape) < tc["p_uncond"], torch.full_like(y, K), y)
        t = torch.randint(0, T, (x0.shape[0],))
        noise = torch.randn_like(x0)
        a, s = sqrt_ab[t].view(-1, 1, 1, 1), sqrt_1m[t].view(-1, 1, 1, 1)
        x_t = a * x0 + s * noise
        target = {"epsilon": noise, "sample": x0, "velocity": a * noise - s * x0}[pred]
        out = model(x_t, t, class_labels=y).sample
        per_image = (out - target).pow(2).flatten(1).mean(1)
        if weighting["kind"] == "min_snr":
            clipped = snr[t].clamp(max=weighting["gamma"])
            w = {"epsilon": clipped / snr[t], "velocity": clipped / (snr[t] + 1), "sample": clipped}[pred]
            loss = (per_image * w).mean()
        else:
            loss = per_image.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tc.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc["grad_clip"])
        warm = min((step + 1) / tc["warmup"], 1.0) if tc["warmup"] > 0 else 1.0
        for g in opt.param_groups:
            g["lr"] = opt_cfg["lr"] * warm
        opt.step()
        d = min(tc["ema_decay"], (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, live_params, 1 - d)
        step += 1
        cpu = time.process_time() - cpu0
        if cpu >= budgets[0] * 60:
            m = budgets.pop(0)
            tensors = {f"ema.{k}": v.contiguous() for k, v in ema.state_dict().items()}
            tensors.update({f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()})
            save_file(tensors, os.path.join(args.out, f"snap-{m:g}.safetensors"),
                      metadata={**meta, "step": str(step), "trainer": "diffusers " + __import__("diffusers").__version__})
            print(f"{m:g} {step} {cpu:.1f}", file=log, flush=True)
            print(f"diffusers: {m:g} CPU-min budget reached at step {step} (loss {loss.item():.4f})", flush=True)


if __name__ == "__main__":
    main()
