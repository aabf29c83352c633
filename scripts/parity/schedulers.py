"""Replays the book's ODE samplers with diffusers' schedulers, step by step.

    python scripts/parity/schedulers.py DIR

For crates/reverse/tests/ode.rs. DIR/cases.json lists sampler runs of the
shipped model; DIR/runs.safetensors holds, for each case NAME, our σ list
(NAME/sigmas) and, for every network evaluation in order, the point the
network saw (NAME/x_in), its output (NAME/out) and our next point
(NAME/x_after), all in x_t's coordinates.

Each case is replayed on a fresh HeunDiscreteScheduler or
DPMSolverMultistepScheduler with the book's schedule (linear β 1e-4 to 0.02,
T = 1000), prediction type, spacing and clipping. At every evaluation the
scheduler gets OUR point and OUR network output, so differences do not
accumulate; after checking that its σs match ours, it runs on our σs, so
that what is compared is the update rule alone. Prints one JSON line per
case: the largest |Δ| of the next point (in x_t's coordinates) and the
largest relative difference between the σ lists.
"""
import json
import os
import sys

import torch
from diffusers import DPMSolverMultistepScheduler, HeunDiscreteScheduler
from safetensors.torch import load_file

torch.set_num_threads(2)
folder = sys.argv[1]
runs = load_file(os.path.join(folder, "runs.safetensors"))
cases = json.load(open(os.path.join(folder, "cases.json")))
schedule = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")


def ve(x, sigma):
    """x_t → x̃ = x_t √(1 + σ²), the scaling Heun's scheduler works in."""
    return x * (1.0 + sigma**2) ** 0.5


for case in cases:
    name, steps = case["name"], case["steps"]
    ours = runs[f"{name}/sigmas"].double()
    x_in, out, x_after = (runs[f"{name}/{k}"] for k in ("x_in", "out", "x_after"))
    spacing = "linspace" if case["karras"] else "trailing"
    if case["solver"] == "heun":
        sch = HeunDiscreteScheduler(**schedule, prediction_type=case["prediction"],
                                    use_karras_sigmas=case["karras"], timestep_spacing=spacing,
                                    clip_sample=case["clip"], clip_sample_range=1.0)
        sch.set_timesteps(steps)
        theirs = torch.cat([sch.sigmas[:1], sch.sigmas[1::2]]).double()  # undo the repeats
        dup = torch.cat([ours[:1], ours[1:-1].repeat_interleave(2), ours[-1:]])
        sch.sigmas = dup.float()
    else:
        sch = DPMSolverMultistepScheduler(**schedule, prediction_type=case["prediction"],
                                          algorithm_type="dpmsolver++", solver_order=2,
                                          solver_type="midpoint", lower_order_final=True,
                                          use_karras_sigmas=case["karras"], timestep_spacing=spacing,
                                          final_sigmas_type="zero")
        sch.set_timesteps(steps)
        theirs = sch.sigmas.double()
        sch.sigmas = ours.float()
    sigma_rel = ((theirs - ours).abs() / ours.clamp(min=1e-12))[:-1].max().item()
    worst = 0.0
    for k in range(len(sch.timesteps)):
        t = sch.timesteps[k]
        if case["solver"] == "heun":
            first = sch.state_in_first_order
            s_in = sch.sigmas[k].double()
            s_out = sch.sigmas[k + 1].double() if first else s_in
            nxt = sch.step(out[k], t, ve(x_in[k].double(), s_in).float()).prev_sample
            d = (nxt.double() / (1.0 + s_out**2) ** 0.5 - x_after[k].double()).abs().max().item()
        else:
            nxt = sch.step(out[k], t, x_in[k]).prev_sample
            d = (nxt.double() - x_after[k].double()).abs().max().item()
        worst = max(worst, d)
    print(json.dumps({"name": name, "expect": case["expect"], "evaluations": len(sch.timesteps),
                      "max_abs": worst, "sigma_rel": sigma_rel}))
