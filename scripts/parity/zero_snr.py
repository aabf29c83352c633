"""diffusers' zero-terminal-SNR pieces, for crates/classifier-free/tests/zero_snr.rs.

    python scripts/parity/zero_snr.py DIR

DIR/in.safetensors holds a guided prediction `guided` and the conditional one
`cond` (float32, N×C×H×W). Writes DIR/out.safetensors with, from diffusers:

- `betas/KIND/plain` and `betas/KIND/rescaled`: DDPMScheduler's β for the
  book's linear schedule (1e-4 to 0.02) and Stable Diffusion's scaled_linear
  (0.00085 to 0.012), T = 1000, without and with rescale_betas_zero_snr;
- `rescaled/PHI`: guider_utils.rescale_noise_cfg(guided, cond, PHI) for
  PHI in 0, 0.5, 0.7 and 1.
"""
import os
import sys

import torch
from diffusers import DDPMScheduler
from diffusers.guiders.guider_utils import rescale_noise_cfg
from safetensors.torch import load_file, save_file

torch.set_num_threads(1)
folder = sys.argv[1]
inputs = load_file(os.path.join(folder, "in.safetensors"))
out = {}
for kind, (start, end, name) in {
    "linear": (1e-4, 0.02, "linear"),
    "sd_scaled_linear": (0.00085, 0.012, "scaled_linear"),
}.items():
    for rescale in (False, True):
        s = DDPMScheduler(num_train_timesteps=1000, beta_start=start, beta_end=end,
                          beta_schedule=name, rescale_betas_zero_snr=rescale)
        out[f"betas/{kind}/{'rescaled' if rescale else 'plain'}"] = s.betas.double().contiguous()
for phi in ("0", "0.5", "0.7", "1"):
    out[f"rescaled/{phi}"] = rescale_noise_cfg(inputs["guided"], inputs["cond"], float(phi)).contiguous()
save_file(out, os.path.join(folder, "out.safetensors"))
print(f"wrote {len(out)} tensors")
