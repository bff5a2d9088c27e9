"""Refine mode: the trimap rule, the Predictor and CLI paths, and `ppid evaluate --refine`."""

import json
import warnings

import numpy as np
import pytest
import torch

import ppid
from ppid import PpidError
from ppid.cli import main
from ppid.models import build, save_model
from ppid.refine import parse_rule, trimap_from_alpha


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    paths = {}
    for family, role in (("indexnet", "student"), ("indexnet", "teacher"), ("gca", "teacher")):
        paths[f"{family}_{role}"] = root / f"{family}_{role}.safetensors"
        save_model(build(family, role), paths[f"{family}_{role}"])
    return paths


def test_trimap_rule_thresholds_band_and_defaults():
    alpha = torch.zeros(1, 1, 100, 100)
    alpha[..., 40:60, 40:60] = 1.0
    alpha[..., 50, 70] = 0.5  # an isolated soft pixel
    tri = trimap_from_alpha(alpha, low=0.05, high=0.95, width=0.03)  # radius 3 px
    assert set(tri.unique().tolist()) <= {0.0, 0.5, 1.0}
    assert tri[0, 0, 50, 50] == 1.0 and tri[0, 0, 5, 5] == 0.0
    assert (tri[0, 0, 47:54, 67:74] == 0.5).all() and tri[0, 0, 50, 74] == 0.0  # grown by exactly 3 px
    hard = trimap_from_alpha(alpha, width=0.0)  # at least one pixel around the unknown
    assert hard[0, 0, 50, 71] == 0.5 and hard[0, 0, 50, 72] == 0.0
    assert trimap_from_alpha(torch.full((1, 1, 8, 8), 0.99))[0, 0, 4, 4] == 1.0  # above high: foreground
    with pytest.raises(PpidError, match="low < high"):
        trimap_from_alpha(alpha, low=0.9, high=0.1)


def test_auto_width_grows_the_band_with_the_students_soft_share():
    alpha = torch.zeros(2, 1, 100, 100)
    alpha[..., 40:60, 40:60] = 1.0
    alpha[0, 0, 50, 70] = 0.5  # image 0: one soft pixel (0.01% of the image): the minimum band
    alpha[1, 0, :40, :] = 0.3  # image 1: 40% of the image soft (haze): 0.2 x 0.4 x 100 = 8 px
    alpha[1, 0, 50, 70] = 0.5
    tri = trimap_from_alpha(alpha, low=0.45, high=0.55, width="auto", auto_scale=0.2)
    assert tri[0, 0, 50, 71] == 0.5 and tri[0, 0, 50, 72] == 0.0  # 1 px
    assert tri[1, 0, 50, 78] == 0.5 and tri[1, 0, 50, 79] == 0.0  # 8 px
    assert (tri[1, 0, :40] == 0.0).all()  # the haze itself is below low: background, as with a fixed width
    fixed = trimap_from_alpha(alpha[1:], low=0.45, high=0.55, width=0.08)
    assert torch.equal(fixed[0], tri[1])  # auto = the fixed width the soft share gives


def test_refine_rule_parsing_names_the_problem():
    assert parse_rule(("0.45", "0.55", "auto")) == {"low": 0.45, "high": 0.55, "width": "auto"}
    assert parse_rule((0.05, 0.95, 0.01)) == {"low": 0.05, "high": 0.95, "width": 0.01} == parse_rule()  # the defaults
    assert parse_rule(("0.45", "0.55", "auto:0.2")) == {"low": 0.45, "high": 0.55, "width": "auto", "auto_scale": 0.2}
    for bad in ("wide", "automatic", "auto:x"):
        with pytest.raises(PpidError, match="WIDTH may be 'auto'"):
            parse_rule(("0.45", "0.55", bad))
    with pytest.raises(PpidError, match="auto_scale"):
        parse_rule(("0.45", "0.55", "auto:0.9"))
    with pytest.raises(PpidError, match="low < high"):
        parse_rule(("0.6", "0.4", "auto"))
    with pytest.raises(PpidError, match="'auto' or a share"):
        parse_rule(("0.05", "0.95", "0.7"))


def test_predictor_refine_clamps_to_the_derived_trimap(weights):
    photo = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    plain = ppid.Predictor(weights["indexnet_student"], device="cpu")
    refined = ppid.Predictor(weights["indexnet_student"], device="cpu", refine=weights["gca_teacher"], refine_rule=(0.05, 0.95, 0.02))
    student_alpha = torch.from_numpy(plain.predict(photo))[None, None]
    tri = trimap_from_alpha(student_alpha, 0.05, 0.95, 0.02)[0, 0].numpy()
    alpha = refined.predict(photo)
    assert alpha.shape == (48, 64) and np.isfinite(alpha).all()
    assert (alpha[tri == 0] == 0).all() and (alpha[tri == 1] == 1).all()
    with pytest.raises(PpidError, match="needs a trimap-based teacher"):
        ppid.Predictor(weights["indexnet_student"], device="cpu", refine=weights["indexnet_student"])
    with pytest.raises(PpidError, match="starts from a trimap-free student"):
        ppid.Predictor(weights["indexnet_teacher"], device="cpu", refine=weights["gca_teacher"])


def test_predict_and_evaluate_cli_refine(weights, tmp_path, capsys):
    from ppid.data.synth import synthesize
    from ppid.data.testset import build_testset

    synthesize(tmp_path / "src", 2, seed=1, size=(64, 64), workers=1)
    build_testset(tmp_path / "src" / "fg", tmp_path / "src" / "alpha", tmp_path / "src" / "bg", 1, tmp_path / "test",
                  split=tmp_path / "src" / "split.txt")
    assert main(["predict", "--model", str(weights["indexnet_student"]), "--refine", str(weights["indexnet_teacher"]),
                 "--refine-rule", "0.45", "0.55", "auto",
                 str(tmp_path / "test" / "merged"), "--out", str(tmp_path / "out"), "--save", "alpha", "--device", "cpu"]) == 0
    assert len(list((tmp_path / "out" / "alpha").glob("*.png"))) == 2
    capsys.readouterr()
    assert main(["evaluate", "--model", str(weights["indexnet_student"]), "--label", "student", "--refine", str(weights["indexnet_teacher"]),
                 "--refine-rule", "0.45", "0.55", "auto", "--model", str(weights["indexnet_teacher"]), "--label", "teacher",
                 "--data", str(tmp_path / "test"), "--device", "cpu", "--json", str(tmp_path / "eval.json")]) == 0
    out = capsys.readouterr().out
    assert "student -> refine" in out and "teacher" in out and "derived from the student's alpha" in out
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["refine"]["rule"] == {"low": 0.45, "high": 0.55, "width": "auto"}  # which rule made the refine row
    assert (tmp_path / saved["refine"]["teacher"]).resolve() == weights["indexnet_teacher"].resolve()
    assert set(saved["summaries"]) == {"student", "student -> refine", "teacher"}


def test_refine_says_when_the_student_found_nothing(weights, tmp_path, capsys):
    """A student whose alpha never exceeds LOW gives an all-background trimap: the refined matte is
    empty, and the Predictor, `ppid predict` (naming the file) and `ppid evaluate` (counting) say so
    instead of passing it off as a cut-out or a collapsed model."""
    from ppid.data.synth import synthesize
    from ppid.data.testset import build_testset

    torch.manual_seed(0)
    blind = build("indexnet", "student", revision=1)  # revision 1: a ReLU6 head
    with torch.no_grad():
        blind.head[0][1].bias.fill_(-1e3)  # ReLU6 gives 0 everywhere: alpha 0.5 everywhere, below LOW 0.6
    save_model(blind, tmp_path / "blind.safetensors")
    photo = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    rule = ("0.6", "0.9", "auto")
    predictor = ppid.Predictor(tmp_path / "blind.safetensors", device="cpu", refine=weights["indexnet_teacher"], refine_rule=rule)
    with pytest.warns(UserWarning, match=r"never exceeds LOW \(0.6\).*refined matte is empty"):
        assert not predictor.predict(photo).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a student that finds something: no such warning
        ppid.Predictor(weights["indexnet_student"], device="cpu", refine=weights["indexnet_teacher"],
                       refine_rule=(0.05, 0.95, "auto")).predict(photo)

    synthesize(tmp_path / "src", 2, seed=1, size=(64, 64), workers=1)
    build_testset(tmp_path / "src" / "fg", tmp_path / "src" / "alpha", tmp_path / "src" / "bg", 1, tmp_path / "test",
                  split=tmp_path / "src" / "split.txt")
    merged = sorted((tmp_path / "test" / "merged").iterdir())
    assert main(["predict", "--model", str(tmp_path / "blind.safetensors"), "--refine", str(weights["indexnet_teacher"]),
                 "--refine-rule", *rule, str(merged[0]), "--out", str(tmp_path / "out"), "--save", "alpha", "--device", "cpu"]) == 0
    assert f"ppid predict: warning: {merged[0]}: refine: the student's alpha never exceeds LOW" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tmp_path / "blind.safetensors"), "--label", "blind", "--refine",
                 str(weights["indexnet_teacher"]), "--refine-rule", *rule, "--data", str(tmp_path / "test"),
                 "--device", "cpu", "--json", str(tmp_path / "eval.json")]) == 0
    out = capsys.readouterr().out
    assert "warning: blind -> refine: on 2 of 2 images the student's alpha never exceeds LOW (0.6)" in out
    assert "warning: blind predicted a flat alpha" in out  # the student alone: a dead head, as before
    assert "blind -> refine predicted a flat alpha" not in out  # its empty mattes are not counted twice
    summaries = json.loads((tmp_path / "eval.json").read_text())["summaries"]
    assert summaries["blind -> refine"]["empty_refined_mattes"] == 2 and "empty_refined_mattes" not in summaries["blind"]
