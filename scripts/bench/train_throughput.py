"""The PyTorch side of scripts/bench/train_throughput.sh: the same training step
as `Trainer::train_step` (label dropout, q_sample, SeedUNet, MSE, backward,
Adam, EMA), written the way a PyTorch user would. Prints `img/s <value>`."""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "parity"))
from network import SeedUNet  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = SeedUNet(1, a.channels, 10)
    ema = SeedUNet(1, a.channels, 10)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)
    sqrt_ab, sqrt_1mab = ab.sqrt().float(), (1 - ab).sqrt().float()
    x0 = torch.rand(a.batch, 1, 28, 28) * 2 - 1
    y = torch.randint(0, 10, (a.batch,))

    def step():
        labels = torch.where(torch.rand(a.batch) < 0.1, torch.full_like(y, 10), y)
        t = torch.randint(0, 1000, (a.batch,))
        noise = torch.randn_like(x0)
        x_t = sqrt_ab[t].view(-1, 1, 1, 1) * x0 + sqrt_1mab[t].view(-1, 1, 1, 1) * noise
        loss = F.mse_loss(model(x_t, t, labels), noise)
        _ = loss.item()  # the Rust loop reads the loss too (NaN guard)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1 - 0.999)

    for _ in range(a.warmup):
        step()
    start = time.perf_counter()
    for _ in range(a.steps):
        step()
    print(f"img/s {a.steps * a.batch / (time.perf_counter() - start):.1f}")


if __name__ == "__main__":
    main()
