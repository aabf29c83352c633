"""The book's UNet against diffusers' UNet2DModel, for crates/network/tests/parity.rs.

    python scripts/parity/diffusers_unet.py DIR [--tol 1e-5]

DIR holds what the Rust side wrote:
  config.json            a diffusers UNet2DModel config (formats::unet_config_to_json)
  unet_rust.safetensors  the Rust model's weights (VarStore names = diffusers state_dict keys)
  inputs.safetensors     x, t, y and the Rust outputs out_cond, out_uncond
This script
  1. builds UNet2DModel.from_config(config.json), loads unet_rust.safetensors into it
     (strict: no missing and no unexpected keys, equal shapes), runs it on the same
     inputs and prints the max abs difference to the Rust outputs;
  2. the other way round: a fresh UNet2DModel (seed 1234, diffusers' own init) saves
     its state_dict as unet_torch.safetensors, its outputs as out_torch.safetensors
     and its config as saved/config.json, for the Rust side to load and compare.
Unconditional outputs use the null class, the last row of the class embedding.
Exits non-zero when a difference exceeds --tol.
"""
import argparse
import json
import os
import sys

import torch
from diffusers import UNet2DModel
from safetensors.torch import load_file, save_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()
    torch.set_num_threads(2)
    with open(os.path.join(args.dir, "config.json")) as f:
        config = json.load(f)
    inputs = load_file(os.path.join(args.dir, "inputs.safetensors"))
    x, t, y = inputs["x"], inputs["t"], inputs["y"]
    null = torch.full_like(y, config["num_class_embeds"] - 1)

    def run(model):
        with torch.no_grad():
            return {
                "out_cond": model(x, t, class_labels=y).sample,
                "out_uncond": model(x, t, class_labels=null).sample,
            }

    ok = True
    model = UNet2DModel.from_config(config).eval()
    weights = load_file(os.path.join(args.dir, "unet_rust.safetensors"))
    model.load_state_dict(weights, strict=True)
    print(f"rust weights -> diffusers: {len(weights)} tensors, strict load ok")
    for name, out in run(model).items():
        d = (out - inputs[name]).abs().max().item()
        print(f"rust weights -> diffusers  {name} max |Δ| = {d:.3e}")
        ok &= d <= args.tol

    torch.manual_seed(1234)
    fresh = UNet2DModel.from_config(config).eval()
    save_file({k: v.contiguous() for k, v in fresh.state_dict().items()},
              os.path.join(args.dir, "unet_torch.safetensors"))
    save_file(run(fresh), os.path.join(args.dir, "out_torch.safetensors"))
    fresh.save_config(os.path.join(args.dir, "saved"))  # diffusers' own config.json
    print(f"diffusers {fresh.num_parameters()} parameters saved for the Rust side")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
