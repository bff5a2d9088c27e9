"""`ppid data synth`: the seeded procedural matting benchmark that ships with ppid (no download).

It exercises what the paper is about: hard foregrounds that break trimap-free models (chromaless,
low-texture, thin, transmissive), split into the paper's two groups:

- non-transparent: ``solid`` irregular shapes, ``hair`` (hundreds of tapered curved strands),
  ``cobweb`` and ``mesh`` (thin threads), ``holes`` (irregular shapes with cut-outs);
- transparent: ``glass`` (tinted, highly transmissive body, opaque rim, highlights), ``smoke``
  (volumetric density) and ``veil`` (woven, folded fabric).

Alpha is area coverage, never a blurred mask: shape edges use analytic distance-to-edge
antialiasing (coverage = clip(0.5 - signed distance)), threads and strands the exact overlap of a
pixel with a line of sub-pixel width. Foreground colour is defined on every pixel, also where alpha
is 0, as in Adobe's fg images. Every sample is seeded from (seed, index) alone, so the bytes do not
depend on the number of worker processes.

Two versions share the alpha of every sample and differ in colour. Version 1: smooth, low-texture
foreground colour over blurred fractal-noise backgrounds, so sharpness alone gave the foreground
away. Version 2 (the default): textured foregrounds (patterns, colour varying per strand and
along it) over sharp, cluttered dead-leaves backgrounds with photo-like statistics.
"""

import colorsys
import json
import math
import os
import time
from multiprocessing import Pool
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from .. import PpidError
from ..io import atomic_path, list_images, read_image, write_image
from ..progress import progress

# The benchmark versions and the default (the newest). Same seed + same version = identical files;
# a change that alters any output byte of an existing version is a bug (tests pin version 1).
VERSIONS = (1, 2)
SYNTH_VERSION = 2

# Kinds cycle by sample index so any two consecutive samples cover both groups.
KINDS = ("hair", "glass", "solid", "smoke", "cobweb", "veil", "holes", "mesh")
TRANSPARENT_KINDS = frozenset({"glass", "smoke", "veil"})
MIN_SIZE = 32
MAX_SIZE = 8192
WORKERS = 2

# Independent random streams per (seed, stream, index).
_FG_STREAM, _BG_STREAM, _PALETTE_STREAM = 0, 1, 2


def group_of(kind):
    return "transparent" if kind in TRANSPARENT_KINDS else "non-transparent"


def _rng(seed, stream, index):
    return np.random.default_rng(np.random.SeedSequence([seed, stream, index]))


def _checked_version(version):
    if isinstance(version, bool) or version not in VERSIONS:
        raise PpidError(f"--version must be one of {', '.join(map(str, VERSIONS))}, got {version!r}")
    return int(version)


# ----------------------------------------------------------------------------------------------
# Fields: noise, colours, coverage


def _upsample(grid, h, w):
    """Bicubic upsampling of a small float grid to HxW (PIL 'F' mode: fast and deterministic)."""
    return np.asarray(Image.fromarray(grid.astype(np.float32), "F").resize((w, h), Image.BICUBIC))


def _noise(rng, h, w, cells, octaves=4, persistence=0.5):
    """Fractal value noise in [0, 1]: `cells` grid cells across the longer side at the first octave."""
    total = np.zeros((h, w), np.float32)
    amp = 1.0
    for o in range(octaves):
        n = cells * 2**o
        grid = rng.random((max(2, round(n * h / max(h, w))) + 1, max(2, round(n * w / max(h, w))) + 1))
        total += amp * _upsample(grid, h, w)
        amp *= persistence
    lo, hi = total.min(), total.max()
    return (total - lo) / max(hi - lo, 1e-6)


def _coverage(distance):
    """Pixel coverage from the signed distance (pixels, negative inside) to a straight edge."""
    return np.clip(0.5 - distance, 0.0, 1.0)


def _line_coverage(distance, width):
    """Exact overlap of a unit pixel with a line of `width` px whose centre is `distance` px away."""
    return np.clip(np.minimum(0.5, distance + width / 2) - np.maximum(-0.5, distance - width / 2), 0.0, 1.0)


class Palette(NamedTuple):
    colour: np.ndarray  # RGB in [0, 1]
    chromaless: bool


def _palette(seed, index):
    """The main colour of foreground `index` (its own stream, so the background matched to it can
    reuse it): half chromaless (grey/white, as in the paper's hard cases), half coloured."""
    rng = _rng(seed, _PALETTE_STREAM, index)
    if rng.random() < 0.5:
        grey = rng.uniform(0.35, 0.97)
        tint = rng.normal(0.0, 0.012, 3)
        return Palette(np.clip(grey + tint, 0, 1), True)
    return Palette(_hsv(rng.random(), rng.uniform(0.2, 0.8), rng.uniform(0.3, 0.95)), False)


def _hsv(h, s, v):
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float64)


def _surface(rng, colour, h, w, texture):
    """A colour field: `colour` with luminance texture of amplitude `texture` (low-texture when
    small) and a slight hue drift, defined on every pixel."""
    lum = (_noise(rng, h, w, rng.uniform(3, 10)) - 0.5) * texture
    drift = (_noise(rng, h, w, 2, octaves=2)[..., None] - 0.5) * rng.normal(0, 0.04, 3)
    return np.clip(np.asarray(colour, np.float32) + lum[..., None] + drift, 0.0, 1.0).astype(np.float32)


def _lerp(a, b, t):
    return a + (b - a) * t[..., None]


# ----------------------------------------------------------------------------------------------
# Patterns (version 2): sharp, antialiased two-colour patterns, shared by textured foregrounds and
# background leaves. Each takes (rng, y, x, size, noise): pixel coordinates, the size in px of what
# it covers, and a noise field in [0, 1] of the same shape; it returns the weight of the second
# colour, in [0, 1], with edges antialiased over about one pixel.


def _bands(u, period, duty):
    """Square wave along `u`: 1 on bands `duty * period` px wide, one every `period` px."""
    return np.clip(duty * period / 2 - np.abs(np.mod(u, period) - period / 2) + 0.5, 0, 1)


def _rotated(rng, y, x):
    """Coordinates (u, v) along and across a random direction."""
    angle = rng.uniform(0, np.pi)
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return c * x + s * y, c * y - s * x


def _period(rng, size, lo, hi):
    """A log-uniform period between `lo` and `hi` times `size`, at least 3 px."""
    return max(3.0, size * math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _cell_tables(rng, n):
    """`n` tables of random values per lattice cell (32x32, tiling)."""
    return rng.random((n, 32, 32)).astype(np.float32)


def _pattern_gradient(rng, y, x, size, noise):
    """A plain surface shading into the second colour."""
    u, _ = _rotated(rng, y, x)
    return np.clip((u - u.min()) / size, 0, 1) * rng.uniform(0.4, 1.0)


def _pattern_stripes(rng, y, x, size, noise):
    u, _ = _rotated(rng, y, x)
    return _bands(u + rng.uniform(0, size), _period(rng, size, 0.03, 0.4), rng.uniform(0.15, 0.7))


def _pattern_checks(rng, y, x, size, noise):
    u, v = _rotated(rng, y, x)
    period = _period(rng, size, 0.05, 0.3)
    a, b = _bands(u, period, 0.5), _bands(v, period * rng.uniform(0.5, 2), 0.5)
    return a + b - 2 * a * b


def _pattern_spots(rng, y, x, size, noise):
    """Polka dots or a print: spots on a jittered lattice, each with its own size, some missing."""
    u, v = _rotated(rng, y, x)
    period = _period(rng, size, 0.04, 0.3)
    table, keep = _cell_tables(rng, 3), rng.uniform(0, 0.6)
    iu, iv = np.floor(u / period).astype(np.int64) % 32, np.floor(v / period).astype(np.int64) % 32
    jitter, radius, present = table[0][iu, iv], table[1][iu, iv], table[2][iu, iv] > keep
    du = np.mod(u, period) - period * (0.3 + 0.4 * jitter)
    dv = np.mod(v, period) - period / 2
    return _coverage(np.hypot(du, dv) - period * (0.1 + 0.25 * radius)) * present


def _pattern_blotches(rng, y, x, size, noise):
    """Camouflage, foliage, marble: the noise field cut at a level."""
    return np.clip((noise - rng.uniform(0.35, 0.65)) * rng.uniform(8, 40) + 0.5, 0, 1)


def _pattern_grain(rng, y, x, size, noise):
    """Wood, bark, brushed metal: fine stripes bent by the noise field."""
    u, _ = _rotated(rng, y, x)
    period = _period(rng, size, 0.01, 0.08)
    return _bands(u + noise * size * rng.uniform(0.1, 0.6), period, rng.uniform(0.2, 0.6))


def _pattern_text(rng, y, x, size, noise):
    """Lines of glyph-like marks (signs, labels, print): each character cell draws a random subset
    of three vertical and three horizontal strokes; some cells are spaces."""
    line = max(5.0, size * rng.uniform(0.05, 0.2))
    char = line * rng.uniform(0.45, 0.65)
    stroke = max(0.8, line * rng.uniform(0.07, 0.14))
    u, v = _rotated(rng, y, x) if rng.random() < 0.3 else (x, y)
    row, col = np.floor(v / line).astype(np.int64), np.floor(u / char).astype(np.int64)
    code = (_cell_tables(rng, 1)[0][row % 32, col % 32] * 64).astype(np.int64)
    fu, fv = np.mod(u, char) / char, np.mod(v, line) / line  # position in the cell
    marks = np.zeros_like(fu)
    strokes = [(fu, 0.15, char), (fu, 0.45, char), (fu, 0.75, char), (fv, 0.15, line), (fv, 0.4, line), (fv, 0.65, line)]
    for bit, (position, at, extent) in enumerate(strokes):
        marks = np.maximum(marks, ((code >> bit) & 1) * _coverage(np.abs(position - at) * extent - stroke / 2))
    inside = (fu < 0.8) & (fv > 0.1) & (fv < 0.7) & (code >= 10)  # glyph box; code < 10 is a space
    return marks * inside


_PATTERNS = (_pattern_gradient, _pattern_stripes, _pattern_checks, _pattern_spots, _pattern_blotches, _pattern_grain, _pattern_text)
# Cumulative chances of each of _PATTERNS: for surfaces in a scene (mostly plain, shaded) and for
# prints on foregrounds (never plain).
_SURFACE_CHANCES = np.cumsum([0.35, 0.1, 0.05, 0.1, 0.2, 0.12, 0.08])
_PRINT_CHANCES = np.cumsum([0.0, 0.2, 0.1, 0.25, 0.25, 0.1, 0.1])


def _pattern(rng, y, x, size, noise, chances=_SURFACE_CHANCES):
    """One of _PATTERNS, picked at random with the given cumulative chances."""
    pick = min(int(np.searchsorted(chances, rng.random() * chances[-1], side="right")), len(_PATTERNS) - 1)
    return _PATTERNS[pick](rng, y, x, size, noise).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Geometry: irregular star-shaped blobs and strands


class Blob(NamedTuple):
    """A star-shaped region r(theta) = radius * (1 + sum_k a_k cos(k theta + phi_k))."""

    cy: float
    cx: float
    radius: float
    k: np.ndarray
    amp: np.ndarray
    phase: np.ndarray

    @staticmethod
    def random(rng, cy, cx, radius, roughness, harmonics=7):
        k = np.arange(2, 2 + harmonics)
        amp = rng.uniform(0, roughness, harmonics) / k
        amp *= min(1.0, 0.6 / max(amp.sum(), 1e-9))  # r(theta) >= 0.4 radius: star-shaped
        return Blob(cy, cx, radius, k, amp, rng.uniform(0, 2 * np.pi, harmonics))

    def radius_at(self, theta):
        waves = self.amp * np.cos(self.k * np.asarray(theta)[..., None] + self.phase)
        return self.radius * (1 + waves.sum(-1))

    def distance(self, yy, xx):
        """Signed distance in pixels (negative inside), first order: f / |grad f| with
        f = rho - r(theta), |grad f| = sqrt(1 + (r'(theta) / rho)^2). Exact enough near the
        outline, which is all the coverage needs; rho is floored at r / 2 so the centre, where the
        gradient blows up, stays deep inside instead of reading as an edge."""
        dy, dx = yy - self.cy, xx - self.cx
        rho = np.hypot(dy, dx)
        theta = np.arctan2(dy, dx)
        phase = self.k * theta[..., None] + self.phase
        r = self.radius * (1 + (self.amp * np.cos(phase)).sum(-1))
        dr = -self.radius * (self.amp * self.k * np.sin(phase)).sum(-1)
        return ((rho - r) / np.sqrt(1 + (dr / np.maximum(rho, r / 2)) ** 2)).astype(np.float32)


_PATCH = np.stack(np.meshgrid(np.arange(-2, 4), np.arange(-2, 4), indexing="ij"), -1).reshape(-1, 2)


class StrandPixels(NamedTuple):
    """The pixels a batch of strands covers: one entry per (pixel, segment) pair."""

    flat: np.ndarray  # pixel index y * w + x
    coverage: np.ndarray  # that segment's coverage of that pixel
    strand: np.ndarray  # which strand
    along: np.ndarray  # which segment along the strand (0 at its start)


def _strand_pixels(points, widths, h, w):
    """Coverage of polylines `points` (S, K, 2 as y, x; segments <= 2 px long) with per-segment
    `widths` (S, K-1; <= 1.5 px, 0 = absent), pixel by pixel.

    Each pixel belongs to the segment it projects onto (t in [0, 1)), so a strand never counts a
    pixel twice."""
    a = points[:, :-1].reshape(-1, 2).astype(np.float32)
    b = points[:, 1:].reshape(-1, 2).astype(np.float32)
    width = widths.reshape(-1).astype(np.float32)
    keep = width > 0
    segment = np.flatnonzero(keep)
    a, b, width = a[keep], b[keep], width[keep]
    pix = np.floor((a + b) / 2).astype(np.int64)[:, None, :] + _PATCH  # (N, 36, 2)
    seg = (b - a)[:, None, :]
    length2 = np.maximum((seg**2).sum(-1), 1e-6)
    rel = pix - a[:, None, :]
    t = (rel * seg).sum(-1) / length2
    dist = np.abs(rel[..., 0] * seg[..., 1] - rel[..., 1] * seg[..., 0]) / np.sqrt(length2)
    cov = _line_coverage(dist, width[:, None])
    ok = (t >= 0) & (t < 1) & (cov > 0) & (pix[..., 0] >= 0) & (pix[..., 0] < h) & (pix[..., 1] >= 0) & (pix[..., 1] < w)
    segment = np.broadcast_to(segment[:, None], ok.shape)[ok]
    n_seg = widths.shape[1]
    return StrandPixels(pix[..., 0][ok] * w + pix[..., 1][ok], cov[ok], segment // n_seg, segment % n_seg)


def _strand_alpha(pixels, h, w):
    """Alpha of strands that combine as independent occluders, alpha = 1 - prod(1 - c)."""
    log_clear = np.bincount(pixels.flat, weights=np.log1p(-np.minimum(pixels.coverage, 1 - 1e-6)), minlength=h * w)
    return (1 - np.exp(log_clear)).reshape(h, w).astype(np.float32)


def _resample(polyline, step=1.5):
    """Points at equal arc length `step` along a polyline (M, 2)."""
    along = np.concatenate([[0], np.cumsum(np.hypot(*np.diff(polyline, axis=0).T))])
    s = np.arange(0, along[-1] + 1e-6, step)
    return np.stack([np.interp(s, along, polyline[:, 0]), np.interp(s, along, polyline[:, 1])], -1)


def _thread_pixels(polylines, widths, h, w):
    """Strand pixels of a list of polylines with one width each (padded into one strand batch)."""
    lines = [_resample(p) for p in polylines]
    k = max(len(p) for p in lines)
    points = np.zeros((len(lines), k, 2), np.float32)
    seg_w = np.zeros((len(lines), k - 1), np.float32)
    for i, (p, wd) in enumerate(zip(lines, widths)):
        points[i, : len(p)] = p
        points[i, len(p) :] = p[-1]
        seg_w[i, : len(p) - 1] = wd
    return _strand_pixels(points, seg_w, h, w)


# ----------------------------------------------------------------------------------------------
# Foreground kinds: each returns (fg HxWx3, alpha HxW), float32


class Canvas(NamedTuple):
    h: int
    w: int
    yy: np.ndarray
    xx: np.ndarray
    scale: float  # min(h, w): shapes scale with the image, strand widths stay in pixels

    @staticmethod
    def of(h, w):
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        return Canvas(h, w, yy, xx, float(min(h, w)))

    def centre(self, rng, spread=0.12):
        return self.h / 2 + rng.normal(0, spread) * self.h, self.w / 2 + rng.normal(0, spread) * self.w


def _fg_solid(rng, cv, pal, paint):
    cy, cx = cv.centre(rng)
    blobs = [Blob.random(rng, cy, cx, cv.scale * rng.uniform(0.18, 0.3), rng.uniform(0.2, 0.8))]
    for _ in range(rng.integers(0, 3)):
        oy, ox = rng.normal(0, 0.15 * cv.scale, 2)
        blobs.append(Blob.random(rng, cy + oy, cx + ox, cv.scale * rng.uniform(0.08, 0.18), rng.uniform(0.2, 1.0)))
    dist = np.min([b.distance(cv.yy, cv.xx) for b in blobs], axis=0)
    return paint.body(rng, cv, pal, dist), _coverage(dist)


def _fg_holes(rng, cv, pal, paint):
    cy, cx = cv.centre(rng, 0.05)
    body = Blob.random(rng, cy, cx, cv.scale * rng.uniform(0.28, 0.38), rng.uniform(0.1, 0.5))
    dist = body.distance(cv.yy, cv.xx)
    for _ in range(rng.integers(3, 9)):
        r = body.radius * rng.uniform(0.1, 0.35)
        theta, rho = rng.uniform(0, 2 * np.pi), body.radius * np.sqrt(rng.uniform(0, 0.8))
        hole = Blob.random(rng, cy + rho * np.sin(theta), cx + rho * np.cos(theta), r, rng.uniform(0, 0.6), 4)
        dist = np.maximum(dist, -hole.distance(cv.yy, cv.xx))
    return paint.body(rng, cv, pal, dist), _coverage(dist)


def _fg_hair(rng, cv, pal, paint):
    """An opaque body with hair/fur: tapered strands (0.3-1.3 px at the root) grown from its outline
    by a smooth random walk of the heading, combed towards a common flow direction."""
    cy, cx = cv.centre(rng, 0.06)
    body = Blob.random(rng, cy, cx, cv.scale * rng.uniform(0.14, 0.22), rng.uniform(0.1, 0.4))
    n = int(cv.scale * rng.uniform(0.6, 1.2))
    step, max_len = 1.5, cv.scale * rng.uniform(0.12, 0.3)
    k = max(2, int(max_len / step))
    theta = rng.uniform(0, 2 * np.pi, n)
    root_r = body.radius_at(theta) * (1 - rng.uniform(0.02, 0.1, n))
    roots = np.stack([cy + root_r * np.sin(theta), cx + root_r * np.cos(theta)], -1)
    flow, comb = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.8)
    heading0 = np.arctan2(np.sin(theta) + comb * np.sin(flow), np.cos(theta) + comb * np.cos(flow))
    curl = rng.uniform(0.005, 0.04) * rng.choice([-1, 1], n)[:, None]
    heading = heading0[:, None] + rng.normal(0, 0.2, (n, 1)) + np.cumsum(rng.normal(0, 0.04, (n, k)) + curl, axis=1)
    steps = step * np.stack([np.sin(heading), np.cos(heading)], -1)
    points = np.concatenate([roots[:, None], roots[:, None] + np.cumsum(steps, axis=1)], axis=1)
    along = np.arange(k) * step / (max_len * rng.uniform(0.3, 1.0, (n, 1)))  # 0 at root, 1 at tip
    widths = np.where(along < 1, rng.uniform(0.3, 1.3, (n, 1)) * (1 - 0.85 * along), 0)
    dist = body.distance(cv.yy, cv.xx)
    strands = _strand_pixels(points, widths, cv.h, cv.w)
    alpha = 1 - (1 - _coverage(dist)) * (1 - _strand_alpha(strands, cv.h, cv.w))
    return paint.hair(rng, cv, pal, dist, max_len, strands), alpha


def _fg_cobweb(rng, cv, pal, paint):
    """Radial spokes and a spiral of 0.4-1.2 px threads, sagging slightly between spokes."""
    cy, cx = cv.centre(rng, 0.05)
    reach = cv.scale * rng.uniform(0.3, 0.45)
    n_spokes = int(rng.integers(9, 17))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n_spokes))
    lines = []
    for a in angles:
        r = np.linspace(0, reach * rng.uniform(0.8, 1.05), 40)
        lines.append(np.stack([cy + r * np.sin(a), cx + r * np.cos(a)], -1))
    turns = rng.uniform(5, 10)
    theta = np.linspace(0, 2 * np.pi * turns, int(400 * turns))
    r = reach * (0.08 + 0.9 * theta / theta[-1]) * (1 - 0.06 * np.abs(np.sin(theta * n_spokes / 2)))
    lines.append(np.stack([cy + r * np.sin(theta), cx + r * np.cos(theta)], -1))
    threads = _thread_pixels(lines, rng.uniform(0.4, 1.2, len(lines)), cv.h, cv.w)
    return paint.threads(rng, cv, pal, threads), _strand_alpha(threads, cv.h, cv.w)


def _fg_mesh(rng, cv, pal, paint):
    """A warped net of threads over an irregular region (its edge antialiased)."""
    cy, cx = cv.centre(rng, 0.05)
    region = Blob.random(rng, cy, cx, cv.scale * rng.uniform(0.3, 0.42), rng.uniform(0.1, 0.5))
    gap = cv.scale * rng.uniform(0.04, 0.1)
    angle, wobble = rng.uniform(0, np.pi), gap * rng.uniform(0.05, 0.3)
    u = np.linspace(-0.75, 0.75, 200) * cv.scale
    lines = []
    for direction in (angle, angle + np.pi / 2 + rng.normal(0, 0.1)):
        along = np.array([np.cos(direction), np.sin(direction)])
        across = np.array([-along[1], along[0]])
        for v in np.arange(-0.75 * cv.scale, 0.75 * cv.scale, gap):
            bend = wobble * np.sin(u / gap * rng.uniform(0.5, 1.5) + rng.uniform(0, 2 * np.pi))
            xy = u[:, None] * along + (v + bend)[:, None] * across
            lines.append(np.stack([cy + xy[:, 1], cx + xy[:, 0]], -1))
    threads = _thread_pixels(lines, np.full(len(lines), rng.uniform(0.5, 1.4)), cv.h, cv.w)
    net = _strand_alpha(threads, cv.h, cv.w)
    return paint.threads(rng, cv, pal, threads), net * _coverage(region.distance(cv.yy, cv.xx))


def _fg_glass(rng, cv, pal, paint):
    """Glass: a tinted, highly transmissive body (alpha 0.03-0.2, rising towards grazing angles),
    an opaque rim a few px wide, and specular highlights."""
    cy, cx = cv.centre(rng, 0.06)
    body = Blob.random(rng, cy, cx, cv.scale * rng.uniform(0.22, 0.35), rng.uniform(0.0, 0.3), 4)
    dist = body.distance(cv.yy, cv.xx)
    rim_width = max(1.0, cv.scale / 512 * rng.uniform(2, 6))
    inside = _coverage(dist)
    rim = inside - _coverage(dist + rim_width)
    depth = np.clip(-dist / (0.6 * body.radius), 0, 1)
    transmissive = rng.uniform(0.03, 0.2) + rng.uniform(0.05, 0.25) * (1 - depth) ** 3
    alpha = (inside - rim) * transmissive + rim * rng.uniform(0.85, 1.0)
    highlight = np.zeros_like(alpha)
    for _ in range(rng.integers(1, 4)):
        theta = rng.uniform(0, 2 * np.pi)
        rho = body.radius * rng.uniform(0.3, 0.7)
        spot = Blob.random(rng, cy + rho * np.sin(theta), cx + rho * np.cos(theta), body.radius * rng.uniform(0.03, 0.1), 0.4, 3)
        highlight = np.maximum(highlight, _coverage(spot.distance(cv.yy, cv.xx)))
    alpha = np.maximum(alpha, highlight * rng.uniform(0.7, 0.95))
    return paint.glass(rng, cv, pal, rim, alpha, highlight), alpha.astype(np.float32)


def _fg_smoke(rng, cv, pal, paint):
    """Smoke: turbulent density under a meandering, widening plume; alpha stays mostly below 0.5."""
    cx = cv.w * rng.uniform(0.35, 0.65)
    up = (cv.h - cv.yy) / cv.h  # 0 at the bottom, 1 at the top
    meander = cv.w * 0.15 * (_noise(rng, cv.h, 1, 3, octaves=2) - 0.5)
    width = cv.w * (0.05 + rng.uniform(0.15, 0.3) * up)
    envelope = np.exp(-(((cv.xx - cx - meander) / width) ** 2)) * np.clip(up * 4, 0, 1)
    density = _noise(rng, cv.h, cv.w, rng.uniform(3, 6), octaves=5, persistence=0.6)
    alpha = np.clip((density * envelope - 0.12) * rng.uniform(0.7, 1.1), 0, 1).astype(np.float32)
    return paint.smoke(rng, cv, pal, alpha), alpha


def _fg_veil(rng, cv, pal, paint):
    """Sheer fabric: a woven thread grid (analytic thread coverage) of low opacity, denser in
    folds, with a hem along its outline."""
    cy, cx = cv.centre(rng, 0.05)
    region = Blob.random(rng, cy, cx, cv.scale * rng.uniform(0.3, 0.42), rng.uniform(0.1, 0.4))
    dist = region.distance(cv.yy, cv.xx)
    angle = rng.uniform(0, np.pi)
    u = np.cos(angle) * cv.xx + np.sin(angle) * cv.yy
    v = -np.sin(angle) * cv.xx + np.cos(angle) * cv.yy
    period, thread = rng.uniform(2.5, 5), rng.uniform(0.5, 1.1)
    warp = _line_coverage(np.abs(np.mod(u, period) - period / 2), thread)
    weft = _line_coverage(np.abs(np.mod(v, period) - period / 2), thread)
    weave = 1 - (1 - warp) * (1 - weft)
    bend = _noise(rng, cv.h, cv.w, 2, octaves=2) * cv.scale * 0.3
    fold = 0.5 + 0.5 * np.sin(2 * np.pi * (u + bend) / (cv.scale * rng.uniform(0.08, 0.2)))
    opacity = rng.uniform(0.1, 0.3) * (0.4 + 0.3 * weave) * (0.6 + 0.8 * fold**2)
    hem = _coverage(dist) - _coverage(dist + max(1.0, cv.scale / 512 * rng.uniform(2, 5)))
    alpha = (_coverage(dist) - hem) * opacity + hem * rng.uniform(0.5, 0.8)
    return paint.veil(rng, cv, pal, fold, warp, weft), alpha.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Foreground colour. The kinds above draw all of their geometry first and then call one of these,
# so alpha is the same in every version; each version paints the colour its own way.


class Paint(NamedTuple):
    """How a benchmark version colours each family of foregrounds (all return HxWx3 float32)."""

    body: object  # (rng, cv, pal, dist): solid objects, dist = signed distance to the outline
    hair: object  # (rng, cv, pal, dist, max_len, strands: StrandPixels)
    threads: object  # (rng, cv, pal, threads: StrandPixels): cobweb and mesh
    glass: object  # (rng, cv, pal, rim, alpha, highlight)
    smoke: object  # (rng, cv, pal, alpha)
    veil: object  # (rng, cv, pal, fold, warp, weft)


# Version 1: smooth, low-texture colour fields.

def _shaded_body(rng, cv, pal, dist):
    """An object's colour: its texture, lit from one side, a little darker towards the outline."""
    fg = _surface(rng, pal.colour, cv.h, cv.w, rng.choice([0.03, 0.12]))
    angle = rng.uniform(0, 2 * np.pi)
    light = 0.9 + 0.2 * ((np.cos(angle) * cv.xx + np.sin(angle) * cv.yy) / cv.scale - 0.5)
    rim = 1 - 0.15 * np.exp(np.minimum(dist, 0) / (0.05 * cv.scale))
    return np.clip(fg * (light * rim)[..., None], 0, 1)



def _hair_colour_v1(rng, cv, pal, dist, max_len, strands):
    """Body colour at the roots fading to a lighter or darker tip colour, everywhere."""
    tip = np.clip(pal.colour * rng.uniform(0.6, 1.4) + rng.normal(0, 0.03, 3), 0, 1)
    out = np.clip(np.maximum(dist, 0) / max_len, 0, 1)
    fg = _lerp(_surface(rng, pal.colour, cv.h, cv.w, 0.08), tip.astype(np.float32), out)
    return fg.astype(np.float32)


def _thread_colour_v1(rng, cv, pal, threads):
    return _surface(rng, pal.colour, cv.h, cv.w, 0.05)


def _glass_colour_v1(rng, cv, pal, rim, alpha, highlight):
    tint = _surface(rng, pal.colour, cv.h, cv.w, 0.03)
    rim_colour = np.clip(pal.colour * rng.uniform(0.3, 0.7), 0, 1).astype(np.float32)
    fg = _lerp(_lerp(tint, rim_colour, np.clip(rim / np.maximum(alpha, 1e-6), 0, 1)), np.ones(3, np.float32), highlight)
    return fg.astype(np.float32)


def _smoke_colour_v1(rng, cv, pal, alpha):
    shade = _noise(rng, cv.h, cv.w, 4, octaves=3)
    fg = np.clip(np.asarray(pal.colour, np.float32) * (0.8 + 0.3 * shade)[..., None], 0, 1)
    return fg.astype(np.float32)


def _veil_colour_v1(rng, cv, pal, fold, warp, weft):
    fg = _surface(rng, pal.colour, cv.h, cv.w, 0.04) * (0.85 + 0.15 * fold)[..., None]
    return np.clip(fg, 0, 1).astype(np.float32)


PAINT_V1 = Paint(_shaded_body, _hair_colour_v1, _thread_colour_v1, _glass_colour_v1, _smoke_colour_v1, _veil_colour_v1)


# Version 2: textured colour. Patterns on solids, colour varying per strand and along it, tints
# varying across glass, smoke and veils, and sensor grain like the background's.


def _shade_of(rng, pal, spread):
    """A colour of the palette's family: a chromaless palette stays grey and varies in brightness,
    a coloured one in hue, saturation and brightness, by about `spread`."""
    if pal.chromaless:
        return np.clip(pal.colour * math.exp(rng.normal(0, spread)) + rng.normal(0, 0.01, 3), 0, 1)
    h, s, v = colorsys.rgb_to_hsv(*pal.colour)
    s, v = np.clip([s * math.exp(rng.normal(0, spread)), v * math.exp(rng.normal(0, spread))], 0.02, 1)
    return _hsv((h + rng.normal(0, 0.15 * spread)) % 1, s, v)


def _grain(rng, h, w):
    """Sensor noise, the same range as the backgrounds'."""
    return rng.normal(0, rng.uniform(0.003, 0.02), (h, w, 1)).astype(np.float32)


def _textured_surface(rng, cv, pal):
    """The palette colour drifting towards a second shade, with coarse and fine luminance texture."""
    shade = _shade_of(rng, pal, 0.3).astype(np.float32)
    drift = _noise(rng, cv.h, cv.w, rng.uniform(2, 5), octaves=3)
    coarse = (_noise(rng, cv.h, cv.w, rng.uniform(3, 10)) - 0.5) * rng.uniform(0.1, 0.3)
    fine = (_noise(rng, cv.h, cv.w, cv.scale / rng.uniform(3, 8), octaves=2) - 0.5) * rng.uniform(0.03, 0.12)
    colour = _lerp(np.asarray(pal.colour, np.float32), shade, drift)
    return colour * (1 + coarse + fine)[..., None]


def _finish(rng, fg):
    return np.clip(fg + _grain(rng, *fg.shape[:2]), 0, 1).astype(np.float32)


def _print(rng, cv):
    """The weight (HxW) of a pattern printed over the whole canvas at a random scale."""
    noise = _noise(rng, cv.h, cv.w, rng.uniform(3, 8))
    return _pattern(rng, cv.yy, cv.xx, cv.scale * rng.uniform(0.3, 1), noise, _PRINT_CHANCES)


def _body_colour_v2(rng, cv, pal, dist):
    """A solid object: a textured surface printed with a pattern in a second shade (most of the
    time), lit from one side, darker towards the outline."""
    fg = _textured_surface(rng, cv, pal)
    if rng.random() < 0.8:
        ink = _shade_of(rng, pal, rng.uniform(0.3, 0.8)).astype(np.float32) - pal.colour.astype(np.float32)
        fg = fg + ink * _print(rng, cv)[..., None]  # the print keeps the surface's texture
    angle = rng.uniform(0, 2 * np.pi)
    light = 1 + rng.uniform(0.1, 0.3) * ((np.cos(angle) * cv.xx + np.sin(angle) * cv.yy) / cv.scale - 0.5)
    rim = 1 - rng.uniform(0.1, 0.25) * np.exp(np.minimum(dist, 0) / (0.05 * cv.scale))
    return _finish(rng, fg * (light * rim)[..., None])


def _splat(strands, colours, h, w):
    """Coverage-weighted mean colour of the strand segments over each pixel (HxWx3) and the total
    coverage (HxW); `colours` holds one RGB per entry of `strands`."""
    weight = np.bincount(strands.flat, weights=strands.coverage, minlength=h * w)
    rgb = [np.bincount(strands.flat, weights=strands.coverage * colours[:, c], minlength=h * w) for c in range(3)]
    mean = np.stack(rgb, -1) / np.maximum(weight, 1e-9)[:, None]
    return mean.reshape(h, w, 3).astype(np.float32), weight.reshape(h, w)


def _strand_colours(rng, shades, strands, step, fade_length, brightness, sheen):
    """One RGB per entry of `strands`: each strand takes one of `shades` (k, 3) and its own
    brightness (log-normal, sigma `brightness`), which rises or falls over `fade_length` px from
    the strand's start and ripples along it (amplitude up to `sheen`, period 6-60 px)."""
    n = int(strands.strand.max()) + 1 if strands.strand.size else 0
    base = shades[rng.integers(0, len(shades), n)] * np.exp(rng.normal(0, brightness, n))[:, None]
    end_change = rng.uniform(-0.3, 0.3, n)
    period, phase, amp = rng.uniform(6, 60, n), rng.uniform(0, 2 * np.pi, n), rng.uniform(0, sheen, n)
    i, s = strands.strand, strands.along * step  # s: px from the strand's start
    factor = (1 + end_change[i] * np.minimum(s / fade_length, 1)) * (1 + amp[i] * np.sin(2 * np.pi * s / period[i] + phase[i]))
    return np.clip(base[i] * factor[:, None], 0, 1)


def _hair_colour_v2(rng, cv, pal, dist, max_len, strands):
    """Every strand its own shade and brightness, changing towards the tip and shimmering along
    it; between strands (alpha 0) and on the body, a textured root-to-tip field."""
    shades = np.stack([pal.colour] + [_shade_of(rng, pal, 0.25) for _ in range(3)])
    colours = _strand_colours(rng, shades, strands, 1.5, max_len, rng.uniform(0.1, 0.3), rng.uniform(0.05, 0.25))
    on_strands, weight = _splat(strands, colours, cv.h, cv.w)
    tip = _shade_of(rng, pal, 0.3).astype(np.float32)
    field = _lerp(_textured_surface(rng, cv, pal), tip, np.clip(np.maximum(dist, 0) / max_len, 0, 1))
    return _finish(rng, np.where((weight > 0)[..., None], on_strands, field))


def _thread_colour_v2(rng, cv, pal, threads):
    """Threads of two or three shades (a net reads as a woven check, a web as dewy and uneven),
    each varying along its length, over a textured field."""
    shades = np.stack([pal.colour] + [_shade_of(rng, pal, 0.35) for _ in range(rng.integers(1, 3))])
    colours = _strand_colours(rng, shades, threads, 1.5, 0.3 * cv.scale, rng.uniform(0.1, 0.3), rng.uniform(0.1, 0.4))
    on_threads, weight = _splat(threads, colours, cv.h, cv.w)
    return _finish(rng, np.where((weight > 0)[..., None], on_threads, _textured_surface(rng, cv, pal)))


def _glass_colour_v2(rng, cv, pal, rim, alpha, highlight):
    """A tint varying across the body with bands of reflected light, a rim of varying darkness
    and white highlights."""
    tint = _textured_surface(rng, cv, pal)
    bent = _noise(rng, cv.h, cv.w, rng.uniform(1.5, 4), octaves=3)
    u, _ = _rotated(rng, cv.yy, cv.xx)
    reflection = np.sin(2 * np.pi * (u / (cv.scale * rng.uniform(0.1, 0.4)) + bent * rng.uniform(0.5, 2)))
    tint = tint * (1 + rng.uniform(0.1, 0.35) * reflection)[..., None]
    rim_colour = _shade_of(rng, pal, 0.2).astype(np.float32) * rng.uniform(0.3, 0.7)
    rim_colour = rim_colour * (0.7 + 0.6 * _noise(rng, cv.h, cv.w, rng.uniform(3, 8), octaves=2))[..., None]
    fg = _lerp(_lerp(tint, rim_colour, np.clip(rim / np.maximum(alpha, 1e-6), 0, 1)), np.ones(3, np.float32), highlight)
    return _finish(rng, fg)


def _smoke_colour_v2(rng, cv, pal, alpha):
    """Two shades mixing in wisps, lit unevenly, darker where the smoke is dense."""
    mix = _noise(rng, cv.h, cv.w, rng.uniform(2, 5), octaves=4)
    fg = _lerp(np.asarray(pal.colour, np.float32), _shade_of(rng, pal, 0.5).astype(np.float32), mix)
    light = 0.6 + 0.7 * _noise(rng, cv.h, cv.w, rng.uniform(4, 10), octaves=5, persistence=0.6)
    dense = alpha / max(float(alpha.max()), 1e-6)
    return _finish(rng, fg * (light * (1 - rng.uniform(0.1, 0.5) * dense))[..., None])


def _veil_colour_v2(rng, cv, pal, fold, warp, weft):
    """Shot fabric (warp and weft of two shades), often printed with a pattern, shaded by its
    folds."""
    warp_colour, weft_colour = pal.colour.astype(np.float32), _shade_of(rng, pal, 0.4).astype(np.float32)
    fg = _lerp(_lerp(_textured_surface(rng, cv, pal), warp_colour, warp), weft_colour, weft)
    if rng.random() < 0.6:
        fg = _lerp(fg, _shade_of(rng, pal, 0.7).astype(np.float32), _print(rng, cv))
    return _finish(rng, fg * (0.7 + 0.3 * fold)[..., None])


PAINT_V2 = Paint(_body_colour_v2, _hair_colour_v2, _thread_colour_v2, _glass_colour_v2, _smoke_colour_v2, _veil_colour_v2)

_FOREGROUNDS = {
    "solid": _fg_solid,
    "hair": _fg_hair,
    "cobweb": _fg_cobweb,
    "mesh": _fg_mesh,
    "holes": _fg_holes,
    "glass": _fg_glass,
    "smoke": _fg_smoke,
    "veil": _fg_veil,
}


def make_foreground(seed, index, size, version=SYNTH_VERSION):
    """Foreground `index` of the benchmark for `seed`: (fg HxWx3, alpha HxW, meta dict). Alpha is
    the same in every version; the colour is the version's."""
    kind = KINDS[index % len(KINDS)]
    pal = _palette(seed, index)
    paint = {1: PAINT_V1, 2: PAINT_V2}[_checked_version(version)]
    fg, alpha = _FOREGROUNDS[kind](_rng(seed, _FG_STREAM, index), Canvas.of(*size), pal, paint)
    return fg, alpha, {"kind": kind, "group": group_of(kind), "chromaless": pal.chromaless}


# ----------------------------------------------------------------------------------------------
# Backgrounds


def _photo_colour(rng, around=None):
    """Colours with photo-like statistics: mostly muted, mid-bright; or near a given colour."""
    if around is not None:
        return np.clip(around + rng.normal(0, 0.06, 3), 0, 1)
    return _hsv(rng.random(), rng.beta(1.5, 3.5), rng.beta(3, 2.2))


def make_background(seed, index, size, n_fg, version=SYNTH_VERSION):
    """Procedural background `index` of the given benchmark version.

    A third of the backgrounds that have a foreground of the same index take their colours near
    that foreground's (the background-like-foreground hard case). Returns (image HxWx3 float32,
    partner index or None)."""
    draw = {1: _background_v1, 2: _background_v2}[_checked_version(version)]
    rng = _rng(seed, _BG_STREAM, index)
    partner = index if index < n_fg and rng.random() < 1 / 3 else None
    similar_to = None if partner is None else _palette(seed, partner).colour
    return draw(rng, size, similar_to), partner


def _background_v1(rng, size, similar_to):
    """Version 1: multi-scale noise mapped to a colour ramp, plus a gradient, stripes and soft
    blobs with random weights, smooth lighting, vignette and grain."""
    h, w = size
    cv = Canvas.of(h, w)
    colours = [_photo_colour(rng, similar_to) for _ in range(3)]
    ramp = _noise(rng, h, w, rng.uniform(1.5, 6), octaves=int(rng.integers(3, 7)), persistence=rng.uniform(0.35, 0.65))
    img = _lerp(_lerp(colours[0], colours[1], np.clip(ramp * 2, 0, 1)), colours[2], np.clip(ramp * 2 - 1, 0, 1))
    angle = rng.uniform(0, 2 * np.pi)
    grad = np.clip(0.5 + (np.cos(angle) * (cv.xx - w / 2) + np.sin(angle) * (cv.yy - h / 2)) / cv.scale, 0, 1)
    img = _lerp(img, _photo_colour(rng, similar_to), grad * rng.uniform(0, 0.6))
    if rng.random() < 0.4:
        angle, period = rng.uniform(0, np.pi), cv.scale * rng.uniform(0.02, 0.2)
        wave = np.sin(2 * np.pi * (np.cos(angle) * cv.xx + np.sin(angle) * cv.yy) / period)
        img = _lerp(img, _photo_colour(rng, similar_to), np.clip(wave * 3, 0, 1) * rng.uniform(0.3, 0.9))
    for _ in range(rng.integers(0, 6)):
        by, bx, r = rng.uniform(0, h), rng.uniform(0, w), cv.scale * rng.uniform(0.03, 0.25)
        blob = np.exp(-((cv.yy - by) ** 2 + (cv.xx - bx) ** 2) / (2 * r * r))
        img = _lerp(img, _photo_colour(rng, similar_to), blob * rng.uniform(0.3, 1.0))
    light = 0.75 + 0.4 * _noise(rng, h, w, 1.5, octaves=2)
    vignette = 1 - rng.uniform(0, 0.35) * (((cv.yy - h / 2) / h) ** 2 + ((cv.xx - w / 2) / w) ** 2) * 2
    grain = rng.normal(0, rng.uniform(0.003, 0.02), (h, w, 1))
    return np.clip(img * (light * vignette)[..., None] + grain, 0, 1).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Backgrounds, version 2: a dead-leaves scene. Opaque occluding shapes with power-law sizes give
# the ~1/f spectrum and hard edges of photos; each shape is textured, and thin strokes and sensor
# grain add the finest detail. Nothing is blurred.

LEAF_COVERAGE = 2.2  # leaves paint this many times the image area (occluding one another)


def _background_v2(rng, size, similar_to):
    """Version 2: a textured base, dead leaves over it, thin strokes, then lighting and grain."""
    h, w = size
    cv = Canvas.of(h, w)
    fields = _texture_fields(rng, cv)
    palette = _scene_palette(rng, similar_to)
    everywhere = (slice(None), slice(None))
    img = _textured_fill(rng, cv, everywhere, cv.scale, fields, *_scene_colours(rng, palette, (2,)))
    img = _dead_leaves(rng, cv, img, fields, palette)
    img = _strokes(rng, cv, img, palette)
    return _photo_finish(rng, cv, img)


def _scene_palette(rng, similar_to):
    """The 3-7 main colours of a scene (a scene is not confetti): photo-like colours, or, for a
    background matched to a foreground, mostly colours near that foreground's."""
    n = int(rng.integers(3, 8))
    if similar_to is None:
        return np.stack([_photo_colour(rng) for _ in range(n)])
    near = [np.clip(similar_to * math.exp(rng.normal(0, 0.12)) + rng.normal(0, 0.05, 3), 0, 1) for _ in range(n)]
    return np.stack(near[:-1] + [_photo_colour(rng)])


def _scene_colours(rng, palette, shape):
    """Colours of the scene's palette (array of shape `shape` + (3,)), each a little lighter or
    darker and slightly shifted."""
    colours = palette[rng.integers(0, len(palette), shape)] * np.exp(rng.normal(0, 0.15, shape))[..., None]
    return np.clip(colours + rng.normal(0, 0.02, (*shape, 3)), 0, 1).astype(np.float32)


def _texture_fields(rng, cv):
    """Noise fields in [0, 1] that the leaves cut their textures from: coarse, medium and fine
    (2-4 px cells)."""
    return (
        _noise(rng, cv.h, cv.w, rng.uniform(3, 8), octaves=5, persistence=0.6),
        _noise(rng, cv.h, cv.w, rng.uniform(12, 30), octaves=3),
        _noise(rng, cv.h, cv.w, cv.scale / rng.uniform(2, 4), octaves=2),
    )


def _textured_fill(rng, cv, window, size, fields, colour, second):
    """The colour of one surface over `window` (two slices) of the canvas: a pattern between
    `colour` and a second colour (`second` or a darker/lighter `colour`), shaded top to bottom,
    with fine texture."""
    y, x = cv.yy[window], cv.xx[window]
    coarse, medium, fine = (f[window] for f in fields)
    if rng.random() < 0.65:
        second = np.clip(colour * np.float32(math.exp(rng.normal(0, 0.4))), 0, 1)
    mix = _pattern(rng, y, x, size, coarse if rng.random() < 0.5 else medium)
    tex = _lerp(colour, second, mix)
    light = 1 + rng.normal(-0.1, 0.2) * (y - y[0, 0]) / size + (fine - 0.5) * rng.uniform(0, 0.25)  # mostly lit from above
    return tex * light[..., None]


def _leaf_radii(rng, cv):
    """Leaf sizes from a power law p(r) ~ r^-3 (scale invariance) between 3% (at least 4 px: each
    leaf costs a Python call) and 50% of the image side; as many as cover the image LEAF_COVERAGE
    times."""
    r_min, r_max = max(4.0, 0.03 * cv.scale), 0.5 * cv.scale
    u = rng.random(int(LEAF_COVERAGE * cv.h * cv.w / (np.pi * r_min**2)) + 1)
    radii = (r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5
    n = int(np.searchsorted(np.cumsum(0.6 * np.pi * radii**2), LEAF_COVERAGE * cv.h * cv.w)) + 1
    return radii[:n]


def _leaf_outline(rng, cy, cx, r):
    """A random leaf outline around (cy, cx) of size r: an ellipse, a rectangle (boards, poles,
    books) or an irregular blob (foliage, stones). Returns (signed distance in px as a function of
    (y, x), negative inside; half height and half width of its bounding box)."""
    shape = rng.random()
    if shape < 0.85:  # blobs are the slowest to draw: fewer of them
        angle, aspect = rng.uniform(0, np.pi), rng.uniform(0.1, 1)
        c, s = math.cos(angle), math.sin(angle)
        a, b = r, max(r * aspect, 1.0)

        def along_across(y, x):
            return c * (x - cx) + s * (y - cy), c * (y - cy) - s * (x - cx)

        if shape < 0.42:

            def rectangle(y, x):
                u, v = along_across(y, x)
                return np.maximum(np.abs(u) - a, np.abs(v) - b)

            return rectangle, a * abs(s) + b * abs(c), a * abs(c) + b * abs(s)

        def ellipse(y, x):
            u, v = along_across(y, x)
            rho = np.hypot(u / a, v / b)
            slope = np.maximum(np.hypot(u / a**2, v / b**2) / np.maximum(rho, 1e-6), 1 / a)  # |grad rho|
            return (rho - 1) / slope

        return ellipse, math.hypot(a * s, b * c), math.hypot(a * c, b * s)
    blob = Blob.random(rng, cy, cx, r, rng.uniform(0.2, 0.9), harmonics=3)
    blob = blob._replace(k=blob.k.astype(np.float32), amp=blob.amp.astype(np.float32), phase=blob.phase.astype(np.float32))
    reach = r * (1 + float(blob.amp.sum()))
    return blob.distance, reach, reach


def _dead_leaves(rng, cv, img, fields, palette):
    """Paint textured leaves back to front; each only touches its bounding box."""
    radii = _leaf_radii(rng, cv)
    centres = rng.uniform(-0.1, 1.1, (len(radii), 2)) * (cv.h, cv.w)
    colours = _scene_colours(rng, palette, (len(radii), 2))
    for r, (cy, cx), (colour, second) in zip(radii, centres, colours):
        distance, half_h, half_w = _leaf_outline(rng, cy, cx, r)
        top, bottom = max(0, int(cy - half_h - 1)), min(cv.h, int(cy + half_h) + 2)
        left, right = max(0, int(cx - half_w - 1)), min(cv.w, int(cx + half_w) + 2)
        if top >= bottom or left >= right:
            continue
        window = (slice(top, bottom), slice(left, right))
        cover = _coverage(distance(cv.yy[window], cv.xx[window]))
        paint = _textured_fill(rng, cv, window, 2 * r, fields, colour, second)
        img[window] += (paint - img[window]) * cover[..., None]
    return img


def _wires(rng, cv):
    """Zero to three long, slightly sagging lines across the image (cables, branches, edges)."""
    lines = []
    t = np.linspace(0, 1, 200)[:, None]
    for _ in range(rng.integers(0, 4)):
        a, b = rng.uniform(0, 1, 2) * (cv.h, cv.w), rng.uniform(0, 1, 2) * (cv.h, cv.w)
        a[rng.integers(0, 2)] = -5  # start beyond an edge
        sag = rng.uniform(0, 0.15) * cv.scale * 4 * t * (1 - t)
        lines.append(a + (b - a) * t * 1.5 + sag * np.array([1, 0]))
    return lines


def _twigs(rng, cv):
    """Up to 40 short curved strokes (twigs, grass, cracks, scribbles), often in clusters."""
    n = int(rng.integers(0, 41))
    if n == 0:
        return []
    centres = rng.uniform(0, 1, (max(1, n // 8), 2)) * (cv.h, cv.w)
    starts = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 0.08 * cv.scale, (n, 2))
    k = 60
    length = cv.scale * rng.uniform(0.03, 0.25, (n, 1))
    heading = rng.uniform(0, 2 * np.pi, (n, 1)) + np.cumsum(rng.normal(0, 0.06, (n, k)), axis=1)
    steps = (length / k)[..., None] * np.stack([np.sin(heading), np.cos(heading)], -1)
    return list(starts[:, None] + np.cumsum(steps, axis=1))


def _strokes(rng, cv, img, palette):
    """Thin lines (0.5-1.5 px) over the scene, each group in one dark, light or scene colour."""
    for lines in (_wires(rng, cv), _twigs(rng, cv)):
        if not lines:
            continue
        widths = rng.uniform(0.5, 1.5, len(lines))
        cover = _strand_alpha(_thread_pixels(lines, widths, cv.h, cv.w), cv.h, cv.w)
        if rng.random() < 0.6:
            colour = np.full(3, rng.uniform(0.02, 0.2) if rng.random() < 0.7 else rng.uniform(0.8, 1.0))
        else:
            colour = _scene_colours(rng, palette, ())
        img = _lerp(img, colour.astype(np.float32), cover)
    return img


def _photo_finish(rng, cv, img):
    """Smooth uneven lighting, vignette and sensor grain."""
    light = 0.75 + 0.4 * _noise(rng, cv.h, cv.w, 1.5, octaves=2)
    vignette = 1 - rng.uniform(0, 0.35) * (((cv.yy - cv.h / 2) / cv.h) ** 2 + ((cv.xx - cv.w / 2) / cv.w) ** 2) * 2
    return np.clip(img * (light * vignette)[..., None] + _grain(rng, cv.h, cv.w), 0, 1).astype(np.float32)


def _photo_background(path, index, size, seed):
    """A real photo scaled to cover `size` and cropped at a seeded position."""
    h, w = size
    photo = Image.fromarray((read_image(path, warn_alpha=False) * 255 + 0.5).astype(np.uint8))
    scale = max(h / photo.height, w / photo.width)
    rh, rw = max(h, math.ceil(photo.height * scale)), max(w, math.ceil(photo.width * scale))
    photo = photo.resize((rw, rh), Image.LANCZOS)
    rng = _rng(seed, _BG_STREAM, index)
    top, left = int(rng.integers(0, rh - h + 1)), int(rng.integers(0, rw - w + 1))
    return np.asarray(photo.crop((left, top, left + w, top + h)))


# ----------------------------------------------------------------------------------------------
# Writing the benchmark


def fg_name(index):
    return f"synth_{index:05d}"


def bg_name(index):
    return f"bg_{index:05d}"


def _write_task(task):
    """Render and write one sample (runs in a worker process); returns its manifest entry."""
    what, index, out, seed, size, source, version = task
    if what == "fg":
        fg, alpha, meta = make_foreground(seed, index, size, version)
        write_image(out / "fg" / f"{fg_name(index)}.png", fg)
        write_image(out / "alpha" / f"{fg_name(index)}.png", alpha)
        return {"name": fg_name(index), **meta}
    name = bg_name(index)
    if isinstance(source, Path):
        write_image(out / "bg" / f"{name}.png", _photo_background(source, index, size, seed))
        return {"name": name, "source": source.name}
    bg, partner = make_background(seed, index, size, n_fg=source, version=version)
    write_image(out / "bg" / f"{name}.png", bg)
    return {"name": name, "similar_to": None if partner is None else fg_name(partner)}


def _check_arguments(out, n_fg, size, bg_dir, n_bg):
    if isinstance(n_fg, bool) or not isinstance(n_fg, int) or n_fg < 1:
        raise PpidError(f"--n-fg must be a whole number >= 1, got {n_fg!r}")
    if n_bg is not None and (not isinstance(n_bg, int) or n_bg < 1):
        raise PpidError(f"--n-bg must be a whole number >= 1, got {n_bg!r}")
    if len(size) != 2 or not all(isinstance(v, int) and MIN_SIZE <= v <= MAX_SIZE for v in size):
        raise PpidError(f"--size must be two whole numbers H W in {MIN_SIZE}..{MAX_SIZE}, got {' '.join(map(str, size))}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PpidError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").is_file():
        raise PpidError(f"{out}: folder is not empty and holds no synth manifest.json; refusing to write into it")
    if bg_dir is None:
        return []
    photos = list(list_images(bg_dir).values())
    if not photos:
        raise PpidError(f"{bg_dir}: no images found (expected {', '.join(('png', 'jpg', 'tif', 'bmp', 'webp'))} files)")
    return photos


def _remove_stale(out, manifest):
    """Delete files of a previous run into `out` that this run does not write (a smaller n)."""
    try:
        old = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return
    new_fg = {s["name"] for s in manifest["samples"]}
    new_bg = {b["name"] for b in manifest["backgrounds"]}
    for entry in old.get("samples", []):
        if entry.get("name") not in new_fg:
            for folder in ("fg", "alpha"):
                (out / folder / f"{entry['name']}.png").unlink(missing_ok=True)
    for entry in old.get("backgrounds", []):
        if entry.get("name") not in new_bg:
            (out / "bg" / f"{entry['name']}.png").unlink(missing_ok=True)


def synthesize(out, n_fg, seed=0, size=(512, 512), bg_dir=None, n_bg=None, workers=WORKERS, version=SYNTH_VERSION):
    """Write the procedural benchmark to `out` and return its manifest.

    Layout (the custom layout of `ppid.data.datasets`): fg/NAME.png (RGB), alpha/NAME.png (8-bit
    grey), bg/bg_NNNNN.png, split.txt (`NAME group`), manifest.json. The same seed and `version`
    (1 or 2, see VERSIONS) give identical bytes whatever `workers` is. Rerunning into a previous
    synth folder replaces it; any other non-empty folder is refused.
    """
    size = tuple(int(v) if isinstance(v, (int, np.integer)) else v for v in size)
    version = _checked_version(version)
    photos = _check_arguments(out, n_fg, size, bg_dir, n_bg)
    out = Path(out)
    n_bg = n_fg if n_bg is None else n_bg
    started = time.perf_counter()
    tasks = [("fg", i, out, seed, size, None, version) for i in range(n_fg)]
    tasks += [("bg", j, out, seed, size, photos[j % len(photos)] if photos else n_fg, version) for j in range(n_bg)]
    workers = max(1, min(workers, os.cpu_count() or 1, len(tasks)))
    bar = dict(total=len(tasks), desc="synth", unit="img")
    if workers == 1:
        entries = list(progress(map(_write_task, tasks), **bar))
    else:
        with Pool(workers) as pool:
            entries = list(progress(pool.imap(_write_task, tasks, chunksize=2), **bar))
    samples, backgrounds = entries[:n_fg], entries[n_fg:]
    manifest = {
        "generator": "ppid.data.synth",
        "version": version,
        "seed": seed,
        "parameters": {
            "n_fg": n_fg,
            "n_bg": n_bg,
            "size": list(size),
            "backgrounds": "procedural" if bg_dir is None else str(bg_dir),
            "kinds": list(KINDS),
        },
        "samples": samples,
        "backgrounds": backgrounds,
    }
    _remove_stale(out, manifest)
    with atomic_path(out / "split.txt") as tmp:
        tmp.write_text("".join(f"{s['name']} {s['group']}\n" for s in samples))
    with atomic_path(out / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    n_transparent = sum(s["group"] == "transparent" for s in samples)
    print(
        f"synth v{version}: wrote {n_fg} foregrounds ({n_transparent} transparent, {n_fg - n_transparent} non-transparent) "
        f"and {n_bg} backgrounds at {size[0]}x{size[1]} to {out} in {time.perf_counter() - started:.1f}s"
    )
    return manifest
