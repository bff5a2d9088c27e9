"""DIM (VGG16-BN SegNet-style encoder-decoder): taps, trimap rules, counts, torchvision loading."""

import pytest
import torch

from helpers import assert_taps, random_batch, save_weights
from ppid import PpidError
from ppid.models import PAPER_PARAMS, build, count_parameters
from ppid.models.dim import SCALE_FLOOR

# torchvision vgg16_bn().features: conv indices per block (each conv is followed by BN at +1)
TORCHVISION_CONVS = (0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40)
ENC_CHANNELS = (64, 128, 256, 512, 512)


def inputs(n=2, h=64, w=64, seed=0):
    return random_batch(n, h, w, seed)


@pytest.mark.parametrize("role,cross_layer", [("teacher", False), ("student", False), ("student", True)])
def test_forward_backward_and_tap_shapes(role, cross_layer):
    torch.manual_seed(0)
    model = build("dim", role, cross_layer=cross_layer)
    image, trimap = inputs(h=64, w=96)
    out = model(image, trimap if role == "teacher" else None)

    assert out.alpha.shape == (2, 1, 64, 96)
    assert_taps(out, 2, 64, 96, ENC_CHANNELS, (128, 64), cross_layer)

    loss = out.alpha_logits.square().mean() + sum(t.logits.mean() for t in out.dec)
    loss.backward()
    first_conv = model.encoder.features[0].weight
    assert first_conv.shape[1] == (4 if role == "teacher" else 3)
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0


def test_parameter_counts_match_the_reference_dim():
    teacher, student = build("dim", "teacher"), build("dim", "student")
    # Per-block counts of the reference DIMModel (4 input channels): 25,582,595 in all. Revision 2
    # drops the last block's BN(1) (2 parameters); revision 3's floored BN(1) has them again.
    assert count_parameters(teacher.encoder) == 14_723_712
    assert [count_parameters(b) for b in teacher.decoder] == [6_555_136, 3_277_568, 819_584, 204_992, 1_603]
    assert count_parameters(build("dim", "teacher", revision=1).decoder[-1]) == 1_603
    assert count_parameters(build("dim", "teacher", revision=2).decoder[-1]) == 1_601
    attention = count_parameters(teacher.attention)  # our two ALD gates: 2 x (2*7*7 + 1)
    assert attention == 198
    assert count_parameters(teacher) == 25_582_595 + attention
    assert count_parameters(teacher) - count_parameters(student) == 64 * 9  # one input channel less
    for model in (teacher, student):
        assert abs(count_parameters(model) / PAPER_PARAMS["dim"]["plain"] - 1) < 0.02
    ppid = build("dim", "student", cross_layer=True)
    connectors = sum(c_in * c_out * 9 + c_out for c_in, c_out in zip(ENC_CHANNELS[:-1], ENC_CHANNELS[1:]))
    assert count_parameters(ppid) == count_parameters(student) + connectors


def torchvision_state(in_channels=3, seed=0):
    """A synthetic torchvision vgg16_bn state dict (random tensors, torchvision's names and shapes,
    with the classifier a real checkpoint carries)."""
    g = torch.Generator().manual_seed(seed)
    state, c_in = {}, in_channels
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    for i, c_out in zip(TORCHVISION_CONVS, widths):
        state[f"features.{i}.weight"] = torch.randn(c_out, c_in, 3, 3, generator=g)
        state[f"features.{i}.bias"] = torch.randn(c_out, generator=g)
        for name in ("weight", "bias", "running_mean"):
            state[f"features.{i + 1}.{name}"] = torch.randn(c_out, generator=g)
        state[f"features.{i + 1}.running_var"] = torch.rand(c_out, generator=g) + 0.5
        c_in = c_out
    state["classifier.0.weight"] = torch.randn(16, 8, generator=g)
    state["classifier.6.bias"] = torch.randn(1000, generator=g)
    return state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_loads_torchvision_vgg16_bn_weights(tmp_path, suffix):
    state = torchvision_state()
    path = save_weights(state, tmp_path / f"vgg16_bn{suffix}")
    model = build("dim", "teacher", backbone_weights=path)
    own = model.encoder.state_dict()
    w = own["features.0.weight"]
    assert torch.equal(w[:, :3], state["features.0.weight"])
    assert torch.equal(w[:, 3:], torch.zeros_like(w[:, 3:]))  # the trimap channel starts at zero
    for key in ("features.40.weight", "features.41.running_var", "features.24.bias"):
        assert torch.equal(own[key], state[key])

    student = build("dim", "student", backbone_weights=path)
    assert torch.equal(student.encoder.features[0].weight, state["features.0.weight"])


def test_backbone_file_with_a_missing_key_is_a_clear_error(tmp_path):
    state = torchvision_state()
    del state["features.37.weight"]
    path = tmp_path / "vgg16_bn.pth"
    torch.save(state, path)
    with pytest.raises(PpidError, match=r"vgg16_bn\.pth.*missing.*features\.37\.weight"):
        build("dim", "student", backbone_weights=path)
    with pytest.raises(PpidError, match="not found"):
        build("dim", "student", backbone_weights=tmp_path / "absent.pth")


def test_decoder_unpools_to_the_encoder_argmax_positions():
    """SegNet unpooling: before the stride-1 conv the map is non-zero only where pool 1 took its max."""
    torch.manual_seed(0)
    model = build("dim", "teacher").eval()
    image, trimap = inputs(n=1, h=32, w=32)
    seen = {}
    model.decoder[-1].register_forward_hook(lambda m, args, out: seen.setdefault("x", args[0]))
    with torch.no_grad():
        model(image, trimap)
    nonzero = (seen["x"] != 0).float().sum(dim=(2, 3))  # per channel, of 32x32 positions
    assert nonzero.max() <= 16 * 16  # at most one survivor per 2x2 window
    assert nonzero.min() > 0


def test_student_exports_to_onnx_with_dynamic_size(tmp_path):
    """Tracing must not break on the unpooling (F.max_unpool2d's size check does)."""
    ort = pytest.importorskip("onnxruntime")

    class Alpha(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, image):
            return self.net(image).alpha

    torch.manual_seed(0)
    model = build("dim", "student").eval()
    path = tmp_path / "dim.onnx"
    image, _ = inputs(n=1)
    axes = {"image": {0: "n", 2: "h", 3: "w"}, "alpha": {0: "n", 2: "h", 3: "w"}}
    torch.onnx.export(Alpha(model).eval(), (image,), str(path), input_names=["image"], output_names=["alpha"],
                      dynamic_axes=axes, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image, _ = inputs(n=2, h=96, w=64, seed=1)
    with torch.no_grad():
        expected = model(image).alpha.numpy()
    (got,) = session.run(None, {"image": image.numpy()})
    assert got.shape == expected.shape
    assert abs(got - expected).max() < 1e-4


def test_the_head_revisions_and_the_floor_on_the_logits_spread():
    """Revision 1 ends in conv 64 -> 1 + BN(1): the BN fixes the logits' batch mean and spread to its
    bias and weight, so one weight near 0 gives one alpha everywhere (the collapse of the first DIM
    PPID student). Revision 2's logits are the conv's, free to go flat too (its students did, by
    cancelling the features). Revision 3's BN(1) scale is 0.5 + softplus(w): however far training
    drives w down, a training batch's logits keep a spread of at least 0.5."""
    rev1, rev2, rev3 = (build("dim", "student", revision=r) for r in (1, 2, 3))
    assert build("dim", "student").build_args["revision"] == 3 and rev1.build_args["revision"] == 1
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in rev2.decoder[-1])
    assert isinstance(rev1.decoder[-1][1], torch.nn.BatchNorm2d)
    image, _ = inputs()
    with torch.no_grad():
        rev1.decoder[-1][1].weight.fill_(0.009)  # the collapsed student's BN weight and bias
        rev1.decoder[-1][1].bias.fill_(-1.49)
        alpha_old = rev1(image).alpha
        assert alpha_old.std() < 0.01  # one value, about sigmoid(-1.49) = 0.18, in train mode too
        assert abs(alpha_old.mean().item() - 0.184) < 0.01
        assert rev2(image).alpha.std() > 0.01
        scale = rev3.decoder[-1][2]
        logits = rev3(image).alpha_logits
        assert abs(logits.std().item() - 1.0) < 0.01  # scale 1 at initialisation, as any BN's
        scale.weight.fill_(-30.0)  # the collapsed direction, far past where revision 1 died
        logits = rev3(image).alpha_logits
        assert abs(logits.std().item() - SCALE_FLOOR) < 0.01
        assert rev3(image).alpha.std() > 0.05
    with pytest.raises(PpidError, match="revision 4"):
        build("dim", "student", revision=4)
