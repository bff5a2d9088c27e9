"""Refine mode (beyond the paper): no trimap from the user, yet a trimap-based teacher's detail.

The trimap-free student predicts alpha; a trimap is derived from that alpha by one documented rule;
the trimap-based teacher (any family) then predicts the unknown band, and its alpha is clamped to
the derived trimap's known regions, as teachers always are.

The rule, `trimap_from_alpha(alpha, low, high, width)`: unknown where low < alpha < high, grown by
`width` x the shorter image side (at least 1 px) in every direction, so that the teacher also sees
the edge pixels the student got wrong; foreground where alpha >= high outside that band;
background elsewhere. Defaults: low 0.05, high 0.95, width 0.01.
"""

import torch
import torch.nn.functional as F

from . import PpidError
from .models.common import clamp_to_trimap

LOW, HIGH, WIDTH = 0.05, 0.95, 0.01


def check_rule(low=LOW, high=HIGH, width=WIDTH):
    if not 0.0 <= low < high <= 1.0:
        raise PpidError(f"refine thresholds need 0 <= low < high <= 1, got low {low} and high {high}")
    if not 0.0 <= width < 0.5:
        raise PpidError(f"refine band width is a share of the shorter image side in [0, 0.5), got {width}")


def trimap_from_alpha(alpha, low=LOW, high=HIGH, width=WIDTH):
    """Trimap (N, 1, H, W) in {0, 0.5, 1} from alpha (N, 1, H, W) in [0, 1] (the rule above)."""
    check_rule(low, high, width)
    unknown = ((alpha > low) & (alpha < high)).float()
    radius = max(1, round(width * min(alpha.shape[-2:])))
    unknown = F.max_pool2d(unknown, 2 * radius + 1, stride=1, padding=radius) > 0
    fg = (alpha >= high) & ~unknown
    return torch.where(unknown, torch.full_like(alpha, 0.5), fg.to(alpha.dtype))


def check_refiner(model, path):
    if model.role != "teacher":
        raise PpidError(f"{path}: --refine needs a trimap-based teacher, got a {model.role}")


def _whole(model, image, trimap):
    return model(image, trimap).alpha.float()


def refine(student, teacher, image, low=LOW, high=HIGH, width=WIDTH, run=_whole):
    """(refined alpha, derived trimap, student alpha), each (N, 1, H, W) float32, for image
    (N, 3, H, W). `run(model, image, trimap)` gives a model's alpha (the Predictor's runs in tiles).
    Call under torch.inference_mode() (and autocast if wanted)."""
    student_alpha = run(student, image, None)
    trimap = trimap_from_alpha(student_alpha, low, high, width)
    return clamp_to_trimap(run(teacher, image, trimap), trimap), trimap, student_alpha
