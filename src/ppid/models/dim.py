"""DIM (Deep Image Matting, Xu et al. 2017) as the SegNet-style encoder-decoder whose 25,582,595
parameters (4 input channels) are the paper's 25.58M.

Encoder: VGG16 with BatchNorm, five blocks of conv3x3+BN+ReLU (2, 2, 3, 3, 3 layers; widths 64, 128,
256, 512, 512), each closed by 2x2 max-pooling that keeps its argmax indices; no fc6/conv6. The
module `encoder.features` has torchvision's `vgg16_bn().features` layout and indices, so a local
torchvision checkpoint loads with `load_backbone`.

Decoder: five blocks, each max-unpooling with the matching encoder indices then conv5x5 + BN
(512 -> 512 -> 256 -> 128 -> 64 -> 1). The reference implementation has no activation anywhere in
its decoder, which makes the four hidden layers one linear map between unpoolings; we put a ReLU
(no parameters) after each hidden block. The last block (conv5x5 64 -> 1) gives the alpha logits.

Revisions (build option `revision`, recorded in model files; files without one are revision 1 and
load as such). The last block (conv5x5 64 -> 1) ends:
- revision 1: in the reference's BN(1). A one-channel BatchNorm fixes the logits' batch mean and
  spread to its bias and weight, so a weight near 0 gives one alpha everywhere whatever the
  features: the first DIM PPID student (cpu_small, seed 0) went there by step 100 (weight 0.009,
  bias -1.49: alpha 0.18 on every image), with or without CLSD or ALD's attention term
  (results/dim_collapse/).
- revision 2: in nothing, as in the DIM paper's network (25,582,593 parameters). The students then
  found another flat matte: trained from random weights at the paper's rate, the conv's weights
  cancel the features' variation within 50 steps (logits' spread 0.0075 while the features' is
  0.6), the gradient reaching the encoder falls 16x, and the alpha loss never leaves the flat
  level (baseline and PPID, bf16 and float32; at a tenth of the rate not by step 400 either).
  The teacher, whose trimap input is the answer's outline, learned well.
- revision 3 (current): in a one-channel BatchNorm whose scale is `SCALE_FLOOR` + softplus(a
  learned parameter), so the logits' spread over a training batch never falls below 0.5, while a
  well-trained network's spread (several units) is free. Its baseline learned where revision 2's
  did not; its PPID student stayed alive but at the flat level to step 400 (probe): the floor keeps
  the head out of both dead states, it does not by itself make a student learn. 25,582,595
  parameters, as revision 1 and the paper's 25.58M.

PPID taps: `enc` = the five pooled block outputs (strides 2..32); `dec` = the decoder outputs at
stride 4 (128 ch) and stride 2 (64 ch), each gated by a CBAM spatial attention (ALD, eq. 5-9).
With CLSD connectors (eq. 4) Fbar_n flows into block n+1, and Fbar_5 into the decoder; DIM has no
feature skips (only pooling indices), so that is everywhere Fbar goes.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import CrossLayerConnectors, MattingNet, MattingOutput, SpatialAttention, check_build_options, kaiming_init

ENCODER_WIDTHS = (64, 128, 256, 512, 512)
ENCODER_DEPTHS = (2, 2, 3, 3, 3)
DECODER_WIDTHS = (512, 256, 128, 64, 1)  # outputs of the blocks at strides 16, 8, 4, 2, 1
ATTENTION_STRIDES = (4, 2)
REVISION = 3  # the last block: 1 with BN(1) (DIM results before 2026-11-27); 2 without (to 2026-12-08); 3 floored BN(1)
SCALE_FLOOR = 0.5  # revision 3: the least spread of the logits over a training batch


class VGG16BNEncoder(nn.Module):
    """torchvision's `vgg16_bn().features` (same module indices), pooling with indices kept.

    `stage(n, x)` runs block n and its pooling and returns (pooled feature, pooling indices)."""

    def __init__(self, in_channels):
        super().__init__()
        layers, self.stage_slices = [], []
        c_in = in_channels
        for width, depth in zip(ENCODER_WIDTHS, ENCODER_DEPTHS):
            start = len(layers)
            for _ in range(depth):
                layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                c_in = width
            self.stage_slices.append(slice(start, len(layers)))
            layers.append(nn.MaxPool2d(2, stride=2, return_indices=True))
        self.features = nn.Sequential(*layers)

    def stage(self, n, x):
        block = self.stage_slices[n]
        x = self.features[block](x)
        return self.features[block.stop](x)


def max_unpool(x, indices):
    """SegNet 2x2 max-unpooling: each value returns to the position its max-pooling took it from,
    zeros elsewhere. A scatter rather than F.max_unpool2d, whose output-size check breaks tracing
    (ONNX export)."""
    n, c, h, w = x.shape
    out = x.new_zeros(n, c, 4 * h * w).scatter(2, indices.flatten(2), x.flatten(2))
    return out.view(n, c, 2 * h, 2 * w)


class FlooredScale(nn.Module):
    """x * (SCALE_FLOOR + softplus(weight)) + bias, per channel: the affine part of revision 3's
    last BatchNorm, whose scale cannot fall below the floor. Starts at scale 1, bias 0."""

    def __init__(self, channels):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), math.log(math.expm1(1.0 - SCALE_FLOOR))))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        scale = SCALE_FLOOR + F.softplus(self.weight)
        return x * scale.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def decoder_block(c_in, c_out, relu=True, norm="bn"):
    """conv5x5, then `norm`: "bn" (BatchNorm), "floored" (revision 3's head) or None, then ReLU."""
    layers = [nn.Conv2d(c_in, c_out, 5, padding=2)]
    if norm == "bn":
        layers.append(nn.BatchNorm2d(c_out))
    elif norm == "floored":
        layers += [nn.BatchNorm2d(c_out, affine=False), FlooredScale(c_out)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


HEAD_NORM = {1: "bn", 2: None, 3: "floored"}  # the last block's norm, by revision


class DIMNet(MattingNet):
    """DIM teacher (RGB + trimap/255) or student (RGB); see the module docstring."""

    trimap_encoding = "value"
    backbone_attr = "encoder"
    first_conv_key = "features.0.weight"

    def __init__(self, role, cross_layer=False, revision=REVISION):
        super().__init__(role, cross_layer)
        self.encoder = VGG16BNEncoder(self.in_channels)
        widths = (ENCODER_WIDTHS[-1],) + DECODER_WIDTHS
        self.decoder = nn.ModuleList(
            decoder_block(c_in, c_out, relu=c_out != 1, norm="bn" if c_out != 1 else HEAD_NORM[revision])
            for c_in, c_out in zip(widths[:-1], widths[1:])
        )
        self.attention = nn.ModuleList(SpatialAttention() for _ in ATTENTION_STRIDES)
        self.connectors = CrossLayerConnectors(ENCODER_WIDTHS) if cross_layer else None
        kaiming_init(self)

    def forward_features(self, x, taps_only=False):
        enc, cross, indices = [], [], []
        fbar = x
        for n in range(len(ENCODER_WIDTHS)):
            f, idx = self.encoder.stage(n, fbar)
            enc.append(f)
            indices.append(idx)
            if self.connectors is None:
                fbar = f
                continue
            fbar, c = self.connectors.step(n, f, fbar)  # fbar is Fbar_{n-1} here (unused at n = 0)
            if c is not None:
                cross.append(c)

        y, dec = fbar, []
        stride = 2 ** len(ENCODER_WIDTHS)
        for block, idx in zip(self.decoder, reversed(indices)):
            y = block(max_unpool(y, idx))
            stride //= 2
            if stride in ATTENTION_STRIDES:
                y, tap = self.attention[ATTENTION_STRIDES.index(stride)](y)
                dec.append(tap)
                if taps_only and len(dec) == len(ATTENTION_STRIDES):
                    return MattingOutput(alpha=None, alpha_logits=None, enc=enc, dec=dec, cross=cross)
        return MattingOutput(alpha=None, alpha_logits=y, enc=enc, dec=dec, cross=cross)


def build(role, cross_layer=False, revision=REVISION, **options):
    check_build_options("dim", options, revision, latest=REVISION)
    return DIMNet(role, cross_layer=cross_layer, revision=revision)
