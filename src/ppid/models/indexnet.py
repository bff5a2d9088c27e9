"""IndexNet Matting (Lu et al., ICCV 2019) in the configuration whose 5,953,515 parameters (4 input
channels) are the paper's 5.95M: MobileNetV2 encoder, depthwise M2O index blocks with the nonlinear
and context options, ASPP at output stride 32, index-guided decoder with 5x5 convs.

Encoder: torchvision's `mobilenet_v2().features[0:18]` (same module indices, so a local torchvision
checkpoint loads with `load_backbone`) with every stride set to 1: the stem keeps 32 ch at /1 and
all downsampling is index pooling, `4 * avg_pool2x2(idx_en * x)`, after features 0 (32 ch), 3 (24),
6 (32), 10 (64) and 16 (160). torchvision's last 1x1 conv (features.18, 320 -> 1280) is not used.

Index block (depthwise M2O, nonlinear + context): four branches, each a 4x4 stride-2 conv C -> C
(a full conv despite the name), BN, ReLU6 and a 1x1 conv C -> C, predict for every channel and 2x2
cell one logit per cell position. idx_de = sigmoid(logits), idx_en = softmax over the four
positions of idx_de, both pixel-shuffled back to full resolution. The four branches run here as one
C -> 4C conv, one BN and a 4-group 1x1 conv: the same parameters, one kernel launch.

Decoder: index-guided unpooling (nearest x2 times the encoder's idx_de) where the encoder pooled,
concatenation with the encoder skip (the index-weighted feature idx_en * x), conv5x5 + BN + ReLU6.
Head: conv5x5 32 -> 1 + BN + ReLU6, then conv5x5 1 -> 1 without bias (original; see revision 2).

Our deviations, from the PPID contract: the head output is used as logits (sigmoid head; the
original regresses an unbounded alpha and clips it); CBAM spatial attention gates the decoder
outputs at strides 4 (24 ch) and 2 (32 ch), the ALD taps (eq. 5-9).

Revision 2 (build option `revision`, recorded in model files): the head has no ReLU6, so it is
conv5x5 32 -> 1 + BN, then conv5x5 1 -> 1; same parameters. The original's head output is alpha, and
a one-channel ReLU6 r >= 0 before it means alpha 0 at r = 0. As a logit, r = 0 means alpha 0.5, and a
flat region's logit is r * sum(kernel), one sign for the whole image: all five revision-1 networks we
measured learned a negative sum and predicted alpha <= ~0.54 everywhere, and one PPID student's r
went to 0 everywhere (a dead head, constant alpha 0.5). docs/results.md has the numbers. Files
without a recorded revision are revision 1 and load as such.

PPID taps: `enc` = the last encoder output at each stride before it is pooled, 24 ch /2, 32 /4,
64 /8, 160 /16, 320 /32 (the five features the decoder skips and ASPP read). With CLSD connectors
(eq. 4) Fbar_n replaces F_n everywhere after the tap: it is what the index block sees and pools into
the next stage, what the decoder skip receives, and (n = 5) the ASPP input. The connectors add
578,880 parameters (paper: 6.47M - 5.95M = 0.52M).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import PpidError
from .common import CrossLayerConnectors, MattingNet, MattingOutput, SpatialAttention, check_build_options, kaiming_init

REVISION = 2  # 1: the head with ReLU6 (every IndexNet result before 2026-11-27); 2: without

# MobileNetV2 inverted-residual settings (expansion, width, blocks), torchvision features 1..17.
MOBILENET_V2 = ((1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1))
STEM_WIDTH = 32
ENCODER_WIDTHS = (24, 32, 64, 160, 320)  # the enc taps at strides 2, 4, 8, 16, 32
ASPP_WIDTH, ASPP_OUT, ASPP_DILATIONS = 256, 160, (2, 4, 8)


def conv_bn_relu6(c_in, c_out, kernel=1, stride=1, dilation=1, groups=1, relu6=True):
    """torchvision's Conv2dNormActivation layout: 0 = conv (no bias), 1 = BN, 2 = ReLU6 (or none)."""
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU6(inplace=True) if relu6 else nn.Identity(),
    )


class InvertedResidual(nn.Module):
    """MobileNetV2 block with torchvision's parameter names, at stride 1 (IndexNet pools instead)."""

    def __init__(self, c_in, c_out, expansion):
        super().__init__()
        hidden = c_in * expansion
        expand = [conv_bn_relu6(c_in, hidden)] if expansion != 1 else []
        self.conv = nn.Sequential(
            *expand,
            conv_bn_relu6(hidden, hidden, 3, groups=hidden),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.residual = c_in == c_out

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2Encoder(nn.Module):
    """`features` = torchvision's mobilenet_v2 features 0..17, every stride 1 (stem included)."""

    def __init__(self, in_channels):
        super().__init__()
        layers, c_in = [conv_bn_relu6(in_channels, STEM_WIDTH, 3)], STEM_WIDTH
        for expansion, width, blocks in MOBILENET_V2:
            for _ in range(blocks):
                layers.append(InvertedResidual(c_in, width, expansion))
                c_in = width
        self.features = nn.Sequential(*layers)


def softmax_over_positions(idx_de):
    """Softmax over dim 1 (the four positions of each 2x2 cell) of a (N, 4, C, h, w) tensor.

    ONNX Runtime runs Softmax on a non-last axis by transposing the whole tensor there and back
    (40% of the exported network's CPU time at 512x512), so the exported graph spells it out as
    exp / sum, which needs no max subtraction because idx_de is a sigmoid in (0, 1). Eager PyTorch
    keeps its fused softmax (3x faster than exp / sum there)."""
    if torch.onnx.is_in_onnx_export():
        e = idx_de.exp()
        return e / e.sum(dim=1, keepdim=True)
    return torch.softmax(idx_de, dim=1)


def positions_to_pixels(cells):
    """(N, 4, C, h, w) values per 2x2-cell position p = 2i + j -> (N, C, 2h, 2w) with position p
    at pixel (2y + i, 2x + j): pixel_shuffle's layout, in one copy instead of its two (a transpose
    to channel-major, then the shuffle), which halves its eager time."""
    return cells.unflatten(1, (2, 2)).permute(0, 3, 4, 1, 5, 2).flatten(4, 5).flatten(2, 3)


class IndexBlock(nn.Module):
    """Depthwise M2O index block with nonlinearity and context (4x4 kernels).

    forward(x) -> (idx_en * x, 4 * avg_pool2x2(idx_en * x), idx_de): the feature the decoder skip
    receives, the pooled feature for the next stage, and the decoder's unpooling index map."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, 4 * channels, 4, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4 * channels)
        self.proj = nn.Conv2d(4 * channels, 4 * channels, 1, groups=4, bias=False)

    def forward(self, x):
        c = x.shape[1]
        # (N, 4C, h/2, w/2) position-major logits -> (N, 4, C, h/2, w/2); no full-resolution map
        # is bound to a name longer than it is needed (inference peaks in this block at /1)
        idx_de = torch.sigmoid(self.proj(F.relu6(self.bn(self.conv(x))))).unflatten(1, (4, c))
        weighted = positions_to_pixels(softmax_over_positions(idx_de)) * x
        return weighted, 4 * F.avg_pool2d(weighted, 2), positions_to_pixels(idx_de)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling at output stride 32: a 1x1 branch, three depthwise-separable
    dilated 3x3 branches (dilations 2, 4, 8), image pooling; 1x1 bottleneck and Dropout(0.5).
    As in the original, the pooled branch has a BN over 1x1 maps, so training needs batches of 2+."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn_relu6(c_in, ASPP_WIDTH)]
            + [
                nn.Sequential(conv_bn_relu6(c_in, c_in, 3, dilation=d, groups=c_in), conv_bn_relu6(c_in, ASPP_WIDTH))
                for d in ASPP_DILATIONS
            ]
        )
        self.image_pool = conv_bn_relu6(c_in, ASPP_WIDTH)
        self.bottleneck = conv_bn_relu6(ASPP_WIDTH * (len(ASPP_DILATIONS) + 2), c_out)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        if self.training and x.shape[0] < 2:
            raise PpidError("indexnet trains with batches of 2 or more (BatchNorm over ASPP's 1x1 image pooling)")
        pooled = self.image_pool(x.mean(dim=(2, 3), keepdim=True)).expand(-1, -1, *x.shape[-2:])
        y = torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1)
        return self.dropout(self.bottleneck(y))


class IndexedUpsampling(nn.Module):
    """Decoder stage: unpool y to the skip's size guided by idx_de (when the encoder pooled there),
    concatenate the encoder skip, conv5x5 + BN + ReLU6."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv = conv_bn_relu6(c_in, c_out, 5)

    def forward(self, y, skip, idx_de=None):
        if idx_de is None:
            return self.conv(torch.cat([y, skip], dim=1))
        # unpooled y lives only inside the concatenation (at /1 it is as large as the skip)
        return self.conv(torch.cat([idx_de * F.interpolate(y, size=skip.shape[-2:], mode="nearest"), skip], dim=1))


class IndexNet(MattingNet):
    trimap_encoding = "value"
    backbone_attr = "encoder"
    first_conv_key = "features.0.0.weight"
    # torchvision keys with no counterpart here (the 1280-ch head conv and the classifier)
    backbone_ignored_prefixes = ("features.18.", "classifier.")

    def __init__(self, role, cross_layer=False, revision=REVISION):
        super().__init__(role, cross_layer)
        self.encoder = MobileNetV2Encoder(self.in_channels)
        # named after the original's layer numbers: index<k> pools the output of layer k
        self.index0, self.index2, self.index3 = IndexBlock(32), IndexBlock(24), IndexBlock(32)
        self.index4, self.index6 = IndexBlock(64), IndexBlock(160)
        self.aspp = ASPP(320, ASPP_OUT)
        self.dec6 = IndexedUpsampling(ASPP_OUT + 160, 96)  # /16
        self.dec5 = IndexedUpsampling(96 + 96, 64)  # /16
        self.dec4 = IndexedUpsampling(64 + 64, 32)  # /8
        self.dec3 = IndexedUpsampling(32 + 32, 24)  # /4, ALD tap
        self.dec2 = IndexedUpsampling(24 + 24, 16)  # /2
        self.dec1 = IndexedUpsampling(16 + 16, 32)  # /2, ALD tap
        self.dec0 = IndexedUpsampling(32 + 32, 32)  # /1
        self.attention = nn.ModuleList([SpatialAttention(), SpatialAttention()])  # strides 4, 2
        self.head = nn.Sequential(conv_bn_relu6(32, 1, 5, relu6=revision == 1), nn.Conv2d(1, 1, 5, padding=2, bias=False))
        self.connectors = CrossLayerConnectors(ENCODER_WIDTHS) if cross_layer else None
        kaiming_init(self)

    def forward_features(self, x, taps_only=False):
        enc, cross, fbar = [], [], None

        def tap(f):
            """Record F_n; return what flows on: Fbar_n with connectors (eq. 4), F_n without."""
            nonlocal fbar
            enc.append(f)
            if self.connectors is None:
                return f
            fbar, c = self.connectors.step(len(enc) - 1, f, fbar)
            if c is not None:
                cross.append(c)
            return fbar

        layers = self.encoder.features
        l0, x, idx0 = self.index0(layers[0](x))  # 32 @ /1 -> /2
        l1 = layers[1](x)  # 16 @ /2
        l2, x, idx2 = self.index2(tap(layers[2:4](l1)))  # 24 @ /2 -> /4
        l3, x, idx3 = self.index3(tap(layers[4:7](x)))  # 32 @ /4 -> /8
        l4, x, idx4 = self.index4(tap(layers[7:11](x)))  # 64 @ /8 -> /16
        l5 = layers[11:14](x)  # 96 @ /16
        l6, x, idx6 = self.index6(tap(layers[14:17](l5)))  # 160 @ /16 -> /32
        y = self.aspp(tap(layers[17](x)))  # 320 @ /32 -> 160

        y = self.dec6(y, l6, idx6)
        y = self.dec5(y, l5)
        y = self.dec4(y, l4, idx4)
        y, tap4 = self.attention[0](self.dec3(y, l3, idx3))
        y = self.dec2(y, l2, idx2)
        y, tap2 = self.attention[1](self.dec1(y, l1))
        if taps_only:
            return MattingOutput(alpha=None, alpha_logits=None, enc=enc, dec=[tap4, tap2], cross=cross)
        y = self.dec0(y, l0, idx0)
        return MattingOutput(alpha=None, alpha_logits=self.head(y), enc=enc, dec=[tap4, tap2], cross=cross)


def build(role, cross_layer=False, revision=REVISION, **options):
    check_build_options("indexnet", options, revision, latest=REVISION)
    return IndexNet(role, cross_layer=cross_layer, revision=revision)
