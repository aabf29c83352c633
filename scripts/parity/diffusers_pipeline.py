"""A small diffusers model folder, for crates/training/tests/diffusers.rs.

    python scripts/parity/diffusers_pipeline.py DIR

Writes DIR/pipeline/unet/ (UNet2DModel.save_pretrained: config.json and
diffusion_pytorch_model.safetensors, seed 99) and DIR/pipeline/scheduler/ (a
DDPMScheduler with a cosine schedule, 500 steps and v-prediction), and
DIR/io.safetensors with fixed inputs x, t, y and the model's output, for the
Rust side to load the folder and compare.
"""
import os
import sys

import torch
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.torch import save_file

torch.set_num_threads(2)
out = sys.argv[1]
torch.manual_seed(99)
unet = UNet2DModel(
    sample_size=28, in_channels=1, out_channels=1, block_out_channels=(16, 32), layers_per_block=1,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=8, attention_head_dim=8, num_class_embeds=11,
).eval()
unet.save_pretrained(os.path.join(out, "pipeline", "unet"))
DDPMScheduler(num_train_timesteps=500, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction") \
    .save_pretrained(os.path.join(out, "pipeline", "scheduler"))
x = torch.randn(3, 1, 28, 28)
t = torch.tensor([0, 250, 499])
y = torch.tensor([1, 7, 10])
with torch.no_grad():
    eps = unet(x, t, class_labels=y).sample
save_file({"x": x, "t": t, "y": y, "out": eps}, os.path.join(out, "io.safetensors"))
print("wrote", os.path.join(out, "pipeline"))
