"""Shared test inputs and loaders (tests/ is on sys.path under pytest's default import mode)."""

import importlib.util
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def random_batch(n=2, h=64, w=64, seed=0):
    """A seeded image batch in [0, 1] and a random trimap in {0, 0.5, 1}."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, h, w, generator=g)
    trimap = torch.randint(0, 3, (n, 1, h, w), generator=g).float() / 2
    return image, trimap


def assert_taps(out, n, h, w, enc_channels, dec_channels, cross_layer):
    """The distillation taps of a family's forward pass: five encoder features at strides 2-32,
    the two decoder taps at strides 4 and 2 (feature and one-channel logits), and the PPID
    student's cross-layer connector outputs, one per encoder tap after the first."""
    assert [tuple(f.shape) for f in out.enc] == [(n, c, h // s, w // s) for c, s in zip(enc_channels, (2, 4, 8, 16, 32))]
    assert [tuple(t.feature.shape) for t in out.dec] == [(n, c, h // s, w // s) for c, s in zip(dec_channels, (4, 2))]
    assert [tuple(t.logits.shape) for t in out.dec] == [(n, 1, h // s, w // s) for s in (4, 2)]
    if cross_layer:
        assert [c.shape for c in out.cross] == [f.shape for f in out.enc[1:]]
    else:
        assert out.cross == []


def save_weights(state, path):
    """A state dict written as the file a user would hand over: torch's .pth or a .safetensors."""
    if path.suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    return path


def load_script(path):
    """A script of the repository (benchmarks/, experiments/) loaded as a module, without running
    its main. A script that imports its neighbours needs its folder on sys.path first."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
