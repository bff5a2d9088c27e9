"""Refine mode (beyond the paper): no trimap from the user, yet a trimap-based teacher's detail.

The trimap-free student predicts alpha; a trimap is derived from that alpha by one documented rule;
the trimap-based teacher (any family) then predicts the unknown band, and its alpha is clamped to
the derived trimap's known regions, as teachers always are.

The rule, `trimap_from_alpha(alpha, low, high, width)`: unknown where low < alpha < high, grown by
`width` x the shorter image side (at least 1 px) in every direction, so that the teacher also sees
the edge pixels the student got wrong; foreground where alpha >= high outside that band;
background elsewhere. Defaults: low 0.05, high 0.95, width 0.01.

`width="auto"` (on the command line `auto`, or `auto:K` for auto_scale K) sets each image's width
from how unsure the student is: `auto_scale` x the share of the image where LOW < alpha < HIGH (the
default thresholds, whatever `low`/`high` the band uses). A student that leaves much of the image
soft (transparent objects, haze on the background) gets a wide band, a decisive one a narrow band.
Its default, AUTO_SCALE, was chosen on the validation split with IndexNet students; other families
want their own (docs/results.md, "Refine mode").
"""

import torch
import torch.nn.functional as F

from . import PpidError
from .models.common import clamp_to_trimap

LOW, HIGH, WIDTH = 0.05, 0.95, 0.01
AUTO_SCALE = 0.15


def check_rule(low=LOW, high=HIGH, width=WIDTH, auto_scale=AUTO_SCALE):
    if not 0.0 <= low < high <= 1.0:
        raise PpidError(f"refine thresholds need 0 <= low < high <= 1, got low {low} and high {high}")
    if width != "auto" and not (isinstance(width, (int, float)) and 0.0 <= width < 0.5):
        raise PpidError(f"refine band width is 'auto' or a share of the shorter image side in [0, 0.5), got {width!r}")
    if not 0.0 <= auto_scale < 0.5:
        raise PpidError(f"refine auto_scale needs 0 <= auto_scale < 0.5, got {auto_scale}")


def parse_rule(words=None):
    """(LOW, HIGH, WIDTH), numbers or their text; WIDTH also 'auto' or 'auto:K' (auto_scale K)
    -> the checked rule as keyword arguments. None: the defaults."""
    words = words or (LOW, HIGH, WIDTH)
    try:
        low, high, width = words
        rule = {"low": float(low), "high": float(high)}
        if isinstance(width, str) and width.startswith("auto"):
            name, _, scale = width.partition(":")
            if name != "auto":
                raise ValueError(width)
            rule["width"] = "auto"
            if scale:
                rule["auto_scale"] = float(scale)
        else:
            rule["width"] = float(width)
    except (TypeError, ValueError):
        raise PpidError(f"the refine rule is LOW HIGH WIDTH (numbers; WIDTH may be 'auto' or 'auto:K'), got {words!r}") from None
    check_rule(**rule)
    return rule


def unsure_share(alpha):
    """(N,) each image's share of pixels where LOW < alpha < HIGH, for alpha (N, 1, H, W): how
    unsure the student is of it (the automatic width's signal)."""
    return ((alpha > LOW) & (alpha < HIGH)).float().mean(dim=(1, 2, 3))


def band_widths(alpha, width=WIDTH, auto_scale=AUTO_SCALE):
    """Each image's band width (a list of N shares of the shorter side) for alpha (N, 1, H, W)."""
    if width != "auto":
        return [width] * alpha.shape[0]
    return (auto_scale * unsure_share(alpha)).tolist()


def trimap_from_alpha(alpha, low=LOW, high=HIGH, width=WIDTH, auto_scale=AUTO_SCALE):
    """Trimap (N, 1, H, W) in {0, 0.5, 1} from alpha (N, 1, H, W) in [0, 1] (the rule above)."""
    check_rule(low, high, width, auto_scale)
    soft = ((alpha > low) & (alpha < high)).float()
    unknown = torch.empty_like(soft, dtype=torch.bool)
    for i, share in enumerate(band_widths(alpha, width, auto_scale)):  # images, not pixels: "auto" differs per image
        radius = max(1, round(share * min(alpha.shape[-2:])))
        unknown[i] = F.max_pool2d(soft[i : i + 1], 2 * radius + 1, stride=1, padding=radius)[0] > 0
    fg = (alpha >= high) & ~unknown
    return torch.where(unknown, torch.full_like(alpha, 0.5), fg.to(alpha.dtype))


NOTHING_FOUND = ("the student's alpha never exceeds LOW ({low}), so the derived trimap is all background and the "
                 "refined matte is empty (a lower LOW reaches fainter objects)")


def found_nothing(trimap):
    """(N,) bool: the derived trimap is all background, i.e. the student's alpha never exceeds the
    rule's LOW on that image; the teacher then has nothing to refine and the refined matte is empty."""
    return (trimap == 0).flatten(1).all(dim=1)


def check_refiner(model, path):
    if model.role != "teacher":
        raise PpidError(f"{path}: --refine needs a trimap-based teacher, got a {model.role}")


def _whole(model, image, trimap):
    return model(image, trimap).alpha.float()


def refine(student, teacher, image, low=LOW, high=HIGH, width=WIDTH, auto_scale=AUTO_SCALE, run=_whole):
    """(refined alpha, derived trimap, student alpha), each (N, 1, H, W) float32, for image
    (N, 3, H, W). `run(model, image, trimap)` gives a model's alpha (the Predictor's runs in tiles).
    Call under torch.inference_mode() (and autocast if wanted)."""
    student_alpha = run(student, image, None)
    trimap = trimap_from_alpha(student_alpha, low, high, width, auto_scale)
    return clamp_to_trimap(run(teacher, image, trimap), trimap), trimap, student_alpha
