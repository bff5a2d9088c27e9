import pytest
import torch

from ppid.distill.ald import ald_loss, attention_map, transition_mask
from ppid.distill.clsd import CLSD
from ppid.distill.gcblock import GCBlock
from ppid.models.common import DecoderTap, MattingOutput

CHANNELS = [4, 6, 8, 8, 10]


def _enc(fill, n=2, size=16):
    return [torch.full((n, c, size >> i, size >> i), float(fill)) for i, c in enumerate(CHANNELS)]


def _out(enc, cross=()):
    return MattingOutput(alpha=None, alpha_logits=None, enc=enc, dec=[], cross=list(cross))


def _identity_gc(module):
    # Zero the last transform conv: Gc(F) = F exactly, so the loss is hand-computable.
    for blocks in (module.gc_teacher, module.gc_student, module.gc_cross or []):
        for gc in blocks:
            torch.nn.init.zeros_(gc.transform[-1].weight)
            torch.nn.init.zeros_(gc.transform[-1].bias)


def test_gcblock_shape_and_context_is_global():
    gc = GCBlock(8)
    x = torch.randn(2, 8, 5, 7)
    y = gc(x)
    assert y.shape == x.shape
    delta = y - x  # the same context vector is added at every position
    assert torch.allclose(delta, delta[..., :1, :1].expand_as(delta), atol=1e-6)


def test_clsd_hand_computed_sum_and_mean():
    teacher = _out(_enc(1.0))
    cross = [torch.full_like(f, 3.0) for f in _enc(0.0)[1:]]
    student = _out(_enc(0.0), cross)
    clsd = CLSD(CHANNELS, lambda1=0.2, lambda2=1.0, mode="clsd", reduction="sum")
    _identity_gc(clsd)
    terms = clsd(teacher, student)
    elements = [c * (16 >> i) ** 2 for i, c in enumerate(CHANNELS)]  # per image
    assert terms["clsd_same"].item() == pytest.approx(0.2 * sum(elements))
    assert terms["clsd_cross"].item() == pytest.approx(1.0 * 4.0 * sum(elements[1:]))
    clsd = CLSD(CHANNELS, lambda1=0.2, lambda2=1.0, mode="clsd")  # default: mean over elements
    _identity_gc(clsd)
    terms = clsd(teacher, student)
    assert terms["clsd_same"].item() == pytest.approx(0.2 * 5)  # five taps, each mean (1 - 0)^2
    assert terms["clsd_cross"].item() == pytest.approx(1.0 * 4 * 4.0)


def test_sd_ablation_has_no_cross_term_and_no_cross_blocks():
    sd = CLSD(CHANNELS, mode="sd")
    assert sd.gc_cross is None
    terms = sd(_out(_enc(1.0)), _out(_enc(0.0)))
    assert set(terms) == {"clsd_same"}


def test_clsd_gradients_reach_gc_blocks_and_connector_inputs_not_teacher_features():
    clsd = CLSD(CHANNELS)
    t_enc = [f.requires_grad_(True) for f in [torch.randn_like(f) for f in _enc(0)]]
    s_enc = [torch.randn_like(f).requires_grad_(True) for f in _enc(0)]
    cross = [torch.randn_like(f).requires_grad_(True) for f in _enc(0)[1:]]
    terms = clsd(_out(t_enc), _out(s_enc, cross))
    sum(terms.values()).backward()
    for blocks in (clsd.gc_teacher, clsd.gc_student, clsd.gc_cross):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in blocks[1].parameters() if p.dim() > 1)
    assert all(c.grad is not None for c in cross) and all(s.grad is not None for s in s_enc)
    assert all(t.grad is None for t in t_enc)  # the teacher's features are detached


def _taps(feature_fill, logits, n=1, c=3, size=4):
    return [DecoderTap(torch.full((n, c, size, size), float(feature_fill)), logits.clone())]


def test_transition_mask_any_pixel_rule():
    trimap = torch.zeros(1, 1, 8, 8)
    trimap[..., 5, 2] = 0.5
    r = transition_mask(trimap, (4, 4))
    expected = torch.zeros(1, 1, 4, 4)
    expected[..., 2, 1] = 1
    assert torch.equal(r, expected)


def test_attention_map_normalisations_and_temperature():
    logits = torch.randn(2, 1, 5, 5)
    assert torch.allclose(attention_map(logits, 0.5, "softmax").sum(dim=(1, 2, 3)), torch.ones(2))
    for norm in ("positions", "fgd"):  # H*W*softmax: mean 1
        assert torch.allclose(attention_map(logits, 0.5, norm).mean(dim=(1, 2, 3)), torch.ones(2))
    assert attention_map(logits, 0.1).max() > attention_map(logits, 1.0).max()
    with pytest.raises(ValueError):
        attention_map(logits, 0.5, "bogus")


# 4x4 tap, 8 transition cells, 3 channels with squared difference 1, uniform attention:
# positions: M = 1, summed over cells -> 24; softmax: M = 1/16 -> 1.5; fgd: M = 1, / 8 cells -> 3.
@pytest.mark.parametrize("norm, feature_sum", [("positions", 24.0), ("softmax", 1.5), ("fgd", 3.0)])
def test_ald_hand_computed_per_reading(norm, feature_sum):
    trimap = torch.zeros(1, 1, 4, 4)
    trimap[..., :2, :] = 0.5
    flat = torch.zeros(1, 1, 4, 4)
    teacher, student = _taps(1.0, flat), _taps(0.0, flat)
    full = ald_loss(teacher, student, trimap, "ald", alpha=0.5, beta=0.1, temperature=0.5, norm=norm)
    assert full["ald_f"].item() == pytest.approx(0.5 * feature_sum)
    assert full["ald_a"].item() == pytest.approx(0.0)
    assert ald_loss(teacher, student, trimap, "ld", alpha=0.5, norm=norm)["ald_f"].item() == pytest.approx(0.5 * feature_sum)


def test_ablation_terms():
    trimap = torch.full((1, 1, 4, 4), 0.5)
    teacher, student = _taps(1.0, torch.randn(1, 1, 4, 4)), _taps(0.0, torch.randn(1, 1, 4, 4))
    assert set(ald_loss(teacher, student, trimap, "ld")) == {"ald_f"}
    assert set(ald_loss(teacher, student, trimap, "ald_f")) == {"ald_f"}
    assert set(ald_loss(teacher, student, trimap, "ald_a")) == {"ald_a"}
    assert ald_loss(teacher, student, trimap, "none") == {}
    with pytest.raises(ValueError):
        ald_loss(teacher, student, trimap, "bogus")


@pytest.mark.parametrize("norm", ["softmax", "positions", "fgd"])
def test_ld_is_ald_feature_term_with_uniform_attention(norm):
    trimap = torch.zeros(2, 1, 8, 8)
    trimap[..., 2:6, 1:7] = 0.5
    g = torch.Generator().manual_seed(0)
    t_feat, s_feat = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    attended = [DecoderTap(t_feat, 3 * torch.randn(2, 1, 4, 4, generator=g))]
    uniform = [DecoderTap(t_feat, torch.zeros(2, 1, 4, 4))]
    student = [DecoderTap(s_feat, torch.randn(2, 1, 4, 4, generator=g))]
    ld = ald_loss(attended, student, trimap, "ld", alpha=1.0, norm=norm)["ald_f"]
    assert ld.item() == pytest.approx(ald_loss(uniform, student, trimap, "ald_f", alpha=1.0, norm=norm)["ald_f"].item())
    assert ld.item() != pytest.approx(ald_loss(attended, student, trimap, "ald_f", alpha=1.0, norm=norm)["ald_f"].item())


@pytest.mark.parametrize("norm", ["softmax", "positions", "fgd"])
def test_ald_attention_term_and_focus(norm):
    trimap = torch.full((1, 1, 4, 4), 0.5)
    t_logits = torch.zeros(1, 1, 4, 4)
    t_logits[..., 0, 0] = 5.0  # the teacher attends to one cell
    s_logits = torch.zeros(1, 1, 4, 4, requires_grad=True)
    teacher, student = _taps(1.0, t_logits), _taps(0.0, s_logits)
    terms = ald_loss(teacher, student, trimap, "ald", alpha=1.0, beta=1.0, temperature=0.5, norm=norm)
    m_t, m_s = attention_map(t_logits, 0.5, norm), attention_map(s_logits.detach(), 0.5, norm)
    assert terms["ald_a"].item() == pytest.approx((m_t - m_s).abs().sum().item(), rel=1e-5)
    cells = 16 if norm == "fgd" else 1
    assert terms["ald_f"].item() == pytest.approx(3 * m_t.sum().item() / cells, rel=1e-5)
    terms["ald_a"].backward()
    assert s_logits.grad is not None and s_logits.grad.abs().sum() > 0


def test_no_transition_region_means_no_local_loss():
    trimap = torch.ones(1, 1, 4, 4)
    terms = ald_loss(_taps(1.0, torch.randn(1, 1, 4, 4)), _taps(0.0, torch.randn(1, 1, 4, 4)), trimap, "ald", 1.0, 1.0)
    assert terms["ald_f"].item() == 0.0 and terms["ald_a"].item() == 0.0
