"""SeedUNet in plain PyTorch, for parity with the Rust `network` crate.

    python scripts/parity/network.py DIR

DIR holds what the Rust side wrote (see crates/network/tests/parity.rs):
  seed_rust.safetensors   the Rust model's weights (VarStore names = state_dict keys)
  inputs.safetensors      x, t, y and the Rust outputs out_cond, out_uncond
  config.json             in_channels, channels, num_classes
This script
  1. loads seed_rust.safetensors into the PyTorch model (strict: every key must match),
     runs it on the same inputs and reports the max abs difference to the Rust outputs;
  2. the other way round: initialises a fresh PyTorch model (seed 1234), saves its
     state_dict as seed_torch.safetensors and its outputs as out_torch.safetensors,
     for the Rust side to load and compare.
It prints one line per comparison and exits non-zero if a difference exceeds --tol.
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


def timestep_embedding(t, dim, max_period=10000.0):
    half = dim // 2
    omega = torch.exp(torch.arange(half, dtype=torch.float32) * (-math.log(max_period) / half))
    angles = t.float()[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class SeedUNet(nn.Module):
    def __init__(self, in_channels=1, channels=64, num_classes=10):
        super().__init__()
        c = channels
        self.c = c
        self.num_classes = num_classes
        self.down1 = nn.Conv2d(in_channels, c, 3, stride=2, padding=1)
        self.norm1 = nn.GroupNorm(32, c)
        self.down2 = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.norm2 = nn.GroupNorm(32, 2 * c)
        self.time_mlp = nn.Linear(c, 2 * c)
        self.class_emb = nn.Embedding(num_classes + 1, 2 * c) if num_classes is not None else None
        self.mid = nn.Conv2d(2 * c, 2 * c, 3, padding=1)
        self.mid_norm = nn.GroupNorm(32, 2 * c)
        self.up2 = nn.Conv2d(2 * c, c, 3, padding=1)
        self.up2_norm = nn.GroupNorm(32, c)
        self.up1 = nn.Conv2d(c, c, 3, padding=1)
        self.up1_norm = nn.GroupNorm(32, c)
        self.out = nn.Conv2d(c, in_channels, 3, padding=1)

    def forward(self, x, t, y=None):
        n = x.shape[0]
        d1 = F.relu(self.norm1(self.down1(x)))
        d2 = F.relu(self.norm2(self.down2(d1)))
        cond = F.relu(self.time_mlp(timestep_embedding(t, self.c)))
        if self.class_emb is not None:
            if y is None:
                y = torch.full((n,), self.num_classes, dtype=torch.long)
            cond = cond + self.class_emb(y)
        h = d2 + cond[:, :, None, None]
        h = h + F.relu(self.mid_norm(self.mid(h)))
        h = F.relu(self.up2_norm(self.up2(F.interpolate(h, scale_factor=2, mode="nearest")))) + d1
        h = F.relu(self.up1_norm(self.up1(F.interpolate(h, scale_factor=2, mode="nearest"))))
        return self.out(h)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = json.load(open(os.path.join(args.dir, "config.json")))
    inputs = load_file(os.path.join(args.dir, "inputs.safetensors"))
    x, t, y = inputs["x"], inputs["t"], inputs["y"]

    model = SeedUNet(cfg["in_channels"], cfg["channels"], cfg["num_classes"])
    model.load_state_dict(load_file(os.path.join(args.dir, "seed_rust.safetensors")), strict=True)
    worst = 0.0
    with torch.no_grad():
        for name, out in [("out_cond", model(x, t, y)), ("out_uncond", model(x, t))]:
            diff = (out - inputs[name]).abs().max().item()
            worst = max(worst, diff)
            print(f"rust weights -> pytorch  {name:<11} max |Δ| = {diff:.3e}")

    torch.manual_seed(1234)
    fresh = SeedUNet(cfg["in_channels"], cfg["channels"], cfg["num_classes"])
    save_file({k: v.contiguous() for k, v in fresh.state_dict().items()}, os.path.join(args.dir, "seed_torch.safetensors"))
    with torch.no_grad():
        save_file({"out_cond": fresh(x, t, y), "out_uncond": fresh(x, t)}, os.path.join(args.dir, "out_torch.safetensors"))
    print("pytorch weights written: seed_torch.safetensors, out_torch.safetensors")
    if worst > args.tol:
        print(f"error: max |Δ| {worst:.3e} exceeds {args.tol:g}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
