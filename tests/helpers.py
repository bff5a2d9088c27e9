"""Shared test inputs (tests/ is on sys.path under pytest's default import mode)."""

import torch


def random_batch(n=2, h=64, w=64, seed=0):
    """A seeded image batch in [0, 1] and a random trimap in {0, 0.5, 1}."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, h, w, generator=g)
    trimap = torch.randint(0, 3, (n, 1, h, w), generator=g).float() / 2
    return image, trimap
