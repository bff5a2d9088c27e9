"""Attention-Guided Local Distillation, eq. 5-9, and its ablations.

R (eq. 5): the transition region of the trimap at the tap's resolution (a cell is transition if
any pixel under it is). M (eq. 6): H*W * softmax over positions of logits / T, so M has mean 1;
the logits are each network's CBAM spatial attention, conv7x7([mean_c F; max_c F]).
L^f (eq. 7) = sum_{c,i,j} R M_T (F^T - F^S)^2; L^a (eq. 8) = sum_{i,j} |R M_T - R M_S| (L1);
both summed over positions and averaged over the batch. L_ALD = alpha L^f + beta L^a (eq. 9).
Modes: "ald" (both), "ald_f" (L^f only), "ald_a" (L^a only), "ld" (L^f with R only, no attention
and no L^a: the paper's LD ablation), "none".
"""

import torch
import torch.nn.functional as F

MODES = ("none", "ld", "ald", "ald_f", "ald_a")


def transition_mask(trimap, size):
    """R^t (eq. 5) at feature size (h, w): 1 where any trimap pixel under the cell is unknown."""
    unknown = ((trimap >= 0.25) & (trimap <= 0.75)).float()
    return F.adaptive_max_pool2d(unknown, size)


def attention_map(logits, temperature):
    """M (eq. 6): H*W * softmax_{H*W}(logits / T); mean 1 over positions."""
    n, _, h, w = logits.shape
    m = torch.softmax(logits.float().view(n, -1) / temperature, dim=1)
    return (m * (h * w)).view(n, 1, h, w)


def ald_loss(teacher_dec, student_dec, trimap, mode="ald", alpha=0.002, beta=0.0002, temperature=0.5):
    """Sum over the ALD taps. Returns {"ald_f": alpha * L^f, "ald_a": beta * L^a} (the terms the
    mode uses)."""
    if mode not in MODES:
        raise ValueError(f"local distillation mode must be one of {MODES}, got {mode!r}")
    terms = {}
    if mode == "none":
        return terms
    feat_loss = 0.0
    att_loss = 0.0
    for t_tap, s_tap in zip(teacher_dec, student_dec):
        r = transition_mask(trimap, t_tap.feature.shape[-2:])
        if mode == "ld":
            weight = r
        else:
            m_t = attention_map(t_tap.logits.detach(), temperature)
            weight = r * m_t
        if mode in ("ald", "ald_f", "ld"):
            diff = (t_tap.feature.detach().float() - s_tap.feature.float()).pow(2)
            feat_loss = feat_loss + (weight * diff).flatten(1).sum(dim=1).mean()
        if mode in ("ald", "ald_a"):
            m_s = attention_map(s_tap.logits, temperature)
            att_loss = att_loss + (weight - r * m_s).abs().flatten(1).sum(dim=1).mean()
    if mode in ("ald", "ald_f", "ld"):
        terms["ald_f"] = alpha * feat_loss
    if mode in ("ald", "ald_a"):
        terms["ald_a"] = beta * att_loss
    return terms
