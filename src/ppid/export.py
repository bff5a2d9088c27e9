"""`ppid export`: a trained model as ONNX, checked against onnxruntime right after export.

    ppid export --model student.safetensors --onnx student.onnx [--opset 17] [--fp16]

Graph: input `image` (N, 3, H, W) float32 RGB in [0, 1] (teachers also `trimap` (N, 1, H, W) in
{0, 0.5, 1}), output `alpha` (N, 1, H, W) float32 in [0, 1]; N, H and W are dynamic (H, W >= 32).
The alpha is the network's own (a teacher's is not clamped to the trimap; `Predictor` does that).
With --fp16 the weights and arithmetic are float16; inputs and output stay float32.

The exporter is torch's TorchScript-based one (`dynamo=False`): the dynamo exporter specialises the
pad-to-32 branch on the example's size and takes minutes on CPU.
"""

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import PpidError
from .io import atomic_path
from .models.common import STRIDE

DEFAULT_OPSET = 17
# (N, H, W) of the parity inputs: a batch of one at a multiple of 32, a batch of two that needs padding
PARITY_SHAPES = ((1, 96, 128), (2, 75, 110))
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}


class AlphaGraph(nn.Module):
    """image (and trimap) -> alpha, padding to a multiple of 32 with shape arithmetic the exporter
    records (the model's own padding branches on the size, which a trace would freeze)."""

    def __init__(self, model, dtype=torch.float32):
        super().__init__()
        self.model = model
        self.dtype = dtype

    def _pad(self, x, h, w):
        # reflection, like the model's own padding, so the exported alpha equals the PyTorch one
        return F.pad(x.to(self.dtype), (0, (STRIDE - w % STRIDE) % STRIDE, 0, (STRIDE - h % STRIDE) % STRIDE), mode="reflect")

    def forward(self, image, trimap=None):
        h, w = image.shape[-2:]
        trimap = None if trimap is None else self._pad(trimap, h, w)
        return self.model(self._pad(image, h, w), trimap).alpha[..., :h, :w].float()


def export_onnx(model, path, opset=DEFAULT_OPSET, fp16=False):
    """Write `model` (eval mode, on the CPU) as ONNX to `path` (atomically)."""
    teacher = model.role == "teacher"
    graph = AlphaGraph(model.half() if fp16 else model, torch.float16 if fp16 else torch.float32).eval()
    n, h, w = PARITY_SHAPES[0]
    example = (torch.rand(n, 3, h, w),) + ((torch.full((n, 1, h, w), 0.5),) if teacher else ())
    names = ["image", "trimap"] if teacher else ["image"]
    axes = {name: {0: "batch", 2: "height", 3: "width"} for name in names + ["alpha"]}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about the model's shape checks
        torch.onnx.export(graph, example, str(tmp), input_names=names, output_names=["alpha"],
                          dynamic_axes=axes, opset_version=opset, dynamo=False)


def parity_check(model, path, shapes=PARITY_SHAPES, seed=0):
    """Max |alpha_onnxruntime - alpha_pytorch| (float32 PyTorch model) over inputs of `shapes`."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    teacher = model.role == "teacher"
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for n, h, w in shapes:
        image = torch.rand(n, 3, h, w, generator=gen)
        feeds = {"image": image.numpy()}
        trimap = None
        if teacher:
            trimap = torch.randint(0, 3, (n, 1, h, w), generator=gen).float() / 2
            feeds["trimap"] = trimap.numpy()
        with torch.inference_mode():
            ref = model(image, trimap).alpha.numpy()
        got = session.run(["alpha"], feeds)[0]
        if got.shape != ref.shape:
            raise PpidError(f"{path}: onnxruntime gave alpha {got.shape} for input {tuple(image.shape)}")
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def add_arguments(parser):
    parser.add_argument("--model", required=True, metavar="WEIGHTS", help="model file saved by ppid (.safetensors)")
    parser.add_argument("--onnx", required=True, type=Path, metavar="OUT.onnx", help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--fp16", action="store_true", help="float16 weights and arithmetic (float32 inputs and output)")


def run(args):
    from .models import load_model

    model = load_model(args.model, "cpu")
    precision = "fp16" if args.fp16 else "fp32"
    try:  # a second copy to export: --fp16 converts it in place, the parity reference stays fp32
        export_onnx(load_model(args.model, "cpu"), args.onnx, args.opset, args.fp16)
    except (RuntimeError, ValueError, torch.onnx.errors.OnnxExporterError) as err:
        raise PpidError(f"{args.onnx}: export failed with opset {args.opset} ({err.__class__.__name__}: {str(err).splitlines()[0]})") from None
    size_mb = args.onnx.stat().st_size / 1e6
    print(f"ppid export: wrote {args.onnx} ({size_mb:.1f} MB, {precision}, opset {args.opset}, "
          f"inputs {'image, trimap' if model.role == 'teacher' else 'image'} with dynamic N, H, W)")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("ppid export: parity check skipped: onnxruntime is not installed (pip install 'ppid-matting[onnx]')")
        return 0
    diff = parity_check(model, args.onnx)
    shapes = ", ".join(f"{n}x3x{h}x{w}" for n, h, w in PARITY_SHAPES)
    print(f"ppid export: onnxruntime parity on {shapes}: max |alpha difference| = {diff:.2e} (tolerance {TOLERANCE[precision]:.0e})")
    if diff > TOLERANCE[precision]:
        raise PpidError(f"{args.onnx}: onnxruntime alpha differs from PyTorch by {diff:.2e} (> {TOLERANCE[precision]:.0e})")
    return 0
