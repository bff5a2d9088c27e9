"""GCA family: structure and parameter counts against the official network, taps, roles, the
batched guided contextual attention against a per-sample reference, ImageNet loading, bf16."""

import pytest
import torch
import torch.nn.functional as F

from helpers import assert_taps, save_weights
from ppid import PpidError
from ppid.models import PAPER_PARAMS, build, count_parameters, load_model, save_model
from ppid.models.gca import GuidedContextualAttention


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # the test machine's cores are shared; one thread avoids oversubscription stalls
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {
        "teacher": build("gca", "teacher"),
        "student": build("gca", "student"),
        "ppid": build("gca", "student", cross_layer=True),
    }


def sample(n=1, h=64, w=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, h, w, generator=g)
    trimap = torch.full((n, 1, h, w), 0.5)
    trimap[..., : h // 3, :] = 0.0
    trimap[..., 2 * h // 3 :, :] = 1.0
    return image, trimap


def test_parameter_counts_match_the_official_network(models):
    def count(model, prefix):
        return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))

    teacher = models["teacher"]
    # per-submodule trainable counts of the official GCA (reference_models.md, section 3)
    assert count(teacher, "encoder.") == 15_869_648
    assert count(teacher, "decoder.") == 9_294_881
    assert count(teacher, "encoder.gca.") == count(teacher, "decoder.gca.") == 24_896
    assert count(teacher, "attention.") == 2 * 99  # the two CBAM gates at the ALD taps
    paper = PAPER_PARAMS["gca"]
    for role in ("teacher", "student"):
        n = count_parameters(models[role])
        print(f"gca {role}: {n:,} vs paper {paper['plain']:,.0f}")
        assert abs(n - paper["plain"]) / paper["plain"] < 0.02
    # the student reads 3 channels instead of 6 in the stem conv and in shortcut.0
    assert count_parameters(teacher) - count_parameters(models["student"]) == 2 * 3 * 32 * 9
    n = count_parameters(models["ppid"])
    print(f"gca ppid student: {n:,} vs paper {paper['ppid']:,.0f}")
    assert abs(n - paper["ppid"]) / paper["ppid"] < 0.02
    # spectral norm: 70 convs, u / v buffers not parameters
    sn = [m for m in teacher.modules() if hasattr(m, "parametrizations")]
    assert len(sn) == 70
    assert all(not p.requires_grad or "_u" not in n for n, p in teacher.named_parameters())


@pytest.mark.parametrize("name", ["teacher", "student", "ppid"])
def test_forward_backward_and_taps(models, name):
    model = models[name].train()
    image, trimap = sample(n=2)
    out = model(image, trimap if name == "teacher" else None)
    assert out.alpha.shape == (2, 1, 64, 96)
    assert_taps(out, 2, 64, 96, (32, 64, 128, 256, 512), (64, 32), name == "ppid")
    model.zero_grad()
    loss = out.alpha_logits.mean() + sum(t.logits.mean() for t in out.dec) + sum(c.pow(2).mean() for c in out.cross)
    loss.backward()
    assert model.decoder.conv2.weight.grad.abs().sum() > 0
    assert model.encoder.stem[0].parametrizations.weight.original.grad.abs().sum() > 0
    if name == "ppid":
        for conv in model.connectors.convs:
            assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def reference_gca(gca, guidance, feature, unknown):
    """One sample at a time, as the original: conv2d with the normalised guidance patches as
    kernels, known/unknown scales from 3x3 patch means, conv_transpose2d with the feature patches."""
    outs = []
    for i in range(feature.shape[0]):
        g = F.interpolate(gca.guidance_conv(guidance[i : i + 1]), scale_factor=0.5, mode="nearest")
        c, h, w = g.shape[1:]
        padded = F.pad(g, (1, 1, 1, 1), mode="reflect")
        kernels = padded.unfold(2, 3, 1).unfold(3, 3, 1)[0].permute(1, 2, 0, 3, 4).reshape(h * w, c, 3, 3)
        kernels = kernels / kernels.flatten(1).norm(dim=1).clamp_min(1e-4).view(-1, 1, 1, 1)
        scores = F.conv2d(padded, kernels)  # (1, L, h, w)
        if unknown is None:
            mask, s_unknown, s_known = torch.ones(1, 1, h, w), 1.0, 1.0
        else:
            mask = F.interpolate(unknown[i : i + 1], size=(h, w), mode="nearest")
            u = mask.mean()
            s_unknown = torch.sqrt(u / (1 - u)).clamp(0.1, 10)
            s_known = torch.sqrt((1 - u) / u).clamp(0.1, 10)
        patch_mean = F.pad(mask, (1, 1, 1, 1), mode="reflect").unfold(2, 3, 1).unfold(3, 3, 1).reshape(h * w, 9).mean(1)
        is_unknown = (patch_mean > 0).float().view(1, h * w, 1, 1)
        scale = s_unknown * is_unknown + s_known * (1 - is_unknown)
        self_mask = torch.eye(h * w).view(1, h * w, h, w) * -1e4
        attention = torch.softmax(scores * scale + self_mask * is_unknown, dim=1)
        values = F.pad(feature[i : i + 1], (1, 1, 1, 1), mode="reflect").unfold(2, 4, 2).unfold(3, 4, 2)
        values = values[0].permute(1, 2, 0, 3, 4).reshape(h * w, feature.shape[1], 4, 4)
        outs.append(F.conv_transpose2d(attention, values, stride=2, padding=1) / 4)
    return feature + gca.out(torch.cat(outs))


@pytest.mark.parametrize("with_mask", [True, False])
def test_batched_gca_equals_per_sample_reference(with_mask):
    torch.manual_seed(1)
    gca = GuidedContextualAttention(16, 8).eval()
    with torch.no_grad():
        gca.out[1].weight.fill_(1.0)  # make the attention path count (it starts at 1e-3)
    guidance = torch.randn(3, 8, 8, 12)
    feature = torch.randn(3, 16, 8, 12)
    unknown = None
    if with_mask:  # all unknown, some unknown, none unknown: both scale clamps and no NaN
        unknown = torch.stack([torch.ones(1, 8, 12), (torch.rand(1, 8, 12) > 0.7).float(), torch.zeros(1, 8, 12)])
    with torch.no_grad():
        batched = gca(guidance, feature, unknown)
        alone = torch.cat([
            gca(guidance[i : i + 1], feature[i : i + 1], None if unknown is None else unknown[i : i + 1])
            for i in range(3)
        ])
        reference = reference_gca(gca, guidance, feature, unknown)
    assert torch.isfinite(batched).all()
    assert (batched - feature).abs().mean() > 1e-2  # the attention path is not negligible here
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched, reference, rtol=1e-4, atol=1e-4)


def torchvision_resnet34_state(seed=0):
    """Random tensors under torchvision resnet34's key names and shapes."""
    g = torch.Generator().manual_seed(seed)
    state = {}

    def conv(name, c_out, c_in, k):
        state[f"{name}.weight"] = torch.randn(c_out, c_in, k, k, generator=g) * 0.05

    def bn(name, c):
        state[f"{name}.weight"] = torch.rand(c, generator=g) + 0.5
        state[f"{name}.bias"] = torch.randn(c, generator=g) * 0.1
        state[f"{name}.running_mean"] = torch.randn(c, generator=g) * 0.1
        state[f"{name}.running_var"] = torch.rand(c, generator=g) + 0.5
        state[f"{name}.num_batches_tracked"] = torch.tensor(1000)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    c_in = 64
    for layer, (c, depth) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        for b in range(depth):
            p = f"layer{layer}.{b}"
            conv(f"{p}.conv1", c, c_in if b == 0 else c, 3)
            bn(f"{p}.bn1", c)
            conv(f"{p}.conv2", c, c, 3)
            bn(f"{p}.bn2", c)
            if b == 0 and layer > 1:
                conv(f"{p}.downsample.0", c, c_in, 1)
                bn(f"{p}.downsample.1", c)
        c_in = c
    state["fc.weight"] = torch.randn(1000, 512, generator=g)
    state["fc.bias"] = torch.zeros(1000)
    return state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_torchvision_backbone(tmp_path, suffix):
    state = torchvision_resnet34_state()
    path = save_weights(state, tmp_path / f"resnet34{suffix}")
    torch.manual_seed(0)
    model = build("gca", "teacher")
    stem_before = model.encoder.stem[0].parametrizations.weight.original.clone()
    model.load_backbone(path)
    enc = model.encoder
    for key in ("layer1.0.conv1", "layer2.0.downsample.0", "layer3.3.conv2", "layer4.1.conv2"):
        raw = enc.get_submodule(key).parametrizations.weight.original
        torch.testing.assert_close(raw, state[f"{key}.weight"])
    torch.testing.assert_close(enc.layer4[1].bn2.weight, state["layer4.1.bn2.weight"])
    # the stem has no torchvision counterpart: untouched (its trimap channels keep their init)
    torch.testing.assert_close(enc.stem[0].parametrizations.weight.original, stem_before)

    # in eval, each loaded conv + BN computes what torchvision's does with the raw weights
    x = torch.randn(1, 64, 8, 8)
    block = enc.layer1[0].eval()

    def tv_conv_bn(x, name):
        y = F.conv2d(x, state[f"{name[0]}.weight"], padding=1)
        b = name[1]
        return F.batch_norm(y, state[f"{b}.running_mean"], state[f"{b}.running_var"], state[f"{b}.weight"], state[f"{b}.bias"])

    expected = F.relu(tv_conv_bn(F.relu(tv_conv_bn(x, ("layer1.0.conv1", "layer1.0.bn1"))), ("layer1.0.conv2", "layer1.0.bn2")) + x)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-3, atol=1e-3)

    image, trimap = sample()
    with torch.no_grad():
        assert torch.isfinite(model.eval()(image, trimap).alpha).all()


def test_backbone_errors_name_the_problem(tmp_path):
    model = build("gca", "student")
    state = torchvision_resnet34_state()
    del state["layer2.0.downsample.0.weight"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(PpidError, match=r"broken\.pth.*missing \(1\): layer2\.0\.downsample\.0\.weight"):
        model.load_backbone(path)
    state = torchvision_resnet34_state()
    state["layer1.0.conv3.weight"] = torch.zeros(64, 64, 1, 1)  # a ResNet-50 key
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(state, path)
    with pytest.raises(PpidError, match=r"unexpected \(1\): layer1\.0\.conv3\.weight; shape mismatch"):
        model.load_backbone(path)
    with pytest.raises(PpidError, match="not found"):
        model.load_backbone(tmp_path / "absent.pth")


def test_save_and_load_keeps_spectral_norm_state(tmp_path, models):
    model = models["ppid"].eval()
    path = tmp_path / "gca.safetensors"
    save_model(model, path)
    loaded = load_model(path)
    image, _ = sample()
    with torch.no_grad():
        torch.testing.assert_close(loaded(image).alpha, model(image).alpha)
