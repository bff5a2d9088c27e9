"""IndexNet (MobileNetV2 + M2O index pooling/unpooling): taps, trimap rules, counts, torchvision
loading, index-block semantics."""

import pytest
import torch

from helpers import assert_taps, random_batch, save_weights
from ppid import PpidError
from ppid.models import PAPER_PARAMS, build, count_parameters
from ppid.models.indexnet import IndexBlock

ENC_CHANNELS = (24, 32, 64, 160, 320)
# torchvision mobilenet_v2 inverted residuals (expansion, in, out) for features 1..17
BLOCKS = [(1, 32, 16), (6, 16, 24), (6, 24, 24)] + [(6, 24, 32)] + [(6, 32, 32)] * 2 + [(6, 32, 64)]
BLOCKS += [(6, 64, 64)] * 3 + [(6, 64, 96)] + [(6, 96, 96)] * 2 + [(6, 96, 160)] + [(6, 160, 160)] * 2
BLOCKS += [(6, 160, 320)]


def inputs(n=2, h=64, w=64, seed=0):
    return random_batch(n, h, w, seed)


@pytest.mark.parametrize("role,cross_layer", [("teacher", False), ("student", False), ("student", True)])
def test_forward_backward_and_tap_shapes(role, cross_layer):
    torch.manual_seed(0)
    model = build("indexnet", role, cross_layer=cross_layer)
    image, trimap = inputs(h=64, w=96)
    out = model(image, trimap if role == "teacher" else None)

    assert out.alpha.shape == out.alpha_logits.shape == (2, 1, 64, 96)
    assert torch.allclose(out.alpha, torch.sigmoid(out.alpha_logits))
    assert_taps(out, 2, 64, 96, ENC_CHANNELS, (24, 32), cross_layer)

    loss = out.alpha_logits.square().mean() + sum(t.logits.mean() for t in out.dec)
    loss.backward()
    stem = model.encoder.features[0][0]
    assert stem.stride == (1, 1)  # IndexNet keeps the stem at full resolution
    assert stem.weight.shape[1] == (4 if role == "teacher" else 3)
    assert stem.weight.grad is not None and stem.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())  # no dead branch


def test_training_on_a_single_image_is_a_clear_error():
    image, _ = inputs(n=1)
    model = build("indexnet", "student")
    with pytest.raises(PpidError, match="batches of 2 or more"):
        model(image)
    assert model.eval()(image).alpha.shape == (1, 1, 64, 64)  # inference on one image is fine


def test_parameter_counts_match_the_reference_indexnet():
    teacher, student = build("indexnet", "teacher"), build("indexnet", "student")
    # Per-module counts of the official m2o depthwise, nonlinear + context, ASPP, OS32 IndexNet
    # (4 input channels): 5,953,515 in all.
    count = {name: count_parameters(m) for name, m in teacher.named_children()}
    assert count["encoder"] == 1_812_000
    assert [count[f"index{k}"] for k in (0, 2, 3, 4, 6)] == [69_888, 39_360, 69_888, 279_040, 1_742_080]
    assert count["aspp"] == 627_840
    assert [count[f"dec{k}"] for k in range(6, -1, -1)] == [768_192, 307_328, 102_464, 38_448, 19_232, 25_664, 51_264]
    assert count["head"] == 827
    assert count["attention"] == 198  # our two ALD gates: 2 x (2*7*7 + 1)
    assert count_parameters(teacher) == 5_953_515 + 198
    assert count_parameters(teacher) - count_parameters(student) == 32 * 9  # one input channel less
    for model in (teacher, student):
        assert abs(count_parameters(model) / PAPER_PARAMS["indexnet"]["plain"] - 1) < 0.02
    ppid = build("indexnet", "student", cross_layer=True)
    connectors = sum(c_in * c_out * 9 + c_out for c_in, c_out in zip(ENC_CHANNELS[:-1], ENC_CHANNELS[1:]))
    assert count_parameters(ppid) == count_parameters(student) + connectors == 5_953_425 + 578_880
    print(f"indexnet PPID student {count_parameters(ppid):,} vs paper {PAPER_PARAMS['indexnet']['ppid']:,.0f}")


def test_index_block_pools_each_cell_with_weights_summing_to_one():
    torch.manual_seed(0)
    block = IndexBlock(8).eval()
    x = torch.randn(2, 8, 12, 16)
    with torch.no_grad():
        weighted, pooled, idx_de = block(x)
        logits = block.proj(torch.nn.functional.relu6(block.bn(block.conv(x)))).unflatten(1, (4, 8))
    idx_en = weighted / x
    cells = idx_en.unflatten(2, (6, 2)).unflatten(4, (8, 2)).sum(dim=(3, 5))
    torch.testing.assert_close(cells, torch.ones_like(cells))
    torch.testing.assert_close(pooled, (idx_en * x).unflatten(2, (6, 2)).unflatten(4, (8, 2)).sum(dim=(3, 5)))
    # branch k of the index block predicts cell position (k // 2, k % 2), as pixel shuffling does
    for k in range(4):
        i, j = divmod(k, 2)
        torch.testing.assert_close(idx_de[:, :, i::2, j::2], torch.sigmoid(logits[:, k]))
        torch.testing.assert_close(idx_en[:, :, i::2, j::2], torch.softmax(torch.sigmoid(logits), 1)[:, k])


def torchvision_state(head=True, seed=0):
    """A synthetic torchvision mobilenet_v2 state dict: random tensors with torchvision's names and
    shapes, RGB stem; with `head` the 1x1 320 -> 1280 conv and classifier a real checkpoint carries."""
    g = torch.Generator().manual_seed(seed)
    state = {}

    def conv_bn(prefix, c_out, c_in, k, bn):
        state[f"{prefix}.weight"] = torch.randn(c_out, c_in, k, k, generator=g)
        for name in ("weight", "bias", "running_mean"):
            state[f"{bn}.{name}"] = torch.randn(c_out, generator=g)
        state[f"{bn}.running_var"] = torch.rand(c_out, generator=g) + 0.5
        state[f"{bn}.num_batches_tracked"] = torch.tensor(100)

    conv_bn("features.0.0", 32, 3, 3, "features.0.1")
    for n, (t, c_in, c_out) in enumerate(BLOCKS, start=1):
        p, hidden, i = f"features.{n}.conv", c_in * t, 0
        if t != 1:
            conv_bn(f"{p}.0.0", hidden, c_in, 1, f"{p}.0.1")
            i = 1
        conv_bn(f"{p}.{i}.0", hidden, 1, 3, f"{p}.{i}.1")  # depthwise
        conv_bn(f"{p}.{i + 1}", c_out, hidden, 1, f"{p}.{i + 2}")
    if head:
        conv_bn("features.18.0", 1280, 320, 1, "features.18.1")
        state["classifier.1.weight"] = torch.randn(1000, 1280, generator=g)
        state["classifier.1.bias"] = torch.randn(1000, generator=g)
    return state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_loads_torchvision_mobilenet_v2_features(tmp_path, suffix):
    state = torchvision_state(head=False)
    path = save_weights(state, tmp_path / f"mobilenet_v2{suffix}")
    model = build("indexnet", "teacher", backbone_weights=path)
    own = model.encoder.state_dict()
    w = own["features.0.0.weight"]
    assert torch.equal(w[:, :3], state["features.0.0.weight"])
    assert torch.equal(w[:, 3:], torch.zeros_like(w[:, 3:]))  # the trimap channel starts at zero
    for key in state:
        if key != "features.0.0.weight":
            assert torch.equal(own[key], state[key].to(own[key].dtype)), key

    student = build("indexnet", "student", backbone_weights=path)
    assert torch.equal(student.encoder.features[0][0].weight, state["features.0.0.weight"])


def test_loads_a_whole_torchvision_checkpoint(tmp_path):
    state = torchvision_state(head=True)
    model = build("indexnet", "student", backbone_weights=save_weights(state, tmp_path / "mobilenet_v2.pth"))
    assert torch.equal(model.encoder.features[17].conv[2].weight, state["features.17.conv.2.weight"])


def test_backbone_file_with_a_missing_key_is_a_clear_error(tmp_path):
    state = torchvision_state(head=False)
    del state["features.13.conv.1.0.weight"]
    path = save_weights(state, tmp_path / "mobilenet_v2.pth")
    with pytest.raises(PpidError, match=r"mobilenet_v2\.pth.*missing.*features\.13\.conv\.1\.0\.weight"):
        build("indexnet", "student", backbone_weights=path)


def test_connectors_feed_the_next_stage():
    """Fbar_n, not F_n, flows on: changing a connector changes the deeper raw taps F_{n+1}.."""
    torch.manual_seed(0)
    model = build("indexnet", "student", cross_layer=True).eval()
    image, _ = inputs(n=1)
    with torch.no_grad():
        before = model(image)
        model.connectors.convs[0].bias.add_(1.0)
        after = model(image)
    assert torch.equal(before.enc[0], after.enc[0]) and torch.equal(before.enc[1], after.enc[1])
    assert not torch.equal(before.enc[2], after.enc[2])


def _flat_head_logits(model):
    """The head's logits for a decoder output that is +1 on the left half and -1 on the right,
    with weights set so that the head passes that sign on (BN in eval mode as an identity)."""
    conv0, bn, _ = model.head[0]
    with torch.no_grad():
        conv0.weight.fill_(5.0 / (32 * 25))
        bn.running_mean.zero_(), bn.running_var.fill_(1 - bn.eps), bn.weight.fill_(1), bn.bias.zero_()
        model.head[1].weight.fill_(1.0 / 25)
        y = torch.ones(1, 32, 16, 32)
        y[..., 16:] = -1
        return model.head.eval()(y)[0, 0, 8]


def test_revision_2_head_predicts_both_sides_of_one_half_in_flat_regions():
    """Revision 1's head ends in a one-channel ReLU6 (r >= 0) before its last conv: a flat region's
    logit is r * sum(kernel), one sign on the whole image, and every revision-1 network we measured
    predicted alpha <= ~0.52 everywhere. Revision 2 drops that ReLU6: logits take both signs."""
    new, old = build("indexnet", "student"), build("indexnet", "student", revision=1)
    assert new.build_args["revision"] == 2 and old.build_args["revision"] == 1
    assert count_parameters(new) == count_parameters(old)
    alpha_new, alpha_old = torch.sigmoid(_flat_head_logits(new)), torch.sigmoid(_flat_head_logits(old))
    assert alpha_new[6] > 0.99 and alpha_new[25] < 0.01  # foreground and background
    assert alpha_old[6] > 0.99 and alpha_old[25] == 0.5  # background out of reach
    with pytest.raises(PpidError, match="revision 3"):
        build("indexnet", "student", revision=3)
