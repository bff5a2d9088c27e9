"""GCA Matting (Li & Lu, "Natural image matting via guided contextual attention", AAAI 2020) in
the configuration whose 25,164,529 trainable parameters (6 input channels) are the paper's 25.13M.

Encoder (ResNet-34-style, ResNet-D shortcuts): stem conv3x3 in->32 s2, 32->32, 32->64 s2 (each
+BN+ReLU); BasicBlock stages layer1..layer4 with 3/4/4/2 blocks (64@/4, 128@/8, 256@/16, 512@/32;
layer4 is GCA's "bottleneck"), whose stride-2 identity path is 2x2 average pooling + conv1x1 + BN.
Skips: five "shortcut" heads (two conv3x3 -> ReLU -> BN each) on the input and on the /2../16
features. Guidance: a head of three reflect-padded stride-2 convs on the RGB channels (128@/8).
Guided contextual attention (GCA) after layer2 and after decoder.layer2, both sharing the guidance
features and the unknown mask. Decoder: BasicBlocks with LeakyReLU(0.2) (2/3/3/2 blocks to
256@/16, 128@/8, 64@/4, 32@/2); the first block of a stage upsamples with a 4x4 stride-2
ConvTranspose and a nearest-upsample + conv1x1 + BN identity path; then ConvTranspose to /1, BN,
LeakyReLU, plus the input skip, and conv3x3 32->1 for the alpha. Spectral norm on every conv except
the alpha conv and the two convs inside each GCA block (u, v are buffers, not parameters).

Deviations, as the contract asks:
- sigmoid head: the original maps the last conv by (tanh(x) + 1) / 2 = sigmoid(2x), the same
  family of function; we return the pre-sigmoid logits and the base class applies the sigmoid;
- CBAM spatial attention gates at the two ALD taps (decoder outputs at /4 and /2);
- the one-hot trimap (background, unknown, foreground) is computed by `MattingNet`; the student
  has no trimap, so GCA treats every pixel as unknown (the original's no-mask path: softmax scale
  1 for every patch, see `GuidedContextualAttention`). Teacher and student differ in the input
  channels of the two convs that read the input: the stem's first conv and `shortcut.0`.

PPID taps: `enc` = stem output 32@/2, layer1 64@/4, layer2 after GCA 128@/8, layer3 256@/16,
layer4 512@/32. With CLSD connectors (eq. 4) Fbar_n flows on into the next stage and into the
shortcut skips. `dec` = decoder outputs at /4 (64 ch) and /2 (32 ch).

ImageNet initialisation (`load_backbone`): layer1..layer4 blocks load torchvision's `resnet34`
keys of the same names (layer3 / layer4: their first four / two blocks; the average-pooled identity
path takes the strided conv1x1 weights). Skipped on purpose: torchvision's conv1/bn1 (a 7x7 stem;
GCA's stem is three 3x3 convs), layer3.4-5, layer4.2 and fc. Stem, shortcuts, guidance head and GCA keep their own init.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from .common import CrossLayerConnectors, MattingNet, MattingOutput, SpatialAttention, check_build_options

ENCODER_WIDTHS = (32, 64, 128, 256, 512)  # tap widths at strides 2, 4, 8, 16, 32
ENCODER_DEPTHS = (3, 4, 4, 2)  # BasicBlocks in layer1..layer4
DECODER_DEPTHS = (2, 3, 3, 2)
SHORTCUT_WIDTHS = (32, 32, 64, 128, 256)  # skips at strides 1, 2, 4, 8, 16
GUIDANCE_WIDTHS = (16, 32, 128)
ATTENTION_STRIDES = (4, 2)
# torchvision resnet34 keys with no GCA counterpart: the 7x7 stem, blocks beyond GCA's 4 / 2 in
# layer3 / layer4, the classifier
TORCHVISION_SKIPPED = ("conv1.", "bn1.", "layer3.4.", "layer3.5.", "layer4.2.", "fc.")
SN_WEIGHT = "parametrizations.weight.original"  # where spectral norm keeps a conv's raw weight


def sn_conv(conv):
    """Xavier-uniform init (as the original), then spectral norm on the weight."""
    nn.init.xavier_uniform_(conv.weight)
    return spectral_norm(conv)


def conv3x3(c_in, c_out, stride=1, padding_mode="zeros"):
    return sn_conv(nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False, padding_mode=padding_mode))


def up_conv4x4(c_in, c_out):
    return sn_conv(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False))


def conv_relu_bn(c_in, c_out, stride=1, padding_mode="zeros"):
    # the shortcut and guidance heads put ReLU before BN, as the original
    return [conv3x3(c_in, c_out, stride, padding_mode), nn.ReLU(inplace=True), nn.BatchNorm2d(c_out)]


class Resample(nn.Sequential):
    """Identity path of a block that changes resolution: 2x2 average pooling (ResNet-D) or nearest
    upsampling, then conv1x1 + BN at indices 0, 1 like torchvision's `downsample`."""

    def __init__(self, c_in, c_out, up):
        super().__init__(sn_conv(nn.Conv2d(c_in, c_out, 1, bias=False)), nn.BatchNorm2d(c_out))
        self.up = up

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2.0, mode="nearest") if self.up else F.avg_pool2d(x, 2)
        return super().forward(x)


class EncoderBlock(nn.Module):
    """torchvision's BasicBlock (same names), spectral-normalised; `resample` = stride 2 with a
    ResNet-D identity path."""

    def __init__(self, c_in, c_out, resample=False):
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride=2 if resample else 1)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        nn.init.zeros_(self.bn2.weight)  # every residual block starts as the identity
        self.downsample = Resample(c_in, c_out, up=False) if resample else None

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + identity)


class DecoderBlock(nn.Module):
    """GCA decoder block: conv1 (ConvTranspose 4x4 s2 when `resample`) + BN + LeakyReLU(0.2),
    conv2 + BN, identity path (nearest-upsample + conv1x1 + BN when `resample`), LeakyReLU."""

    def __init__(self, c_in, c_out, resample=False):
        super().__init__()
        self.conv1 = up_conv4x4(c_in, c_in) if resample else conv3x3(c_in, c_in)
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv2 = conv3x3(c_in, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        nn.init.zeros_(self.bn2.weight)
        self.upsample = Resample(c_in, c_out, up=True) if resample else None

    def forward(self, x):
        identity = x if self.upsample is None else self.upsample(x)
        out = F.leaky_relu(self.bn1(self.conv1(x)), 0.2)
        return F.leaky_relu(self.bn2(self.conv2(out)) + identity, 0.2)


def make_stage(block, c_in, c_out, depth):
    """A stage whose first block changes resolution (halves it in the encoder, doubles it in the
    decoder) and width."""
    return nn.Sequential(block(c_in, c_out, resample=True), *(block(c_out, c_out) for _ in range(depth - 1)))


class GuidedContextualAttention(nn.Module):
    """Guided contextual attention (Li & Lu 2020, sec. 3.2), batched.

    At half the feature resolution, 3x3 patches of the guidance features (RGB guidance, 1x1 conv to
    half width) are compared by cosine similarity: score[l, p] = <g_p, g_l / |g_l|> for every
    source patch l and target position p. Scores of a source patch l are scaled by the
    known/unknown balance (unknown patches by clamp(sqrt(u / k), 0.1, 10), known ones by
    clamp(sqrt(k / u), 0.1, 10), u and k the unknown and known fractions of the image); an unknown
    source patch may not attend to itself (-1e4); softmax over the sources. The attention then
    propagates 4x4 patches of the alpha feature (stride 2): a transposed convolution with those
    patches as kernels, computed as one batched matmul + fold, divided by the 4 overlapping
    patches per pixel. Output = alpha feature + BN(conv1x1(propagated)), BN gamma starting at 1e-3
    so the block starts as the identity.

    A patch counts as unknown when its 3x3 window holds an unknown pixel. Without an unknown mask
    (trimap-free students) every pixel is unknown and every scale is 1, as the original does when
    it gets no mask.
    """

    def __init__(self, channels=128, guidance_channels=128):
        super().__init__()
        self.guidance_conv = nn.Conv2d(guidance_channels, guidance_channels // 2, 1)
        self.out = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
        nn.init.xavier_uniform_(self.guidance_conv.weight)
        nn.init.zeros_(self.guidance_conv.bias)
        nn.init.xavier_uniform_(self.out[0].weight)
        nn.init.constant_(self.out[1].weight, 1e-3)

    def forward(self, guidance, alpha_feature, unknown=None):
        n, _, h, w = alpha_feature.shape
        g = F.interpolate(self.guidance_conv(guidance), size=(h // 2, w // 2), mode="nearest")
        keys = F.unfold(F.pad(g, (1, 1, 1, 1), mode="reflect"), 3)  # (N, C*9, L), one column per patch
        unit_keys = keys / keys.norm(dim=1, keepdim=True).clamp_min(1e-4)
        scores = unit_keys.transpose(1, 2) @ keys  # (N, L sources, L targets)

        if unknown is None:  # trimap-free: every patch unknown, every scale 1
            source_unknown = scores.new_ones(n, scores.shape[1])
        else:
            u = F.interpolate(unknown.float(), size=(h // 2, w // 2), mode="nearest")
            frac = u.mean(dim=(1, 2, 3)).unsqueeze(1)  # (N, 1) unknown fraction
            unknown_scale = torch.sqrt(frac / (1 - frac)).clamp(0.1, 10)  # 1/0 -> inf -> 10
            known_scale = torch.sqrt((1 - frac) / frac).clamp(0.1, 10)
            source_unknown = F.max_pool2d(u, 3, stride=1, padding=1).flatten(1) > 0  # (N, L)
            scale = torch.where(source_unknown, unknown_scale, known_scale)
            scores = scores * scale.unsqueeze(2).to(scores.dtype)
        # an unknown source patch may not attend to itself
        self_match = torch.eye(scores.shape[1], dtype=torch.bool, device=scores.device)
        scores = torch.where(self_match, scores - 1e4 * source_unknown.unsqueeze(2).to(scores.dtype), scores)
        attention = torch.softmax(scores, dim=1, dtype=torch.float32)

        values = F.unfold(F.pad(alpha_feature, (1, 1, 1, 1), mode="reflect"), 4, stride=2)  # (N, C*16, L)
        pasted = values @ attention.to(values.dtype)
        propagated = F.fold(pasted, (h, w), 4, stride=2, padding=1) / 4
        return alpha_feature + self.out(propagated)


class GCAEncoder(nn.Module):
    """Encoder layers; `layer1`..`layer4` carry torchvision's resnet34 names (GCAMatting runs them)."""

    def __init__(self, in_channels):
        super().__init__()
        self.stem = nn.Sequential(
            conv3x3(in_channels, 32, stride=2), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            conv3x3(32, 32), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
        )  # 32@/2: the first tap and the /2 skip
        self.stem_down = nn.Sequential(conv3x3(32, 64, stride=2), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        self.layer1 = nn.Sequential(*(EncoderBlock(64, 64) for _ in range(ENCODER_DEPTHS[0])))
        self.layer2, self.layer3, self.layer4 = (
            make_stage(EncoderBlock, c_in, c_out, depth)
            for c_in, c_out, depth in zip(ENCODER_WIDTHS[1:4], ENCODER_WIDTHS[2:], ENCODER_DEPTHS[1:])
        )
        skip_inputs = (in_channels,) + ENCODER_WIDTHS[:4]
        self.shortcut = nn.ModuleList(
            nn.Sequential(*conv_relu_bn(c_in, c_out), *conv_relu_bn(c_out, c_out))
            for c_in, c_out in zip(skip_inputs, SHORTCUT_WIDTHS)
        )
        guidance_inputs = (3,) + GUIDANCE_WIDTHS[:-1]
        self.guidance_head = nn.Sequential(*(
            layer
            for c_in, c_out in zip(guidance_inputs, GUIDANCE_WIDTHS)
            for layer in conv_relu_bn(c_in, c_out, stride=2, padding_mode="reflect")
        ))
        self.gca = GuidedContextualAttention(128, GUIDANCE_WIDTHS[-1])


class GCADecoder(nn.Module):
    def __init__(self):
        super().__init__()
        widths = (512, 256, 128, 64, 32)
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            make_stage(DecoderBlock, c_in, c_out, depth)
            for c_in, c_out, depth in zip(widths[:-1], widths[1:], DECODER_DEPTHS)
        )
        self.gca = GuidedContextualAttention(128, GUIDANCE_WIDTHS[-1])
        self.conv1 = up_conv4x4(32, 32)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 1, 3, padding=1)  # alpha logits; no spectral norm, as the original
        nn.init.xavier_uniform_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)


class GCAMatting(MattingNet):
    trimap_encoding = "onehot"
    backbone_attr = "encoder"
    first_conv_key = None  # the GCA stem has no torchvision counterpart (see load_backbone)

    def __init__(self, role, cross_layer=False):
        super().__init__(role, cross_layer)
        self.encoder = GCAEncoder(self.in_channels)
        self.decoder = GCADecoder()
        self.attention = nn.ModuleList(SpatialAttention() for _ in ATTENTION_STRIDES)
        self.connectors = CrossLayerConnectors(ENCODER_WIDTHS) if cross_layer else None

    def unknown_mask(self, x):
        """The trimap's unknown channel at /8 (nearest, as the original); None for students."""
        if self.role == "student":
            return None
        return F.interpolate(x[:, 4:5], size=(x.shape[2] // 8, x.shape[3] // 8), mode="nearest")

    def forward_features(self, x, taps_only=False):
        e, d = self.encoder, self.decoder
        guidance = e.guidance_head(x[:, :3])
        unknown = self.unknown_mask(x)
        enc, cross = [], []

        def tap(n, f, fbar_prev):
            """Record F_n; return what flows on: Fbar_n with connectors (eq. 4), else F_n."""
            enc.append(f)
            if self.connectors is None:
                return f
            fbar, c = self.connectors.step(n, f, fbar_prev)
            if c is not None:
                cross.append(c)
            return fbar

        f1 = tap(0, e.stem(x), None)
        f2 = tap(1, e.layer1(e.stem_down(f1)), f1)
        f3 = tap(2, e.gca(guidance, e.layer2(f2), unknown), f2)
        f4 = tap(3, e.layer3(f3), f3)
        f5 = tap(4, e.layer4(f4), f4)
        skip2, skip4, skip8, skip16 = (s(f) for s, f in zip(e.shortcut[1:], (f1, f2, f3, f4)))

        y = d.layer1(f5) + skip16
        y = d.gca(guidance, d.layer2(y) + skip8, unknown)
        y, tap4 = self.attention[0](d.layer3(y) + skip4)
        y, tap2 = self.attention[1](d.layer4(y) + skip2)
        if taps_only:
            return MattingOutput(alpha=None, alpha_logits=None, enc=enc, dec=[tap4, tap2], cross=cross)
        y = F.leaky_relu(d.bn1(d.conv1(y)), 0.2) + e.shortcut[0](x)
        return MattingOutput(alpha=None, alpha_logits=d.conv2(y), enc=enc, dec=[tap4, tap2], cross=cross)

    # torchvision's stem, surplus blocks and fc have no counterpart here (module docstring)
    backbone_ignored_prefixes = TORCHVISION_SKIPPED

    def backbone_keys(self, own):
        """resnet34's layer1..layer4 keys -> ours; spectral norm keeps each conv's raw weight under
        another name, and its u, v are ours alone."""
        return {
            k.replace(SN_WEIGHT, "weight"): k
            for k in own
            if k.startswith("layer") and ".parametrizations.weight.0." not in k and not k.endswith("num_batches_tracked")
        }

    def after_backbone_load(self):
        """Re-estimate each loaded conv's spectral norm and divide the following BN's running
        statistics by sigma (mean) and sigma^2 (var): conv + BN then compute what torchvision's
        conv + BN compute."""
        for name, module in self.encoder.named_modules():
            if name.startswith("layer") and parametrize.is_parametrized(module, "weight"):
                sigma = refresh_spectral_norm(module)
                bn = self.encoder.get_submodule(following_bn(name))
                bn.running_mean.div_(sigma)
                bn.running_var.div_(sigma**2)


def following_bn(conv_name):
    """The BN right after a block conv: convN -> bnN, downsample.0 -> downsample.1."""
    if conv_name.endswith("downsample.0"):
        return conv_name[:-1] + "1"
    return conv_name[: -len("convN")] + "bn" + conv_name[-1]


@torch.no_grad()
def refresh_spectral_norm(module, iterations=15):
    """Re-run the power iteration for new raw weights (as registration does); returns sigma."""
    sn = module.parametrizations.weight[0]
    weight = sn._reshape_weight_to_matrix(module.parametrizations.weight.original)
    sn._power_method(weight, iterations)
    return torch.dot(sn._u, weight @ sn._v)


def build(role, cross_layer=False, **options):
    check_build_options("gca", options)
    return GCAMatting(role, cross_layer=cross_layer)
