"""Cross-family distillation: a student of one family learns from a teacher of another.

The families tap their features at the same strides (encoder 2-32, decoder 4 and 2) but with other
widths, so each student tap passes through a 1x1 convolution to the teacher's width (identity
where the widths agree), and is resized to the teacher's size where the two differ. The adapters
are auxiliary, like the GC blocks: trained by the distillation loss, never part of the exported
student. Attention logits are one channel in every family and only need the resize.
"""

import torch.nn as nn
import torch.nn.functional as F

from ..models.common import DecoderTap, MattingOutput


def _adapter(student_channels, teacher_channels):
    if student_channels == teacher_channels:
        return nn.Identity()
    return nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)


def _resize(x, like):
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class TapAdapters(nn.Module):
    """Maps a student's MattingOutput taps onto the teacher's widths and sizes."""

    def __init__(self, student_probe, teacher_probe):
        super().__init__()
        self.enc = nn.ModuleList(_adapter(s.shape[1], t.shape[1]) for s, t in zip(student_probe.enc, teacher_probe.enc))
        # connector outputs feed tap n's cross term: the teacher's width at taps 2..5
        self.cross = nn.ModuleList(_adapter(s.shape[1], t.shape[1]) for s, t in zip(student_probe.cross, teacher_probe.enc[1:]))
        self.dec = nn.ModuleList(
            _adapter(s.feature.shape[1], t.feature.shape[1]) for s, t in zip(student_probe.dec, teacher_probe.dec)
        )

    def forward(self, student_out, teacher_out):
        enc = [_resize(a(f), t) for a, f, t in zip(self.enc, student_out.enc, teacher_out.enc)]
        cross = [_resize(a(c), t) for a, c, t in zip(self.cross, student_out.cross, teacher_out.enc[1:])]
        dec = [
            DecoderTap(_resize(a(s.feature), t.feature), _resize(s.logits, t.logits))
            for a, s, t in zip(self.dec, student_out.dec, teacher_out.dec)
        ]
        return MattingOutput(student_out.alpha, student_out.alpha_logits, enc, dec, cross)
