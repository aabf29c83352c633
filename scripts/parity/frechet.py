"""Fréchet distance computed the usual way, for parity with the Rust `evaluate` crate.

    python scripts/parity/frechet.py FEATURES.safetensors

FEATURES holds two f64 matrices `a` [N1, D] and `b` [N2, D] (what
crates/evaluate/tests/metrics.rs writes). This script fits a Gaussian to each
with numpy (unbiased covariance) and computes

    d² = |mu_a - mu_b|² + tr(S_a) + tr(S_b) - 2 tr sqrtm(S_a S_b)

with scipy.linalg.sqrtm of the non-symmetric product (Schur method), as the
common FID code does, rather than the symmetric eigendecomposition the Rust
code uses. It prints the distance with 17 significant digits.
"""
import sys

import numpy as np
import scipy.linalg
from safetensors.numpy import load_file


def frechet(a, b):
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = scipy.linalg.sqrtm(s_a @ s_b, disp=False)
    root = root.real  # imaginary round-off parts
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(root))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    t = load_file(sys.argv[1])
    print(f"{frechet(t['a'].astype(np.float64), t['b'].astype(np.float64)):.17g}")


if __name__ == "__main__":
    main()
