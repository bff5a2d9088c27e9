"""The experiment scripts' own logic that a reported number rests on (experiments/bn_stats.py, precision_probe.py, parallel_fit.py)."""

import pytest
import torch

from helpers import ROOT, load_script
from ppid.models import build

BN_STATS = ROOT / "experiments" / "bn_stats.py"


def test_recalibrated_statistics_average_the_batches_and_come_back_after():
    bn_stats = load_script(BN_STATS)
    torch.manual_seed(0)
    model = build("indexnet", "student").eval()
    first = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    inputs = []
    first.register_forward_hook(lambda module, args, out: inputs.append(args[0].detach().clone()))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [(torch.rand(2, 3, 64, 64) * scale, None) for scale in (1.0, 3.0)]
    with bn_stats.recalibrated_statistics(model, batches):
        assert not model.training
        seen = torch.cat(inputs)  # what the first BatchNorm saw: both batches, weighed alike
        assert torch.allclose(first.running_mean, seen.mean(dim=(0, 2, 3)), atol=1e-5)
        assert not torch.equal(first.running_mean, before[next(k for k in before if k.endswith("running_mean"))])
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # the model's own statistics are back


def test_precision_probe_gradients_are_each_terms_own(tmp_path):
    """The probe compares each loss term's gradient across precisions: each must be that term's
    alone, over every trained parameter (GC blocks included), so they add up to the total's."""
    from helpers import random_batch
    from ppid.config import load_config
    from ppid.models import save_model
    from ppid.train import build_models, forward_losses, make_objective

    probe = load_script(ROOT / "experiments" / "precision_probe.py")
    torch.manual_seed(0)
    save_model(build("indexnet", "teacher"), tmp_path / "teacher.safetensors")
    cfg = load_config(None, {"mode": "ppid", "distill": {"teacher": str(tmp_path / "teacher.safetensors")}})
    model, teacher = build_models(cfg, torch.device("cpu"))
    objective = make_objective(model, cfg, teacher).train()
    image, trimap = random_batch(n=2, h=64, w=64)
    batch = {"image": image, "trimap": trimap, "alpha": torch.rand(2, 1, 64, 64)}
    terms, _, _ = forward_losses(objective, teacher, batch, None)
    grads = probe.term_gradients(objective, terms)
    assert set(grads) == {"alpha", "clsd_same", "clsd_cross", "ald_f", "ald_a", "distill"}
    size = sum(p.numel() for p in objective.parameters() if p.requires_grad)
    assert all(g.numel() == size for g in grads.values())
    parts = sum(grads[name] for name in ("clsd_same", "clsd_cross", "ald_f", "ald_a"))
    assert float((grads["distill"] - parts).norm() / parts.norm()) < 1e-5  # float32 summation order only
    assert grads["alpha"].abs().sum() > 0 and not torch.allclose(grads["alpha"], grads["distill"])


def test_parallel_fit_counts_a_wave_by_its_shared_work_or_its_slowest_run():
    """A wave of side-by-side processes takes N times the larger of (the wave's step times summed
    over CONCURRENCY) and the slowest run's own step: the device shares work, a run cannot go
    faster than alone. Its evaluations share the device too; start-up and the first step once."""
    from ppid.reproduce.plan import RECALIBRATION_IMAGES, make_plan
    from ppid.reproduce.probe import cost_key

    fit = load_script(ROOT / "experiments" / "parallel_fit.py")
    runs, settings, _ = make_plan((1,), ("indexnet",), (0, 1), "smoke")
    teacher, baseline0, ppid0 = runs[0], runs[1], runs[2]
    steps = {cost_key(teacher): (2.0, 0.04), cost_key(baseline0): (1.0, 0.03), cost_key(ppid0): (3.0, 0.06)}
    evals = {"indexnet": 0.01}
    images = settings["n_test"] * settings["test_per_fg"]
    validations = -(-100 // settings["val_every"])
    eval_teacher = (validations * settings["n_val"] + images) * 0.01
    eval_student = eval_teacher + (images + RECALIBRATION_IMAGES) * 0.01
    wave = [teacher, baseline0, runs[3]]  # teacher + two baselines: shared work bounds
    expected = 10 + 2.0 + 100 * (0.04 + 2 * 0.03) / 2 + (eval_teacher + 2 * eval_student) / 2
    assert fit.wave_seconds(wave, 100, settings, steps, evals, 2.0, 10) == pytest.approx(expected)
    # one run alone, at a concurrency above one, still takes its own step time
    alone = 10 + 3.0 + 100 * 0.06 + eval_student / 4
    assert fit.wave_seconds([ppid0], 100, settings, steps, evals, 4.0, 10) == pytest.approx(alone)


def test_parallel_fit_lists_the_commands_runs_first_wave_first(capsys):
    """gpu_table1_parallel.sh launches exactly the runs parallel_fit sizes: `--list` prints them,
    teachers and baselines before the PPID students, one student per teacher with --one-student."""
    fit = load_script(ROOT / "experiments" / "parallel_fit.py")
    fit.main(["--list", "--family", "indexnet", "--seeds", "0,1", "--teacher-seeds", "0,1,2", "--budget", "smoke",
              "--one-student"])
    assert capsys.readouterr().out.split() == [
        "runs/indexnet/teacher/seed0", "runs/indexnet/baseline/seed0", "runs/indexnet/baseline/seed1",
        "runs/indexnet/teacher/seed1", "runs/indexnet/teacher/seed2",
        "runs/indexnet/ppid/seed0", "runs/indexnet/ppid-teacher1/seed1", "runs/indexnet/ppid-teacher2/seed0"]
    # a seed's every row from one teacher: the ablation students wait for it with Table 1's PPID
    fit.main(["--list", "--family", "indexnet", "--seeds", "1", "--tables", "1,3,4,6", "--budget", "smoke"])
    assert capsys.readouterr().out.split() == [
        "runs/indexnet/teacher/seed0", "runs/indexnet/baseline/seed1", "runs/indexnet/ppid/seed1",
        *(f"runs/indexnet/{row}/seed1" for row in ("noclsd", "sd", "noald", "ld", "ald_f", "ald_a"))]
    with pytest.raises(SystemExit):
        fit.main(["--family", "indexnet"])  # sizing needs --seconds


def test_precision_pairing_pairs_each_student_with_a_baseline_of_its_precision():
    """experiments/precision_pairing.py: like for like, a float32 student takes the float32 control
    baseline of its seed, a student of the plan baselines' precision keeps the plan's, and a pair
    with no baseline of its precision is left out; the plan's pairing ignores precision."""
    pairing = load_script(ROOT / "experiments" / "precision_pairing.py")
    runs = {("baseline", 0): {"sad": 14.0, "precision": None}, ("baseline", 1): {"sad": 13.0, "precision": None},
            ("ppid", 0): {"sad": 11.0, "precision": None},
            ("ppid-teacher1", 0): {"sad": 13.5, "precision": "float32"},
            ("ppid-teacher1", 1): {"sad": 12.0, "precision": "float32"},
            ("ppid-teacher12", 0): {"sad": 15.0, "precision": "float32"},
            ("noclsd", 0): {"sad": 9.0, "precision": None}}  # not a Table 1 PPID student
    plan = pairing.pairs(runs, {})
    assert {t: [p["d"] for p in ps] for t, ps in plan.items()} == {0: [-3.0], 1: [-0.5, -1.0], 12: [1.0]}
    like = pairing.pairs(runs, {0: {"sad": 13.0, "precision": "float32"}})
    assert {t: [p["d"] for p in ps] for t, ps in like.items()} == {0: [-3.0], 1: [0.5], 12: [2.0]}
    assert like[1][0]["precision"] == ["float32", "float32"] and like[0][0]["precision"] == ["not recorded"] * 2
    over = pairing.summarise(like)["over_teachers"]
    assert over["mean"] == pytest.approx((-3.0 + 0.5 + 2.0) / 3) and (over["pairs_won"], over["pairs"]) == (1, 3)


def test_error_split_sums_each_groups_error_by_true_region(monkeypatch):
    """experiments/error_split.py: where a student's whole-image SAD lies (true background,
    foreground, between), per group and over all images; the parts add up to the SAD."""
    import numpy as np

    split = load_script(ROOT / "experiments" / "error_split.py")
    gt = np.array([[0.0, 0.0], [1.0, 0.5]])
    rows = [("a", np.array([[0.2, 0.0], [1.0, 0.5]]), gt, None, "transparent"),        # 0.2 on background
            ("b", np.array([[0.0, 0.0], [0.6, 0.1]]), gt, None, "non-transparent"),    # 0.4 foreground, 0.4 between
            ("c", np.array([[0.0, 0.0], [1.0, 0.5]]), gt, None, "non-transparent")]    # no error
    monkeypatch.setattr(split, "predict_testset", lambda model, testset, device: rows)
    row = split.error_split(type("Student", (), {"role": "student"})(), testset=None)

    eight = lambda v: round(v * 255) / 255 / 1000  # the benchmark's 8-bit matte, in SAD units
    non = row["groups"]["non-transparent"]
    assert non["sad_parts"]["foreground"] == pytest.approx(eight(0.4) / 2)
    assert non["sad_parts"]["between"] == pytest.approx((eight(0.5) - eight(0.1)) / 2)
    assert non["sad_parts"]["background"] == 0 and non["sad"] == pytest.approx(sum(non["sad_parts"].values()))
    assert row["groups"]["transparent"]["share"] == {"background": 1.0, "foreground": 0.0, "between": 0.0}
    assert row["sad"] == pytest.approx((eight(0.2) + eight(0.4) + eight(0.5) - eight(0.1)) / 3)
    assert row["largest_alpha"] == 1.0


def test_teacher_without_trimap_sees_the_whole_image_unknown():
    """experiments/error_split.py --band-widths 1: the teacher's trimap is unknown everywhere (it
    sees RGB only, nothing clamped), scored against the true matte, with its haze on true background."""
    import numpy as np

    from ppid.models.common import MattingOutput

    split = load_script(ROOT / "experiments" / "error_split.py")
    alpha = np.zeros((8, 8), np.float32)
    alpha[2:6, 2:6] = 1.0
    trimap = np.where(alpha > 0, 255, 0).astype(np.uint8)
    trimap[2, 2:6] = 128  # the true trimap: known almost everywhere
    seen = []

    def teacher(image, trimap):
        seen.append(trimap.clone())
        return MattingOutput(alpha=torch.full_like(trimap, 0.2), alpha_logits=None)

    item = {"image": np.zeros((8, 8, 3), np.float32), "alpha": alpha, "trimap": trimap, "group": "transparent"}
    row = split.grown_band(teacher, [item], width=1)
    assert torch.all(seen[0] == 0.5)
    eight = round(0.2 * 255) / 255
    assert row["all"]["band_area"] == 1.0
    assert row["all"]["background_mean_prediction"] == pytest.approx(eight)
    assert row["all"]["foreground_mean_prediction"] == pytest.approx(eight)  # a flat matte: no better on the object
    assert row["all"]["median_largest_alpha"] == pytest.approx(eight)
    assert row["all"]["sad"] == pytest.approx((48 * eight + 16 * (1 - eight)) / 1000)
    grown = split.grown_band(teacher, [item], width=0)  # the true band grown by the rule's least, one pixel:
    # rows 1-3, columns 1-6 predicted (10 background, 8 foreground pixels), the rest clamped exact
    assert grown["all"]["sad"] == pytest.approx((10 * eight + 8 * (1 - eight)) / 1000)
    assert grown["all"]["background_mean_prediction"] == pytest.approx(10 * eight / 48)
    assert grown["all"]["foreground_mean_prediction"] == pytest.approx((8 * eight + 8) / 16)  # half in the band, half clamped to 1
