"""Cross-Level Semantic Distillation, eq. 3-4, and its SD ablation.

L_CLSD = lambda1 * sum_n ||Gc_T(F_n^T) - Gc_S(F_n^S)||^2                      (same layer)
       + lambda2 * sum_n ||Gc_T(F_n^T) - Gc_S'(f3x3(Fbar_{n-1}^S))||^2          (cross layer)
The connectors f3x3 live in the PPID student (models.common.CrossLayerConnectors) and arrive here
as `student_out.cross`; the GC blocks here are auxiliary: trained with the student through this
loss, never part of the exported student. The SD ablation keeps the first term only (and the
student has no connectors).
"""

import torch.nn as nn

from .gcblock import GCBlock


def squared_error(a, b, reduction="mean"):
    """||a - b||^2 averaged over every element ("mean", the default), or summed over C, H, W and
    averaged over the batch ("sum", DESIGN.md's first reading). With Table 5's lambdas the sum makes
    the distillation 1e5-1e8 times the alpha loss and SGD diverges within two steps (measured,
    docs/training.md), so the weights only make sense for the mean."""
    diff = (a.float() - b.float()).pow(2)
    if reduction == "mean":
        return diff.mean()
    return diff.flatten(1).sum(dim=1).mean()


class CLSD(nn.Module):
    def __init__(self, channels, lambda1=0.2, lambda2=1.0, mode="clsd", gc_ratio=2, reduction="mean"):
        super().__init__()
        if mode not in ("clsd", "sd"):
            raise ValueError(f"semantic distillation mode must be 'clsd' or 'sd', got {mode!r}")
        self.mode, self.lambda1, self.lambda2, self.reduction = mode, lambda1, lambda2, reduction
        self.gc_teacher = nn.ModuleList(GCBlock(c, gc_ratio) for c in channels)
        self.gc_student = nn.ModuleList(GCBlock(c, gc_ratio) for c in channels)
        # Gc_S' for the connector outputs at taps 2..5
        self.gc_cross = nn.ModuleList(GCBlock(c, gc_ratio) for c in channels[1:]) if mode == "clsd" else None

    def forward(self, teacher_out, student_out):
        """Returns {"clsd_same": lambda1 * term1, "clsd_cross": lambda2 * term2 (clsd only)}."""
        targets = [gc(f.detach()) for gc, f in zip(self.gc_teacher, teacher_out.enc)]
        same = sum(squared_error(t, gc(f), self.reduction) for t, gc, f in zip(targets, self.gc_student, student_out.enc))
        terms = {"clsd_same": self.lambda1 * same}
        if self.mode == "clsd":
            if len(student_out.cross) != len(self.gc_cross):
                raise ValueError("CLSD needs a PPID student built with cross_layer=True")
            cross = sum(
                squared_error(t, gc(c), self.reduction)
                for t, gc, c in zip(targets[1:], self.gc_cross, student_out.cross)
            )
            terms["clsd_cross"] = self.lambda2 * cross
        return terms
