"""`ppid export`: a trained model as ONNX, checked against onnxruntime right after export.

    ppid export --model student.safetensors --onnx student.onnx [--opset 17] [--fp16 | --int8]

Graph: input `image` (N, 3, H, W) float32 RGB in [0, 1] (teachers also `trimap` (N, 1, H, W) in
{0, 0.5, 1}), output `alpha` (N, 1, H, W) float32 in [0, 1]; N, H and W are dynamic (H, W >= 32).
The alpha is the network's own (a teacher's is not clamped to the trimap; `Predictor` does that);
the distillation taps are not graph outputs, so nothing computes or keeps them.
With --fp16 the weights and arithmetic are float16; inputs and output stay float32.
With --int8 the graph is statically quantised (onnxruntime.quantization, QDQ format): int8
per-channel weights, uint8 activations whose ranges are calibrated on synthetic composites
(`ppid.data.synth`); inputs and output stay float32.

The exporter is torch's TorchScript-based one (`dynamo=False`): the dynamo exporter specialises the
pad-to-32 branch on the example's size and takes minutes on CPU.
"""

import contextlib
import logging
import tempfile
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
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}  # max |alpha difference| from PyTorch
# int8 moves single pixels by up to ~0.3 in alpha; the check bounds the mean instead (the IndexNet
# student measured 0.014 on synthetic composites, docs/predict.md)
INT8_MEAN_TOLERANCE = 0.05
# calibration composites: a seed apart from the synthetic training (0) and test (1) sets
CALIBRATION_SEED, CALIBRATION_COUNT, CALIBRATION_SIZE = 1234, 8, 256


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


def inference_session(path, threads=None):
    """An onnxruntime CPU session: every graph optimisation (ORT_ENABLE_ALL: fusions and the
    blocked NCHWc convolution layout), sequential execution, `threads` intra-op threads (default:
    onnxruntime's, one per physical core) that sleep rather than spin while they wait: on a CPU
    shared with other work spinning cost 1.2x at 512x512 (benchmarks/onnx_speed.py)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def calibration_feeds(teacher, count=CALIBRATION_COUNT, size=CALIBRATION_SIZE, seed=CALIBRATION_SEED):
    """Synthetic composites (`ppid.data.synth` foregrounds over its backgrounds) as onnxruntime
    feeds: `image` (1, 3, size, size) and, for teachers, the test-rule `trimap` of the true alpha."""
    from .data.compose import composite, test_trimap
    from .data.synth import make_background, make_foreground

    for index in range(count):
        fg, alpha, _ = make_foreground(seed, index, (size, size))
        bg, _ = make_background(seed, index, (size, size), count)
        feed = {"image": composite(fg, bg, alpha).astype(np.float32).transpose(2, 0, 1)[None]}
        if teacher:
            feed["trimap"] = (test_trimap(alpha) / np.float32(255))[None, None]
        yield feed


@contextlib.contextmanager
def _quiet_quantizer():
    """onnxruntime.quantization logs a warning with a whole tensor description for every
    integer tensor it leaves alone; none of it is actionable here."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def quantize_int8(fp32_path, path, feeds):
    """Statically quantise the ONNX model at `fp32_path` into `path` (atomically): QDQ format,
    per-channel int8 weights, uint8 activations with min/max ranges calibrated on `feeds`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(feeds)

        def get_next(self):
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory() as tmp, atomic_path(path) as out, _quiet_quantizer():
        prepared = Path(tmp) / "prepared.onnx"  # shape inference and graph clean-up first, as onnxruntime advises
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def parity_check(model, path, shapes=PARITY_SHAPES, seed=0):
    """(max, mean) |alpha_onnxruntime - alpha_pytorch| (float32 PyTorch model) over inputs of `shapes`."""
    session = inference_session(path)
    teacher = model.role == "teacher"
    gen = torch.Generator().manual_seed(seed)
    worst, total, count = 0.0, 0.0, 0
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
        diff = np.abs(got - ref)
        worst, total, count = max(worst, float(diff.max())), total + float(diff.sum()), count + diff.size
    return worst, total / count


def add_arguments(parser):
    parser.add_argument("--model", required=True, metavar="WEIGHTS", help="model file saved by ppid (.safetensors)")
    parser.add_argument("--onnx", required=True, type=Path, metavar="OUT.onnx", help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="float16 weights and arithmetic (float32 inputs and output)")
    precision.add_argument("--int8", action="store_true", help="static int8 quantisation calibrated on synthetic composites (float32 inputs and output)")


def run(args):
    from .models import load_model

    model = load_model(args.model, "cpu")
    precision = "fp16" if args.fp16 else "int8" if args.int8 else "fp32"
    try:  # a second copy to export: --fp16 converts it in place, the parity reference stays fp32
        if args.int8:
            _export_int8(load_model(args.model, "cpu"), args.onnx, args.opset)
        else:
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
    worst, mean = parity_check(model, args.onnx)
    shapes = ", ".join(f"{n}x3x{h}x{w}" for n, h, w in PARITY_SHAPES)
    if precision == "int8":
        measured, limit, label = mean, INT8_MEAN_TOLERANCE, "mean"
    else:
        measured, limit, label = worst, TOLERANCE[precision], "max"
    print(f"ppid export: onnxruntime parity on {shapes}: max |alpha difference| = {worst:.2e} "
          f"(mean {mean:.2e}; tolerance on the {label}: {limit:.0e})")
    if measured > limit:
        raise PpidError(f"{args.onnx}: onnxruntime alpha differs from PyTorch by {measured:.2e} on the {label} (> {limit:.0e})")
    return 0


def _export_int8(model, path, opset):
    """Float32 export to a temporary file, then static quantisation into `path`."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise PpidError("--int8 needs onnxruntime (pip install 'ppid-matting[onnx]')") from None
    print(f"ppid export: calibrating int8 ranges on {CALIBRATION_COUNT} synthetic {CALIBRATION_SIZE} px composites")
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(model, fp32, opset)
        quantize_int8(fp32, path, calibration_feeds(model.role == "teacher", CALIBRATION_COUNT, CALIBRATION_SIZE))
