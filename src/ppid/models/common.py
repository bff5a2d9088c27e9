"""What every matting network here shares: the output record, the CBAM spatial attention at the
ALD taps, the CLSD cross-layer connectors, input handling (normalisation, trimap encoding,
padding to a multiple of 32) and ImageNet-backbone loading from a local file.

A family file (dim.py, indexnet.py, gca.py) subclasses `MattingNet` and implements
`forward_features(x, taps_only)` on the padded, normalised input; with taps_only it returns right
after the last ALD tap (stride 2), without alpha: all a frozen PPID teacher has to compute.
"""

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import PpidError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STRIDE = 32  # every family downsamples five times


@dataclass
class DecoderTap:
    """One ALD tap: the decoder feature F (before its attention gate) and the attention logits
    conv7x7([mean_c F; max_c F]) of shape (N, 1, h, w)."""

    feature: torch.Tensor
    logits: torch.Tensor


@dataclass
class MattingOutput:
    alpha: torch.Tensor | None  # (N, 1, H, W) in [0, 1], sigmoid(alpha_logits); None with taps_only
    alpha_logits: torch.Tensor | None  # (N, 1, H, W), for a numerically safe CE under autocast
    enc: list = field(default_factory=list)  # F_n at strides 2, 4, 8, 16, 32 (stage outputs)
    dec: list = field(default_factory=list)  # DecoderTap at strides 4 and 2
    cross: list = field(default_factory=list)  # f3x3(Fbar_{n-1}) for n = 2..5; empty without CLSD


class SpatialAttention(nn.Module):
    """CBAM spatial attention: logits = conv7x7([mean_c F; max_c F]); F is gated by sigmoid(logits)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size=7, padding=3)

    def forward(self, x):
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        logits = self.conv(pooled)
        return x * torch.sigmoid(logits), DecoderTap(feature=x, logits=logits)


class CrossLayerConnectors(nn.Module):
    """CLSD connectors (eq. 4): Fbar_n = F_n + conv3x3_stride2(Fbar_{n-1}).

    `channels` are the five encoder tap widths. `step(n, f_n, fbar_prev)` returns (Fbar_n, cross_n)
    where cross_n = conv3x3_stride2(Fbar_{n-1}) is what the second CLSD term distils; for n = 0
    it returns (F_0, None).
    """

    def __init__(self, channels):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1)
            for c_in, c_out in zip(channels[:-1], channels[1:])
        )

    def step(self, n, f_n, fbar_prev):
        if n == 0:
            return f_n, None
        cross = self.convs[n - 1](fbar_prev)
        return f_n + cross, cross


def kaiming_init(model):
    """Kaiming-normal (fan_out, ReLU gain) convs with zero biases; BN weight 1, bias 0: the
    initialisation of torchvision's VGG and MobileNetV2 and of the DIM / IndexNet originals."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def check_build_options(family, options, revision=None, latest=None):
    """What every family's `build` refuses: options it does not take, a revision outside 1..latest
    (the families with revisions pass both)."""
    if options:
        raise PpidError(f"{family} takes no build options, got {', '.join(sorted(options))}")
    if revision is not None and revision not in range(1, latest + 1):
        known = ", ".join(map(str, range(1, latest))) + f" or {latest}"
        raise PpidError(f"{family} revision {revision!r}: expected {known}")


def clamp_to_trimap(alpha, trimap):
    """A teacher's alpha with the trimap's known regions imposed (trimap in {0, 0.5, 1}), as the
    trimap-based originals report it."""
    return torch.where(trimap == 0, 0.0, torch.where(trimap == 1, 1.0, alpha))


def pad_to_multiple(x, multiple=STRIDE):
    """Pad H and W up to a multiple (reflect; replicate where the input is too small to reflect).
    Returns the padded tensor and the (H, W) to crop back to."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


class MattingNet(nn.Module):
    """Base of every family: teacher (RGB + trimap) or student (RGB only), same layers otherwise.

    forward(image, trimap=None, taps_only=False):
      image  (N, 3, H, W) RGB in [0, 1], any H, W (padded to a multiple of 32 by reflection, the
             alpha cropped back; the feature taps stay at the padded size)
      trimap (N, 1, H, W) in [0, 1] with 0 = background, 0.5 = unknown, 1 = foreground
             (trimap / 255); teachers only.
      taps_only  skip the full-resolution stage after the last decoder tap and the head: the
             output has the taps (enc, dec, cross) and alpha = alpha_logits = None. PPID training
             reads only the teacher's taps, so its teacher runs this way.
    """

    trimap_encoding = "value"  # "value": one channel trimap/255; "onehot": three channels (GCA)

    def __init__(self, role, cross_layer=False):
        super().__init__()
        if role not in ("teacher", "student"):
            raise PpidError(f"role must be 'teacher' or 'student', got {role!r}")
        if cross_layer and role == "teacher":
            raise PpidError("cross_layer connectors belong to PPID students, not teachers")
        self.role = role
        self.cross_layer = cross_layer
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def in_channels(self):
        if self.role == "student":
            return 3
        return 3 + (3 if self.trimap_encoding == "onehot" else 1)

    def encode_trimap(self, trimap):
        if self.trimap_encoding == "onehot":
            t = trimap
            return torch.cat([(t < 0.25), (t >= 0.25) & (t <= 0.75), (t > 0.75)], dim=1).to(t.dtype)
        return trimap

    def forward(self, image, trimap=None, taps_only=False):
        if image.dim() != 4 or image.shape[1] != 3:
            raise PpidError(f"image must be (N, 3, H, W), got {tuple(image.shape)}")
        if self.role == "teacher" and trimap is None:
            raise PpidError("a teacher model needs a trimap (it is trimap-based)")
        if self.role == "student" and trimap is not None:
            raise PpidError("a student model takes no trimap (it is trimap-free)")
        x = (image - self.mean.to(image.dtype)) / self.std.to(image.dtype)
        if trimap is not None:
            if trimap.shape[-2:] != image.shape[-2:] or trimap.shape[:2] != (image.shape[0], 1):
                raise PpidError(
                    f"trimap must be (N, 1, H, W) matching the image, got {tuple(trimap.shape)} "
                    f"for image {tuple(image.shape)}"
                )
            x = torch.cat([x, self.encode_trimap(trimap.to(x.dtype))], dim=1)
        x, (h, w) = pad_to_multiple(x)
        out = self.forward_features(x, taps_only)
        if taps_only:
            return out
        out.alpha_logits = out.alpha_logits[..., :h, :w]
        out.alpha = torch.sigmoid(out.alpha_logits)
        return out

    def forward_features(self, x, taps_only=False):  # pragma: no cover - every family implements it
        raise NotImplementedError

    # -- ImageNet initialisation ---------------------------------------------------------------
    backbone_attr = "encoder"  # the submodule whose names follow torchvision
    backbone_ignored_prefixes = ("fc.", "classifier.")  # torchvision keys with no counterpart here
    first_conv_key = None  # torchvision key of the first conv ("features.0.weight", "conv1.weight")

    def backbone_keys(self, own):
        """torchvision key -> our key (in the backbone's state dict) for every tensor a torchvision
        file provides (BN's num_batches_tracked optional). Default: the same names, all of them."""
        return {k: k for k in own}

    def after_backbone_load(self):
        """Hook for families whose layers need fixing up once the weights are in (GCA: spectral norm)."""

    def load_backbone(self, path):
        """Load a torchvision-format state dict (.pth via weights_only, or .safetensors) into the
        backbone. Keys under `backbone_ignored_prefixes` are skipped; the teacher's extra trimap
        input channels start at zero; any other missing, unexpected or mis-shaped key is an error
        that lists them."""
        state = read_state_dict(path)
        backbone = getattr(self, self.backbone_attr)
        own = backbone.state_dict()
        targets = self.backbone_keys(own)
        ignored = self.backbone_ignored_prefixes
        unexpected = [k for k in state if k not in targets and not k.startswith(ignored) and not k.endswith("num_batches_tracked")]
        missing = [k for k in targets if k not in state and not k.endswith("num_batches_tracked")]
        mismatched = []
        new = {}
        for k, ours in targets.items():
            if k not in state:
                continue
            v, target = state[k], own[ours]
            if k == self.first_conv_key and v.dim() == 4 and target.shape[1] > v.shape[1] == 3:
                w = torch.zeros_like(target)
                w[:, :3] = v
                v = w
            if v.shape != target.shape:
                mismatched.append(f"{k} {tuple(v.shape)} vs {tuple(target.shape)}")
                continue
            new[ours] = v.to(target.dtype)
        if missing or unexpected or mismatched:
            parts = []
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
                if keys:
                    parts.append(f"{label} ({len(keys)}): " + ", ".join(keys[:8]) + (" ..." if len(keys) > 8 else ""))
            raise PpidError(f"{path}: backbone weights do not fit {type(backbone).__name__}: " + "; ".join(parts))
        backbone.load_state_dict(new, strict=False)
        self.after_backbone_load()


def read_state_dict(path):
    """Tensors from a .safetensors file or a .pth/.pt file (torch.load with weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise PpidError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise PpidError(f"{path}: cannot read weights ({err.__class__.__name__}: {err})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PpidError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}
