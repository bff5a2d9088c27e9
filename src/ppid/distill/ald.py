"""Attention-Guided Local Distillation, eq. 5-9, and its ablations.

R (eq. 5): the transition region of the trimap at the tap's resolution (a cell is transition if
any pixel under it is). M (eq. 6): a spatial softmax of the CBAM attention logits / T (each
network's conv7x7([mean_c F; max_c F])). L^f (eq. 7) = sum_{c,i,j} R M_T (F^T - F^S)^2;
L^a (eq. 8) = sum_{i,j} |R M_T - R M_S| (L1); batch means. L_ALD = alpha L^f + beta L^a (eq. 9).

The paper leaves M's normalisation open; three readings (`norm`, DESIGN.md, docs/training.md):
  "softmax":   M sums to 1 over positions (the paper's sigma read literally);
  "positions": M = H*W*softmax (mean 1), L^f summed over every transition cell: grows with the
               tap's area;
  "fgd":       M = H*W*softmax as in FGD (ALD's likely source), with L^f divided by the number of
               transition cells (FGD's area-normalised mask): a per-cell mean.
Modes: "ald" (both terms), "ald_f" (L^f only), "ald_a" (L^a only), "ld" (L^f with a uniform M, no
L^a: the paper's LD ablation, so LD and ALD differ only by the attention), "none".
"""

import torch
import torch.nn.functional as F

MODES = ("none", "ld", "ald", "ald_f", "ald_a")
NORMS = ("softmax", "positions", "fgd")


def transition_mask(trimap, size):
    """R^t (eq. 5) at feature size (h, w): 1 where any trimap pixel under the cell is unknown."""
    unknown = ((trimap >= 0.25) & (trimap <= 0.75)).float()
    return F.adaptive_max_pool2d(unknown, size)


def attention_map(logits, temperature, norm="fgd"):
    """M (eq. 6): softmax over positions of logits / T; times H*W (mean 1) unless norm is "softmax"."""
    if norm not in NORMS:
        raise ValueError(f"attention normalisation must be one of {NORMS}, got {norm!r}")
    n, _, h, w = logits.shape
    m = torch.softmax(logits.float().view(n, -1) / temperature, dim=1).view(n, 1, h, w)
    return m if norm == "softmax" else m * (h * w)


def _feature_term(weight, t_feat, s_feat, r, norm):
    """L^f (eq. 7) for one tap, per image, batch mean; "fgd" divides by the transition cells."""
    diff = (t_feat.detach().float() - s_feat.float()).pow(2)
    per_image = (weight * diff).flatten(1).sum(dim=1)
    if norm == "fgd":
        per_image = per_image / r.flatten(1).sum(dim=1).clamp(min=1.0)
    return per_image.mean()


def ald_loss(teacher_dec, student_dec, trimap, mode="ald", alpha=0.002, beta=0.0002, temperature=0.5, norm="fgd"):
    """Sum over the ALD taps. Returns {"ald_f": alpha * L^f, "ald_a": beta * L^a} (the terms the
    mode uses)."""
    if mode not in MODES:
        raise ValueError(f"local distillation mode must be one of {MODES}, got {mode!r}")
    terms = {}
    if mode == "none":
        return terms
    feat_loss = att_loss = 0.0
    for t_tap, s_tap in zip(teacher_dec, student_dec):
        r = transition_mask(trimap, t_tap.feature.shape[-2:])
        t_logits = t_tap.logits.detach()
        if mode == "ld":  # a uniform map: the same normalisation, no attention
            t_logits = torch.zeros_like(t_logits)
        weight = r * attention_map(t_logits, temperature, norm)
        if mode in ("ald", "ald_f", "ld"):
            feat_loss = feat_loss + _feature_term(weight, t_tap.feature, s_tap.feature, r, norm)
        if mode in ("ald", "ald_a"):
            m_s = attention_map(s_tap.logits, temperature, norm)
            att_loss = att_loss + (weight - r * m_s).abs().flatten(1).sum(dim=1).mean()
    if mode in ("ald", "ald_f", "ld"):
        terms["ald_f"] = alpha * feat_loss
    if mode in ("ald", "ald_a"):
        terms["ald_a"] = beta * att_loss
    return terms
