"""`ppid reproduce`: the plan (which runs, in which order, hashes), skipping finished runs,
resuming interrupted ones, and the report built from fixture results."""

import json
import shutil
import time

import pytest

from ppid import PpidError
from ppid.reproduce.paper import TABLE1
from ppid.reproduce.plan import EMPTY_MATTE, RESULT, make_plan, prepare_data, status, trained_steps
from ppid.reproduce.report import collapsed, write_report


def _names(runs):
    return [f"{r.family}/{r.variant}/{r.seed}" for r in runs]


def test_plan_order_table1_first_then_ablations_and_shared_runs():
    runs, settings, _ = make_plan((6, 1, 3, 4), ("indexnet", "gca"), (0, 1), "smoke")
    names = _names(runs)
    assert names[:5] == ["indexnet/teacher/0", "indexnet/baseline/0", "indexnet/ppid/0", "indexnet/baseline/1", "indexnet/ppid/1"]
    assert names[5:10] == ["gca/teacher/0", "gca/baseline/0", "gca/ppid/0", "gca/baseline/1", "gca/ppid/1"]
    # beyond the paper: the IndexNet student from the GCA teacher, once both families' Table 1 is planned
    assert names[10:12] == ["indexnet/ppid_from_gca/0", "indexnet/ppid_from_gca/1"]
    # then each family's ablations, seed by seed; the PPID and CLSD-only students are shared by tables
    assert names[12:18] == [f"indexnet/{v}/0" for v in ("noclsd", "sd", "noald", "ld", "ald_f", "ald_a")]
    assert len(names) == len(set(names)) == 2 * (1 + 2 * 8) + 2
    assert all(r.config["optim"]["iterations"] == settings["iterations"] for r in runs)
    teacher = runs[0]
    assert teacher.config["mode"] == "teacher" and teacher.teacher is None
    ppid = runs[2]
    assert ppid.config["distill"]["teacher"] == f"{teacher.folder}/model_best.safetensors"
    assert ppid.config["data"]["val_root"] == "data/val"  # selection never on the test set
    sd = next(r for r in runs if r.variant == "sd")
    assert (sd.config["distill"]["semantic"], sd.config["distill"]["local"]) == ("sd", "ald")
    ld = next(r for r in runs if r.variant == "ld")
    assert (ld.config["distill"]["semantic"], ld.config["distill"]["local"]) == ("clsd", "ld")
    assert runs[1].config["mode"] == "student" and runs[1].teacher is None


def test_calibration_runs_follow_the_first_familys_table1_seeds():
    from ppid.reproduce.calibrate import with_calibration

    runs, _, data = make_plan((1, 3), ("indexnet", "gca"), (0, 1), "smoke")
    names = _names(with_calibration(runs, data))
    assert names[5:7] == ["indexnet/ppid-softmax/0", "indexnet/ppid-positions/0"]  # after both seeds' pairs
    assert names[7] == "gca/teacher/0"
    assert len(names) == len(runs) + 2


def test_the_ald_calibration_never_chooses_a_reading_that_diverged(tmp_path):
    from ppid.reproduce.calibrate import calibration_runs, write_calibration

    runs, _, data = make_plan((1,), ("indexnet",), (0,), "smoke")
    readings = calibration_runs(runs, data)
    for run, sad in zip(readings, (3.0, 2.0, 4.0)):
        folder = tmp_path / run.folder
        folder.mkdir(parents=True)
        validation = {"event": "validation", "step": 2, "summary": {"results": {"whole": {"all": {"sad": sad}}}}}
        (folder / "log.jsonl").write_text(json.dumps({"step": 1, "alpha": 1.0, "ratio_ald_f": 0.5}) + "\n"
                                          + json.dumps(validation) + "\n")
        (folder / RESULT).write_text(json.dumps({"hash": run.hash}))
    diverged = readings[1]  # the lowest validation SAD before its loss went NaN
    (tmp_path / diverged.folder / RESULT).write_text(json.dumps({"hash": diverged.hash, "diverged": {"step": 5, "error": "x"}}))
    chosen = write_calibration(tmp_path, readings)
    assert chosen == readings[0].config["distill"]["attention_norm"]
    norm = diverged.config["distill"]["attention_norm"]
    assert f"| {norm} | diverged: loss NaN/inf from step 5 |" in (tmp_path / "calibration.md").read_text()


def test_gamma_test_runs_are_the_familys_ppid_students_with_eq18_gamma_scaled():
    from ppid.reproduce.causes import parse_gamma_tests, with_gamma_tests

    runs, _, data = make_plan((1, 3), ("indexnet", "gca"), (0, 1), "smoke")
    planned = with_gamma_tests(runs, data, parse_gamma_tests("gca=6,indexnet=0.17"))
    names = _names(planned)
    # after each family's Table 1 runs, one per seed; the rest of the plan unchanged
    assert names[5:7] == ["indexnet/ppid-gamma0.17/0", "indexnet/ppid-gamma0.17/1"]
    assert names[12:14] == ["gca/ppid-gamma6/0", "gca/ppid-gamma6/1"]
    assert [n for n in names if "gamma" not in n] == _names(runs)
    by_name = dict(zip(names, planned))
    test, ppid = by_name["gca/ppid-gamma6/1"], by_name["gca/ppid/1"]
    assert test.config["distill"]["gamma"] == 6.0 and ppid.config["distill"]["gamma"] == 1.0
    assert test.teacher == ppid.teacher == "runs/gca/teacher/seed0"
    assert {k: v for k, v in test.config.items() if k not in ("name", "distill")} == \
        {k: v for k, v in ppid.config.items() if k not in ("name", "distill")}
    assert {k: v for k, v in test.config["distill"].items() if k != "gamma"} == \
        {k: v for k, v in ppid.config["distill"].items() if k != "gamma"}
    assert test.hash != ppid.hash and len({r.hash for r in planned}) == len(planned)
    assert parse_gamma_tests(None) == {} and with_gamma_tests(runs, data, {}) == runs
    for bad in ("gca", "gca=0", "gca=-1", "gca=x", "modnet=2"):
        with pytest.raises(PpidError, match="FAMILY=GAMMA"):
            parse_gamma_tests(bad)
    # a family named twice gets both gammas, the first one's seeds first; the runs already
    # planned keep their place and hash, so adding a gamma does not restart a plan
    assert parse_gamma_tests("gca=6, gca=3") == {"gca": [6.0, 3.0]}
    with pytest.raises(PpidError, match="gca=6 twice"):
        parse_gamma_tests("gca=6,gca=6.0")
    two = with_gamma_tests(runs, data, parse_gamma_tests("gca=6,indexnet=0.17,gca=3"))
    assert _names(two)[12:16] == ["gca/ppid-gamma6/0", "gca/ppid-gamma6/1", "gca/ppid-gamma3/0", "gca/ppid-gamma3/1"]
    assert [r for r in two if r.variant != "ppid-gamma3"] == planned
    assert dict(zip(_names(two), two))["gca/ppid-gamma3/1"].config["distill"]["gamma"] == 3.0


def test_cross_family_student_distils_from_the_other_familys_teacher():
    runs, _, _ = make_plan((1,), ("gca", "indexnet"), (0,), "smoke")
    by_name = dict(zip(_names(runs), runs))
    cross, same = by_name["indexnet/ppid_from_gca/0"], by_name["indexnet/ppid/0"]
    assert _names(runs)[-1] == "indexnet/ppid_from_gca/0"  # after both families' Table 1 runs
    assert cross.teacher == "runs/gca/teacher/seed0" and cross.teacher_family == "gca"
    assert cross.config["distill"]["teacher"] == "runs/gca/teacher/seed0/model_best.safetensors"
    assert cross.config["distill"]["cross_family"] is True and same.config["distill"]["cross_family"] is False
    # the same student and weights as the same-family PPID run otherwise; another teacher, another hash
    assert {k: v for k, v in cross.config["distill"].items() if k not in ("teacher", "cross_family")} == \
        {k: v for k, v in same.config["distill"].items() if k not in ("teacher", "cross_family")}
    assert cross.hash != same.hash
    for tables, families in (((1,), ("indexnet",)), ((3,), ("indexnet", "gca")), ((1,), ("gca", "dim"))):
        planned, _, _ = make_plan(tables, families, (0,), "smoke")
        assert not any(r.variant.startswith("ppid_from_") for r in planned)


def test_table5_weights_per_family():
    runs, _, _ = make_plan((1,), ("dim", "gca"), (0,), "smoke")
    weights = {r.family: (r.config["distill"]["alpha"], r.config["distill"]["beta"]) for r in runs if r.variant == "ppid"}
    assert weights == {"dim": (0.02, 0.002), "gca": (0.002, 0.0002)}


def test_hashes_follow_config_data_and_teacher():
    a, _, _ = make_plan((1,), ("indexnet",), (0, 1), "smoke")
    b, _, _ = make_plan((1,), ("indexnet",), (0, 1), "smoke", iterations=7)
    c, _, _ = make_plan((1,), ("indexnet",), (0, 1), "smoke", synth_version=1)
    assert len({r.hash for r in a}) == len(a)  # seeds and variants differ
    assert not {r.hash for r in a} & {r.hash for r in b}
    assert not {r.hash for r in a} & {r.hash for r in c}
    again, _, _ = make_plan((1, 3), ("indexnet",), (0, 1, 2), "smoke")  # more tables and seeds: same runs, same hashes
    assert {r.hash for r in a} <= {r.hash for r in again}


def test_bad_arguments_are_clear_errors():
    with pytest.raises(PpidError, match="unknown table"):
        make_plan((2,), ("indexnet",), (0,), "smoke")
    with pytest.raises(PpidError, match="unknown family"):
        make_plan((1,), ("modnet",), (0,), "smoke")
    with pytest.raises(PpidError, match="unknown budget"):
        make_plan((1,), ("indexnet",), (0,), "huge")


def test_status_done_only_with_the_same_hash_and_resume_with_a_matching_checkpoint(tmp_path):
    runs, _, _ = make_plan((1,), ("indexnet",), (0,), "smoke")
    run = runs[1]
    folder = tmp_path / run.folder
    assert status(run, tmp_path) == "pending"
    folder.mkdir(parents=True)
    (folder / "checkpoint_last.pt").write_bytes(b"x")
    (folder / "checkpoint_hash.txt").write_text("another\n")
    assert status(run, tmp_path) == "pending"
    (folder / "checkpoint_hash.txt").write_text(run.hash + "\n")
    assert status(run, tmp_path) == "resume"
    (folder / RESULT).write_text(json.dumps({"hash": "stale"}))
    assert status(run, tmp_path) == "resume"
    (folder / RESULT).write_text(json.dumps({"hash": run.hash}))
    assert status(run, tmp_path) == "done"


# -- report from fixture results ------------------------------------------------------------------
SAD = {  # (variant, seed) -> whole-image SAD per group (transparent, non-transparent); all = mean
    ("teacher", 0): (2.0, 1.0),
    ("baseline", 0): (10.0, 6.0), ("baseline", 1): (12.0, 5.0), ("baseline", 2): (11.0, 7.0),
    ("ppid", 0): (6.0, 5.0), ("ppid", 1): (8.0, 6.0), ("ppid", 2): (7.0, 4.0),
}


def _fixture_result(run, t, n):
    groups = {"transparent": t, "non-transparent": n, "all": (t + n) / 2}
    metrics = {g: {"count": 1, "sad": v, "mse": v / 1000, "grad": 2 * v, "conn": v} for g, v in groups.items()}
    return {
        "hash": run.hash, "family": run.family, "variant": run.variant, "seed": run.seed,
        "selection": "val-best (step 40, val SAD 1.0)", "device": "cpu", "config": run.config,
        "test": {"results": {"whole": metrics, "transition": metrics}},
    }


def test_report_states_the_empty_matte_floor_and_keeps_it_when_the_data_is_gone(tmp_path):
    """The report gives what alpha 0 everywhere scores on the plan's test set (SAD = the sum of the
    true alpha / 1000 per image), and writes it beside itself, so a report written on a machine
    without the data still has it."""
    import numpy as np

    from ppid.data.datasets import CompositeTestSet
    from ppid.data.synth import synthesize
    from ppid.data.testset import build_testset

    synthesize(tmp_path / "src", 2, seed=1, size=(64, 64), workers=1)
    build_testset(tmp_path / "src" / "fg", tmp_path / "src" / "alpha", tmp_path / "src" / "bg", 1, tmp_path / "data" / "test",
                  split=tmp_path / "src" / "split.txt")
    truth = [np.round(it["alpha"] * 255).sum() / 255 / 1000 for it in CompositeTestSet(tmp_path / "data" / "test")]
    runs, settings, data = make_plan((1,), ("indexnet",), (0, 1, 2), "smoke")
    for run in runs:
        (tmp_path / run.folder).mkdir(parents=True)
        (tmp_path / run.folder / RESULT).write_text(json.dumps(_fixture_result(run, *SAD[(run.variant, run.seed)])))
    doc = write_report(tmp_path, runs, settings, data, (1,), ("indexnet",), (0, 1, 2), "smoke")
    assert doc["empty_matte"]["whole"]["all"]["sad"] == pytest.approx(np.mean(truth))
    md = (tmp_path / "tables.md").read_text()
    assert "## The floor: an empty matte" in md and f"SAD {doc['empty_matte']['whole']['transparent']['sad']:.2f} / " in md
    # every fixture row scores several SAD on 64 px images, far above this floor
    assert "worse than predicting nothing: teacher (trimap), baseline, PPID (CLSD + ALD)." in md
    shutil.rmtree(tmp_path / "data")
    again = write_report(tmp_path, runs, settings, data, (1,), ("indexnet",), (0, 1, 2), "smoke")
    assert again["empty_matte"] == doc["empty_matte"] and (tmp_path / "tables.md").read_text() == md
    # a floor measured on other data is not this plan's: without the data there is none to give
    other = dict(data, n_test=data["n_test"] + 1)
    changed = write_report(tmp_path, runs, settings, other, (1,), ("indexnet",), (0, 1, 2), "smoke")
    assert "empty_matte" not in changed and "## The floor" not in (tmp_path / "tables.md").read_text()


def test_rebuilding_the_same_data_keeps_the_floor(tmp_path):
    """A fresh machine rebuilds the plan's seeded data; the committed floor of that spec stays."""
    runs, settings, data = make_plan((1,), ("indexnet",), (0,), "smoke")
    floor = {"data": data, "results": {"whole": {"all": {"sad": 1.0}}}}
    (tmp_path / EMPTY_MATTE).write_text(json.dumps(floor))
    prepare_data(tmp_path, settings, data, workers=1)
    assert (tmp_path / "data" / "test").is_dir()
    assert json.loads((tmp_path / EMPTY_MATTE).read_text()) == json.loads(json.dumps(floor))


def test_report_means_paired_wins_gap_and_paper_values(tmp_path):
    runs, settings, data = make_plan((1,), ("indexnet",), (0, 1, 2), "smoke")
    for run in runs:
        (tmp_path / run.folder).mkdir(parents=True)
        (tmp_path / run.folder / RESULT).write_text(json.dumps(_fixture_result(run, *SAD[(run.variant, run.seed)])))
    doc = write_report(tmp_path, runs, settings, data, (1,), ("indexnet",), (0, 1, 2), "smoke")
    fam = doc["tables"]["1"]["families"]["indexnet"]
    base = fam["rows"]["baseline"]["stats"]["whole"]["transparent"]["sad"]
    assert base["mean"] == pytest.approx(11.0) and base["std"] == pytest.approx(1.0) and base["n"] == 3
    paired = fam["paired"]["ppid - baseline"]
    assert paired["transparent"]["diffs"] == [-4.0, -4.0, -4.0] and paired["transparent"]["wins"] == 3
    assert paired["non-transparent"]["wins"] == 2  # seed 1: 6 vs 5 is a loss
    # 95% interval of the mean difference over 3 seeds: -1 +- t(0.975, 2) * 2 / sqrt(3); none without spread
    assert paired["non-transparent"]["ci95"] == pytest.approx([-1 - 4.302653 * 2 / 3 ** 0.5, -1 + 4.302653 * 2 / 3 ** 0.5])
    assert paired["transparent"]["ci95"] == pytest.approx([-4.0, -4.0])
    # gap closed on the transparent group: (11 - 7) / (11 - 2)
    assert fam["gap_closed"]["transparent"]["ours"] == pytest.approx(4 / 9)
    # the gain's interval over the gap: non-transparent, gain 1 +- 4.97 over a gap of 6 - 1
    half = 4.302653 * 2 / 3 ** 0.5
    assert fam["gap_closed"]["non-transparent"]["ci95"] == pytest.approx([(1 - half) / 5, (1 + half) / 5])
    paper = TABLE1["indexnet"]
    expected = (paper["baseline"]["all"]["sad"] - paper["ppid"]["all"]["sad"]) / (paper["baseline"]["all"]["sad"] - paper["teacher"]["all"]["sad"])
    assert fam["gap_closed"]["all"]["paper"] == pytest.approx(expected)
    assert fam["order"]["holds"] is True and fam["order"]["seeds"] == [0, 1, 2]
    assert fam["rows"]["ppid"]["selection"] == ["val-best"]
    md = (tmp_path / "tables.md").read_text()
    assert "72.68" in md and "11.00 ± 1.00" in md and "Gap closed (all)" in md
    assert "non-transparent -1.00 (wins 2/3, 95% CI -5.97 to +3.97)" in md
    assert doc["protocol"]["selection"].startswith("val-best") and doc["protocol"]["seeds"] == [0, 1, 2]
    assert doc["protocol"]["network_revisions"] == {"indexnet": 2}
    assert (tmp_path / "table1.png").stat().st_size > 1000
    assert json.loads((tmp_path / "tables.json").read_text())["runs_done"] == 7


def test_report_says_when_rows_trained_with_another_precision_or_teacher(tmp_path):
    """A plan resumed on another machine mixes precisions and teacher retrains: the table names
    the runs of each; rows that agree get no such line."""
    runs, settings, data = make_plan((1,), ("indexnet",), (0, 1, 2), "smoke")

    def write(precision, teacher):
        for run in runs:
            result = _fixture_result(run, *SAD[(run.variant, run.seed)])
            result["precision"] = precision(run)
            if run.config["mode"] == "ppid":
                result["teacher_sha256"] = teacher(run)
            (tmp_path / run.folder).mkdir(parents=True, exist_ok=True)
            (tmp_path / run.folder / RESULT).write_text(json.dumps(result))
        return write_report(tmp_path, runs, settings, data, (1,), ("indexnet",), (0, 1, 2), "smoke")

    doc = write(lambda run: "bfloat16", lambda run: "a" * 64)
    assert doc["tables"]["1"]["families"]["indexnet"]["provenance"] == {}
    assert "Not like for like" not in (tmp_path / "tables.md").read_text()

    doc = write(lambda run: "float32" if (run.variant, run.seed) == ("ppid", 0) else "bfloat16",
                lambda run: ("b" if run.seed == 0 else "a") * 64)
    provenance = doc["tables"]["1"]["families"]["indexnet"]["provenance"]
    assert provenance["precision"]["float32"] == [["ppid", 0]]
    assert ["teacher", 0] in provenance["precision"]["bfloat16"] and len(provenance["precision"]["bfloat16"]) == 6
    assert provenance["teacher"] == {"indexnet bbbbbbbb": [["ppid", 0]], "indexnet aaaaaaaa": [["ppid", 1], ["ppid", 2]]}
    md = (tmp_path / "tables.md").read_text()
    assert "Not like for like" in md and "precision float32: PPID (CLSD + ALD) seed 0 |" in md
    assert "teacher indexnet aaaaaaaa: PPID (CLSD + ALD) seeds 1, 2." in md

    # a cross-family row's other teacher is by design, not a difference
    from ppid.reproduce.report import _provenance

    results = {("indexnet", "ppid", 0): {"precision": "float32", "teacher_sha256": "a" * 64},
               ("indexnet", "ppid_from_gca", 0): {"precision": "float32", "teacher_sha256": "c" * 64}}
    assert _provenance("indexnet", results, {"ppid": {"seeds": [0]}, "ppid_from_gca": {"seeds": [0]}}) == {}


def test_paper_order_compares_rows_over_the_seeds_they_share():
    """PPID has three seeds, the ablation rows one: the order reads seed 0 of each, not a
    three-seed mean against one seed."""
    from ppid.reproduce.report import _order

    def result(sad):
        return {"test": {"results": {"transition": {"all": {"sad": sad}}}}}

    sads = {("ppid", 0): 4.2, ("ppid", 1): 3.0, ("ppid", 2): 3.0, ("ld", 0): 4.1, ("noald", 0): 4.15}
    results = {("indexnet", v, s): result(x) for (v, s), x in sads.items()}
    rows = {v: {"seeds": sorted(s for (w, s) in sads if w == v)} for v in ("ppid", "ld", "noald")}
    order = _order(4, "indexnet", results, rows)
    assert order["seeds"] == [0] and order["means"] == [4.2, 4.1, 4.15] and order["holds"] is False
    rows["ld"]["seeds"] = []  # a row without a healthy seed: no verdict
    assert _order(4, "indexnet", results, rows)["holds"] is None


def test_report_gives_the_recalibrated_students_where_runs_have_them(tmp_path):
    """Beyond the paper: the students' SAD with BatchNorm statistics recomputed (`test_recalibrated`),
    means and paired differences over the runs that carry it; none, no line."""
    runs, settings, data = make_plan((1,), ("indexnet",), (0, 1, 2), "smoke")
    recal = {("baseline", 0): (6.0, 4.0), ("baseline", 1): (7.0, 5.0), ("ppid", 0): (6.0, 5.0), ("ppid", 1): (5.0, 5.0)}
    for run in runs:
        result = _fixture_result(run, *SAD[(run.variant, run.seed)])
        if (run.variant, run.seed) in recal:
            result["test_recalibrated"] = _fixture_result(run, *recal[(run.variant, run.seed)])["test"]
        (tmp_path / run.folder).mkdir(parents=True)
        (tmp_path / run.folder / RESULT).write_text(json.dumps(result))
    doc = write_report(tmp_path, runs, settings, data, (1,), ("indexnet",), (0, 1, 2), "smoke")
    recalibrated = doc["tables"]["1"]["families"]["indexnet"]["recalibrated"]
    assert recalibrated["rows"]["baseline"]["mean"] == pytest.approx(5.5) and recalibrated["rows"]["ppid"]["n"] == 2
    assert recalibrated["paired"]["ppid - baseline"]["all"]["diffs"] == [0.5, -1.0]
    md = (tmp_path / "tables.md").read_text()
    assert "With BatchNorm statistics recomputed" in md and "ppid - baseline -0.25 (wins 1/2, 95% CI -9.78 to +9.28)" in md
    assert "trained in: not recorded" in md


def test_report_sets_a_gamma_test_beside_its_familys_baseline_and_ppid(tmp_path):
    """The cause test's section: whole-image SAD per row over the seeds, the distillation strength
    (gamma-weighted terms over L_alpha) from each run's log, and the differences against the
    baseline; a plan without gamma runs has no section."""
    from ppid.reproduce.causes import with_gamma_tests

    runs, settings, data = make_plan((1,), ("gca",), (0, 1), "smoke")
    planned = with_gamma_tests(runs, data, {"gca": [6.0]})
    sad = dict(SAD) | {("ppid-gamma6", 0): (5.0, 4.0), ("ppid-gamma6", 1): (9.0, 4.0)}
    for run in planned:
        (tmp_path / run.folder).mkdir(parents=True)
        (tmp_path / run.folder / RESULT).write_text(json.dumps(_fixture_result(run, *sad[(run.variant, run.seed)])))
        if run.config["mode"] == "ppid":  # logged terms are unweighted; the ratios carry gamma
            gamma = run.config["distill"]["gamma"]
            steps = [{"step": 1, "alpha": 2.0, "clsd_same": 1.0, "ratio_clsd_same": gamma * 0.5, "ratio_ald_f": gamma * 0.25},
                     {"event": "skipped_step", "step": 2}, {"step": 2, "alpha": 1.0, "ratio_clsd_same": gamma * 1.25}]
            (tmp_path / run.folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps))
    doc = write_report(tmp_path, planned, settings, data, (1,), ("gca",), (0, 1), "smoke")
    block = doc["cause_tests"]["distillation_strength"]["gca"]
    assert list(block["rows"]) == ["baseline", "ppid", "ppid-gamma6"]
    row = block["rows"]["ppid-gamma6"]
    assert row["gamma"] == 6.0 and row["seeds"] == [0, 1]
    assert row["distill_ratio"]["mean"] == pytest.approx(6.0) and block["rows"]["ppid"]["distill_ratio"]["mean"] == pytest.approx(1.0)
    assert block["rows"]["baseline"]["distill_ratio"] is None
    assert row["sad"]["all"]["mean"] == pytest.approx(5.5)  # (4.5 + 6.5) / 2
    assert block["paired"]["ppid-gamma6 - baseline"]["all"]["diffs"] == [-3.5, -2.0]
    md = (tmp_path / "tables.md").read_text()
    assert "## Cause test: distillation strength" in md and "| PPID, gamma 6 | 2 | 6.00 ± 0.00 |" in md
    assert "ppid-gamma6 - baseline, per seed, whole: transparent -4.00 (wins 2/2, 95% CI" in md
    # the same results without the gamma runs planned: no section
    assert "cause_tests" not in write_report(tmp_path, runs, settings, data, (1,), ("gca",), (0, 1), "smoke")


def test_teacher_seeds_add_teachers_and_their_ppid_students_without_moving_the_plan():
    """--teacher-seeds 0,1: teacher seed 1 and one PPID student per student seed distilled from it,
    right after the family's Table 1 runs; every run planned without it keeps its place and hash
    (a finished plan stays finished)."""
    from ppid.reproduce.teachers import with_teacher_seeds

    runs, settings, data = make_plan((1, 3), ("indexnet", "gca"), (0, 1), "smoke")
    planned = with_teacher_seeds(runs, settings, data, (0, 1))
    names = _names(planned)
    assert names[5:8] == ["indexnet/teacher/1", "indexnet/ppid-teacher1/0", "indexnet/ppid-teacher1/1"]
    assert names[13:16] == ["gca/teacher/1", "gca/ppid-teacher1/0", "gca/ppid-teacher1/1"]
    assert [r for r in planned if r.variant not in ("ppid-teacher1",) and (r.variant, r.seed) != ("teacher", 1)] == runs
    by_name = dict(zip(names, planned))
    teacher1, student = by_name["indexnet/teacher/1"], by_name["indexnet/ppid-teacher1/1"]
    assert teacher1.config["train"]["seed"] == 1 and teacher1.folder == "runs/indexnet/teacher/seed1"
    assert student.teacher == teacher1.folder and student.config["distill"]["teacher"] == f"{teacher1.folder}/model_best.safetensors"
    ppid = by_name["indexnet/ppid/1"]  # same config but the teacher: another hash
    assert {k: v for k, v in student.config.items() if k not in ("distill", "name")} == \
        {k: v for k, v in ppid.config.items() if k not in ("distill", "name")}
    assert student.hash != ppid.hash and teacher1.hash != by_name["indexnet/teacher/0"].hash
    assert with_teacher_seeds(runs, settings, data, (0,)) == runs


def test_one_student_per_teacher_rotates_the_student_seed_and_keeps_every_other_run():
    """A grid of teachers (experiments/gpu_table1_parallel.sh ONE_STUDENT=1): teacher T keeps only
    the Table 1 PPID student of seed SEEDS[T mod len(SEEDS)], so the teachers share every
    baseline; teachers, baselines and the ablation rows stay."""
    from ppid.reproduce.teachers import one_student_per_teacher, with_teacher_seeds

    runs, settings, data = make_plan((1, 3), ("indexnet",), (0, 1, 2), "smoke")
    planned = with_teacher_seeds(runs, settings, data, (0, 1, 2, 3))
    dropped = {"indexnet/ppid/1", "indexnet/ppid/2", "indexnet/ppid-teacher1/0", "indexnet/ppid-teacher1/2",
               "indexnet/ppid-teacher2/0", "indexnet/ppid-teacher2/1", "indexnet/ppid-teacher3/1", "indexnet/ppid-teacher3/2"}
    assert _names(one_student_per_teacher(planned, (0, 1, 2), (0, 1, 2, 3))) == [n for n in _names(planned) if n not in dropped]
    # the rotation runs over the seeds as listed, not over their values
    runs, settings, data = make_plan((1,), ("indexnet",), (1, 2), "smoke")
    kept = one_student_per_teacher(with_teacher_seeds(runs, settings, data, (0, 1)), (1, 2), (0, 1))
    assert [n for n in _names(kept) if "/ppid" in n] == ["indexnet/ppid/1", "indexnet/ppid-teacher1/2"]


def test_variance_components_split_a_teachers_spread_from_its_students():
    from ppid.reproduce.report import variance_components

    # teacher means 2 and 5 (variance 4.5); within: only the first teacher has two pairs (1 and 3)
    parts = variance_components([[1.0, 3.0], [5.0]])
    assert parts["within_std"] == pytest.approx(2 ** 0.5) and parts["within_df"] == 1
    assert parts["between_std"] == pytest.approx((4.5 - 2 * (1 / 2 + 1) / 2) ** 0.5)
    # one pair per teacher: nothing tells the two apart
    assert variance_components([[1.0], [2.0]]) == {"within_std": None, "between_std": None, "within_df": 0}
    # students spread more than their teachers' means: the teachers' part is floored at 0
    assert variance_components([[0.0, 4.0], [1.0, 3.0]])["between_std"] == 0.0


def test_report_gives_ppids_gain_per_teacher_and_over_teachers(tmp_path):
    from ppid.reproduce.teachers import with_teacher_seeds

    runs, settings, data = make_plan((1,), ("indexnet",), (0, 1, 2), "smoke")
    planned = with_teacher_seeds(runs, settings, data, (0, 1))
    sad = dict(SAD) | {("teacher", 1): (2.0, 2.0), ("ppid-teacher1", 0): (10.0, 6.0),
                       ("ppid-teacher1", 1): (13.0, 6.0), ("ppid-teacher1", 2): (10.0, 6.0)}
    for run in planned:
        (tmp_path / run.folder).mkdir(parents=True)
        (tmp_path / run.folder / RESULT).write_text(json.dumps(_fixture_result(run, *sad[(run.variant, run.seed)])))
    doc = write_report(tmp_path, planned, settings, data, (1,), ("indexnet",), (0, 1, 2), "smoke", teacher_seeds=(0, 1))
    block = doc["teacher_seeds"]["indexnet"]
    # teacher 0: PPID - baseline, all = [-2.5, -1.5, -3.5]; teacher 1: [0, +1, -1]
    assert block["teachers"][0]["paired"]["all"]["diffs"] == [-2.5, -1.5, -3.5]
    assert block["teachers"][1]["paired"]["all"]["diffs"] == [0.0, 1.0, -1.0]
    assert block["teachers"][1]["paired_transition"]["diffs"] == [0.0, 1.0, -1.0]  # the fixture's regions agree
    assert block["teachers"][1]["gap_closed"] == pytest.approx(0.0)  # baseline mean 8.5, PPID 8.5, teacher 2
    over = block["over_teachers"]
    assert over["mean"] == pytest.approx(-1.25) and over["std"] == pytest.approx(2.5 / 2 ** 0.5)
    assert over["teachers"] == 2 and (over["pairs_won"], over["pairs"]) == (4, 6)
    # within a teacher both sets of pairs spread by 1; the means' variance 3.125 less 1 x 1/3 is the teachers'
    assert over["within_std"] == pytest.approx(1.0) and over["within_df"] == 4
    assert over["between_std"] == pytest.approx((3.125 - 1 / 3) ** 0.5)
    assert doc["protocol"]["teacher_seeds"] == [0, 1]
    # Table 1 itself keeps the plan's teacher: its rows and pairs are teacher seed 0's
    assert doc["tables"]["1"]["families"]["indexnet"]["paired"]["ppid - baseline"]["all"]["diffs"] == [-2.5, -1.5, -3.5]
    md = (tmp_path / "tables.md").read_text()
    assert "## Table 1 over teacher seeds" in md and "pairs won 4/6. Spread of a pair's difference within a teacher 1.00 (4 df), of the teachers' own gains 1.67" in md
    assert "| 1 | 2.00 | 8.50 ± 0.87 (3) | +0.00 (wins 1/3, 95% CI" in md
    assert block["teachers"][1]["distill_ratio"] is None and md.count(" | - |\n") >= 2  # no logs: no strength
    # with logs: each student's strength is its mean over the logged steps of the ratio_* terms' sum
    for seed, ratios in ((0, (2.0, 4.0)), (1, (6.0, 6.0)), (2, (3.0, 5.0))):
        log = [{"step": 50 * (i + 1), "ratio_clsd_same": 0.5, "ratio_clsd_cross": r - 0.5} for i, r in enumerate(ratios)]
        (tmp_path / f"runs/indexnet/ppid-teacher1/seed{seed}/log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in log))
    block = write_report(tmp_path, planned, settings, data, (1,), ("indexnet",), (0, 1, 2), "smoke", teacher_seeds=(0, 1))["teacher_seeds"]["indexnet"]
    assert block["teachers"][1]["distill_ratio"]["values"] == pytest.approx([3.0, 6.0, 4.0])
    assert block["teachers"][1]["gap_closed"] == pytest.approx(0.0) and " | 0% | 4.33 |" in (tmp_path / "tables.md").read_text()
    assert block["precision"] == {} and "Not like for like" not in md  # one precision: no line
    # teacher 1's students trained in float32 beside bf16 baselines: the section says which pairs mix
    for seed in (0, 1, 2):
        path = tmp_path / f"runs/indexnet/ppid-teacher1/seed{seed}" / RESULT
        path.write_text(json.dumps(json.loads(path.read_text()) | {"precision": "float32"}))
    block = write_report(tmp_path, planned, settings, data, (1,), ("indexnet",), (0, 1, 2), "smoke", teacher_seeds=(0, 1))["teacher_seeds"]["indexnet"]
    assert block["precision"]["float32"] == [["ppid-teacher1", 0], ["ppid-teacher1", 1], ["ppid-teacher1", 2]]
    assert len(block["precision"]["not recorded"]) == 6  # the baselines and teacher 0's students
    md = (tmp_path / "tables.md").read_text()
    assert "Not like for like" in md.split("## Table 1 over teacher seeds")[1]
    assert "precision float32: ppid-teacher1 seeds 0, 1, 2" in md
    # a second teacher without students yet: its row, but no line over teachers
    (tmp_path / "runs/indexnet/ppid-teacher1/seed0" / RESULT).unlink()
    (tmp_path / "runs/indexnet/ppid-teacher1/seed1" / RESULT).unlink()
    (tmp_path / "runs/indexnet/ppid-teacher1/seed2" / RESULT).unlink()
    write_report(tmp_path, planned, settings, data, (1,), ("indexnet",), (0, 1, 2), "smoke", teacher_seeds=(0, 1))
    md = (tmp_path / "tables.md").read_text()
    assert "| 1 | 2.00 | - | - | - | - | - | - |" in md and "pairs won" not in md
    # one teacher only: no section
    assert "teacher_seeds" not in write_report(tmp_path, runs, settings, data, (1,), ("indexnet",), (0, 1, 2), "smoke")


def test_report_keeps_a_retraining_teachers_record(tmp_path):
    """While a teacher retrains (a fresh machine: weights are not committed), its folder holds the
    new run's partial files and the committed record waits beside the locks: the report shows the
    record, not the half-written retrain."""
    from ppid.reproduce.plan import record_stash

    runs, settings, data = make_plan((1,), ("indexnet",), (0,), "smoke")
    validation = {"event": "validation", "step": 40, "summary": {"results": {"whole": {"all": {"sad": 2.5}}}}}
    for run in runs:
        (tmp_path / run.folder).mkdir(parents=True)
        (tmp_path / run.folder / RESULT).write_text(json.dumps(_fixture_result(run, *SAD[(run.variant, run.seed)])))
        (tmp_path / run.folder / "log.jsonl").write_text(json.dumps(validation) + "\n")
    teacher = tmp_path / runs[0].folder
    stash = record_stash(tmp_path, runs[0].folder)
    stash.parent.mkdir(parents=True)
    stash.write_text(json.dumps({name: (teacher / name).read_text() for name in (RESULT, "log.jsonl")}))
    (teacher / RESULT).unlink()
    partial = dict(validation, step=20, summary={"results": {"whole": {"all": {"sad": 9.0}}}})
    (teacher / "log.jsonl").write_text(json.dumps(partial) + "\n")
    doc = write_report(tmp_path, runs, settings, data, (1,), ("indexnet",), (0,), "smoke")
    assert doc["runs_done"] == 3
    assert doc["tables"]["1"]["families"]["indexnet"]["rows"]["teacher"]["stats"]["whole"]["all"]["sad"]["mean"] == 1.5
    assert doc["validation_curves"]["indexnet"]["teacher"][0] == [(40, 2.5)]
    stash.unlink()  # no record kept, no result in the folder: the teacher is not finished
    assert write_report(tmp_path, runs, settings, data, (1,), ("indexnet",), (0,), "smoke")["runs_done"] == 2


def test_report_lists_a_collapsed_run_apart_and_leaves_it_out_of_means_pairs_and_gap(tmp_path):
    runs, settings, data = make_plan((1,), ("indexnet",), (0, 1, 2), "smoke")
    for run in runs:
        result = _fixture_result(run, *SAD[(run.variant, run.seed)])
        result["test"] |= {"count": 10, "flat_predictions": 3}  # some flat images: healthy
        if (run.variant, run.seed) == ("ppid", 1):
            result["test"] |= {"flat_predictions": 10}  # every image: a dead alpha head
        (tmp_path / run.folder).mkdir(parents=True)
        (tmp_path / run.folder / RESULT).write_text(json.dumps(result))
    doc = write_report(tmp_path, runs, settings, data, (1,), ("indexnet",), (0, 1, 2), "smoke")
    fam = doc["tables"]["1"]["families"]["indexnet"]
    ppid = fam["rows"]["ppid"]
    assert ppid["seeds"] == [0, 2] and list(ppid["collapsed"]) == [1]
    assert ppid["stats"]["whole"]["transparent"]["sad"]["mean"] == pytest.approx(6.5)  # seeds 0 and 2
    assert fam["paired"]["ppid - baseline"]["transparent"]["n"] == 2
    # the gap pairs seeds: the baseline mean over seeds 0 and 2 (10.5), not all three (11)
    assert fam["gap_closed"]["transparent"]["ours"] == pytest.approx((10.5 - 6.5) / (10.5 - 2))
    assert fam["gap_closed"]["transparent"]["seeds"] == [0, 2]
    md = (tmp_path / "tables.md").read_text()
    assert "| 2 (+1 collapsed) |" in md and "Collapsed (a flat alpha on every test image" in md
    assert "PPID (CLSD + ALD) seed 1 (whole SAD 7.00)" in md
    assert "Gap closed (transparent): ours 47% (seeds 0, 2, paired, 95% CI" in md


def test_collapsed_reads_the_flat_count_and_falls_back_on_the_one_value_count():
    assert collapsed({"test": {"count": 4, "flat_predictions": 4, "constant_predictions": 0}})
    assert not collapsed({"test": {"count": 4, "flat_predictions": 3}})
    assert collapsed({"test": {"count": 4, "constant_predictions": 4}})  # evaluated before the flat count
    assert not collapsed({"test": {"count": 4, "constant_predictions": 3}})
    assert not collapsed({"test": {"count": 4}})  # before either: healthy until re-evaluated


def _val_record(step, sad):
    return {"event": "validation", "step": step, "summary": {"results": {"whole": {"all": {"sad": sad}}}}}


def test_report_draws_table1_validation_curves_from_the_logs(tmp_path):
    """The curves show whether the schedule was long enough: per row and seed, the validation SAD
    at each validation step (a resumed run's repeated step counts once, its last record)."""
    runs, settings, data = make_plan((1,), ("indexnet",), (0, 1), "smoke")
    logs = {("teacher", 0): [(10, 3.0), (20, 2.5)], ("baseline", 0): [(10, 12.0), (20, 9.0)],
            ("baseline", 1): [(10, 14.0), (20, 11.0), (20, 10.0)], ("ppid", 0): [(10, 8.0), (20, 7.5)]}
    for run in runs:
        folder = tmp_path / run.folder
        folder.mkdir(parents=True)
        if (run.variant, run.seed) in logs:  # ppid seed 1 has not finished: no result, no curve
            (folder / RESULT).write_text(json.dumps(_fixture_result(run, 1.0, 1.0)))
            records = [{"step": 1, "alpha": 0.5}] + [_val_record(*p) for p in logs[(run.variant, run.seed)]]
            (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    doc = write_report(tmp_path, runs, settings, data, (1,), ("indexnet",), (0, 1), "smoke")
    curves = json.loads((tmp_path / "tables.json").read_text())["validation_curves"]["indexnet"]
    assert curves["baseline"] == {"0": [[10, 12.0], [20, 9.0]], "1": [[10, 14.0], [20, 10.0]]}
    assert list(curves["ppid"]) == ["0"] and doc["validation_curves"]["indexnet"]["teacher"][0] == [(10, 3.0), (20, 2.5)]
    md = (tmp_path / "tables.md").read_text()
    assert "| baseline | 2 | 13.00 | 9.50 | -3.00 / -4.00 |" in md
    assert "| PPID (CLSD + ALD) | 1 | 8.00 | 7.50 | -0.50 |" in md
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_report_ignores_results_of_another_config(tmp_path):
    runs, settings, data = make_plan((1,), ("indexnet",), (0,), "smoke")
    run = runs[1]
    (tmp_path / run.folder).mkdir(parents=True)
    stale = _fixture_result(run, 1.0, 1.0) | {"hash": "0" * 16}
    (tmp_path / run.folder / RESULT).write_text(json.dumps(stale))
    doc = write_report(tmp_path, runs, settings, data, (1,), ("indexnet",), (0,), "smoke")
    assert doc["runs_done"] == 0 and doc["tables"]["1"]["families"] == {}


def test_hash_ignores_logging_and_keys_added_later_at_their_default():
    import ppid.reproduce.plan as plan

    runs, _, _ = make_plan((1,), ("indexnet",), (0,), "smoke")
    cfg, data = runs[1].config, {"synth_version": 2}
    base = plan.run_hash(cfg, data, None)
    louder = json.loads(json.dumps(cfg))
    louder["train"]["log_every"] = 1
    assert plan.run_hash(louder, data, None) == base
    newer = json.loads(json.dumps(cfg))
    newer["train"]["compile"] = False
    assert plan.run_hash(newer, data, None) == base
    newer["train"]["compile"] = True
    assert plan.run_hash(newer, data, None) != base
    assert plan.run_hash(cfg, data, "teacher-a") != plan.run_hash(cfg, data, "teacher-b")


def test_a_network_revision_changes_its_familys_hashes_only(monkeypatch):
    """A fix that changes what a family's network computes (models/<family>.py REVISION) makes its
    runs new runs; the other families' finished runs stay valid."""
    import ppid.reproduce.plan as plan

    runs, _, _ = make_plan((1,), ("indexnet", "gca"), (0,), "smoke")
    before = {r.folder: r.hash for r in runs}
    real = plan.revision
    monkeypatch.setattr(plan, "revision", lambda family: 3 if family == "gca" else real(family))
    runs, _, _ = make_plan((1,), ("indexnet", "gca"), (0,), "smoke")
    changed = {r.folder for r in runs if r.hash != before[r.folder]}
    assert changed == {r.folder for r in runs if r.family == "gca"} | {"runs/indexnet/ppid_from_gca/seed0"}


# -- end to end, at a tiny budget -------------------------------------------------------------------
TINY = {
    "device": "cpu", "synth_size": 64, "n_train": 4, "n_val": 2, "n_test": 2, "test_per_fg": 1,
    "size": 32, "batch_size": 2, "iterations": 4, "val_every": 2, "ckpt_every": 2, "log_every": 1, "workers": 0,
    "grad_clip": 5.0,
}


@pytest.fixture
def tiny_budget(monkeypatch):
    import ppid.reproduce.plan as plan

    monkeypatch.setitem(plan.BUDGETS, "smoke", dict(TINY))


def _reproduce(out, *extra):
    from ppid.cli import main

    return main(["reproduce", "--budget", "smoke", "--tables", "1", "--families", "indexnet", "--seeds", "0", "--out", str(out), *extra])


def test_reproduce_runs_reports_skips_and_resumes(tiny_budget, tmp_path, monkeypatch, capsys):
    import ppid.train as engine

    out = tmp_path / "exp"
    real_batches = engine.make_batches
    calls = {"n": 0}

    def cut_the_second_run(*args, **kwargs):  # the baseline stops after step 3 (checkpoint at 2)
        calls["n"] += 1
        for i, item in enumerate(real_batches(*args, **kwargs)):
            if calls["n"] == 2 and i == 3:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(engine, "make_batches", cut_the_second_run)
    assert _reproduce(out) == 130  # interrupted, as the CLI reports it
    runs, _, _ = make_plan((1,), ("indexnet",), (0,), "smoke")
    cut = out / runs[1].folder
    assert str(out) not in (cut / "config.json").read_text() + (cut / "log.jsonl").read_text()  # committable as is
    assert [status(r, out) for r in runs] == ["done", "resume", "pending"]
    assert [trained_steps(r, out) for r in runs] == [4, 2, 0]  # what resuming skips (a dry run's estimate too)
    capsys.readouterr()
    assert _reproduce(out, "--status") == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [runs[1].folder, "resume", "2/4"] in rows
    monkeypatch.setattr(engine, "make_batches", real_batches)
    assert _reproduce(out) == 0
    assert [status(r, out) for r in runs] == ["done", "done", "done"]
    log = [json.loads(line) for line in (out / runs[1].folder / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in log if "event" not in r]
    assert steps == [1, 2, 3, 3, 4]  # resumed from the step-2 checkpoint (step 3 logged by both halves)
    result = json.loads((out / runs[1].folder / RESULT).read_text())
    assert result["selection"].startswith("val-best") and result["test"]["count"] == 2
    assert result["config"]["data"]["val_root"] == "data/val"  # relative: no machine paths
    assert str(out) not in (out / runs[1].folder / "config.json").read_text()
    assert isinstance(result["test"]["flat_predictions"], int)
    assert result["test_recalibrated"]["count"] == 2 and result["test_recalibrated"] != result["test"]
    assert json.loads((out / runs[0].folder / RESULT).read_text())["test_recalibrated"] is None  # the teacher
    md = (out / "tables.md").read_text()
    assert "3 of 3 planned runs finished" in md and (out / "table1.png").is_file()
    assert (out / ".gitignore").read_text().count("*.safetensors") == 1

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(engine, "train", must_not_train)
    capsys.readouterr()
    assert _reproduce(out) == 0
    assert "0 runs trained" in capsys.readouterr().out


def test_re_evaluate_adds_the_new_fields_and_keeps_the_rest(tiny_budget, tmp_path, capsys):
    out = tmp_path / "exp"
    assert _reproduce(out, "--only", "runs/indexnet/teacher/seed0,runs/indexnet/baseline/seed0") == 0
    runs, _, _ = make_plan((1,), ("indexnet",), (0,), "smoke")
    teacher, baseline = (out / runs[0].folder / RESULT), (out / runs[1].folder / RESULT)
    before = json.loads(baseline.read_text())
    old = dict(before, test={k: v for k, v in before["test"].items() if k != "flat_predictions"})
    baseline.write_text(json.dumps(old))  # a result from before the field existed
    (out / runs[0].folder / "model_best.safetensors").unlink()  # weights not on this machine
    teacher_before = teacher.read_text()
    capsys.readouterr()
    assert _reproduce(out, "--re-evaluate") == 0
    assert json.loads(baseline.read_text()) == before  # same weights, same evaluation
    assert teacher.read_text() == teacher_before
    assert "kept the results of 1 runs" in capsys.readouterr().out
    (out / runs[1].folder / "model_best.safetensors").write_bytes(b"other weights")
    assert _reproduce(out, "--re-evaluate") == 2
    assert "SHA-256 differs" in capsys.readouterr().err


def test_only_trains_the_named_runs_and_reports_the_whole_plan(tiny_budget, tmp_path, capsys):
    out = tmp_path / "exp"
    assert _reproduce(out, "--only", "runs/indexnet/teacher/seed0,runs/indexnet/nope/seed0") == 2
    assert "--only: runs/indexnet/nope/seed0 not in this plan" in capsys.readouterr().err
    assert _reproduce(out, "--only", "runs/indexnet/teacher/seed0") == 0
    runs, _, _ = make_plan((1,), ("indexnet",), (0,), "smoke")
    assert [status(r, out) for r in runs] == ["done", "pending", "pending"]
    assert "1 of 3 planned runs finished" in (out / "tables.md").read_text()
    capsys.readouterr()
    assert _reproduce(out, "--only", "runs/indexnet/ppid/seed0", "--dry-run") == 0
    text = capsys.readouterr().out
    assert "3 runs, 1 done, 1 to train" in text and "not --only" in text
    assert _reproduce(out, "--status") == 0  # no probe: states only
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["runs/indexnet/teacher/seed0", "done", "-"] in rows and ["runs/indexnet/ppid/seed0", "pending", "-"] in rows
    (out / "runs/indexnet/teacher/seed0/model_best.safetensors").unlink()  # as on a fresh machine
    for flag in ("--dry-run", "--status"):
        assert _reproduce(out, "--only", "runs/indexnet/ppid/seed0", flag) == 0
        text = capsys.readouterr().out
        assert ["runs/indexnet/teacher/seed0", "retrain"] in [line.split()[:2] for line in text.splitlines()]
        assert "3 runs, 1 done, 2 to train (1 of them finished teachers retrained for their weights)" in text
    assert "probe estimate" not in text  # the last one, --status: no probe
    assert _reproduce(out, "--gamma-test", "gca=6", "--report-only") == 2
    assert "--gamma-test names gca, which --families does not plan" in capsys.readouterr().err
    assert _reproduce(out, "--gamma-test", "indexnet=0.5", "--report-only") == 0
    assert "1 of 4 planned runs finished" in (out / "tables.md").read_text()


def test_dry_run_prints_every_run_with_an_estimate_and_trains_nothing(tiny_budget, tmp_path, capsys):
    assert _reproduce(tmp_path / "dry", "--dry-run", "--calibrate-ald") == 0
    text = capsys.readouterr().out
    for folder in ("teacher/seed0", "baseline/seed0", "ppid/seed0", "ppid-softmax/seed0", "ppid-positions/seed0"):
        assert f"runs/indexnet/{folder}" in text
    assert "5 runs, 0 done, 5 to train" in text and " min" in text
    assert not (tmp_path / "dry").exists()


def test_estimate_counts_only_what_a_resumed_run_has_left(monkeypatch):
    import ppid.reproduce.probe as probe

    runs, settings, _ = make_plan((1,), ("indexnet",), (0,), "smoke")
    settings = dict(settings, iterations=100, val_every=25, n_val=2, n_test=3, test_per_fg=2)
    monkeypatch.setattr(probe, "time_training", lambda run, settings, steps: (5.0, 1.0))  # first step, then each
    monkeypatch.setattr(probe, "time_evaluation", lambda family, settings: 0.5)
    student = runs[1].folder
    fresh = probe.estimate(runs[1:2], settings, log=lambda *_: None)[0][student]
    assert fresh == 5.0 + 99 * 1.0 + (4 * 2 + 6) * 0.5  # 4 validations of 2 images, 6 test images
    resumed = probe.estimate(runs[1:2], settings, log=lambda *_: None, trained={student: 50})[0][student]
    assert resumed == 5.0 + 49 * 1.0 + (2 * 2 + 6) * 0.5  # the validations at 75 and 100 are ahead
    finished = probe.estimate(runs[1:2], settings, log=lambda *_: None, trained={student: 100})[0][student]
    assert finished == 6 * 0.5  # trained to the end, not yet tested


def test_a_diverged_student_is_recorded_and_the_plan_goes_on(tiny_budget, tmp_path, monkeypatch, capsys):
    """A student whose loss stays NaN/inf is an outcome of its config: it gets a result.json that
    says so, the report lists it apart, and the plan trains what comes after it (once)."""
    import ppid.config
    import ppid.train as engine

    monkeypatch.setitem(ppid.config.DEFAULTS["train"], "max_nonfinite", 2)
    real_forward = engine.forward_losses

    def nan_with_a_teacher(objective, teacher, batch, amp):  # every distilled student's loss is NaN
        terms, out, teacher_out = real_forward(objective, teacher, batch, amp)
        if teacher is not None:
            terms["total"] = terms["total"] * float("nan")
        return terms, out, teacher_out

    monkeypatch.setattr(engine, "forward_losses", nan_with_a_teacher)
    out = tmp_path / "exp"
    assert _reproduce(out, "--gamma-test", "indexnet=2") == 0  # the gamma run comes after the PPID student
    runs, _, _ = make_plan((1,), ("indexnet",), (0,), "smoke")
    ppid_result = json.loads((out / runs[2].folder / RESULT).read_text())
    assert ppid_result["diverged"]["step"] == 0 and "NaN/inf for 2 steps in a row" in ppid_result["diverged"]["error"]
    assert str(out) not in ppid_result["diverged"]["error"]  # committable: no machine paths
    assert "test" not in ppid_result and status(runs[2], out) == "done"
    text = capsys.readouterr().out
    assert "runs/indexnet/ppid/seed0: diverged (loss NaN/inf from step 0)" in text
    assert "runs/indexnet/ppid-gamma2/seed0: diverged" in text  # trained after it, diverged too
    md = (out / "tables.md").read_text()
    assert "4 of 4 planned runs finished" in md and "`runs/indexnet/ppid/seed0` from step 0" in md
    doc = json.loads((out / "tables.json").read_text())
    assert doc["runs_diverged"] == {"runs/indexnet/ppid/seed0": 0, "runs/indexnet/ppid-gamma2/seed0": 0}
    assert "ppid" not in doc["tables"]["1"]["families"]["indexnet"]["rows"] or \
        not doc["tables"]["1"]["families"]["indexnet"]["rows"]["ppid"]["seeds"]  # no test result in any table
    assert _reproduce(out, "--gamma-test", "indexnet=2") == 0
    assert "0 runs trained" in capsys.readouterr().out  # recorded: not trained again
    assert _reproduce(out, "--gamma-test", "indexnet=2", "--re-evaluate") == 0  # nothing to evaluate there


def test_training_time_is_saved_while_a_run_trains(tiny_budget, tmp_path, monkeypatch):
    """A run killed outright (a session's hard end: no `finally`) keeps the time it trained, so
    result.json's train_wall_s counts every segment of a resumed run."""
    import ppid.reproduce.plan as plan
    import ppid.train as engine

    monkeypatch.setattr(plan, "WALL_CLOCK_EVERY_S", 0.05)
    out = tmp_path / "exp"
    runs, _, _ = make_plan((1,), ("indexnet",), (0,), "smoke")
    seen = []

    def slow_train(cfg, resume=None):
        spent = out / runs[0].folder / "train_wall_s.txt"
        for _ in range(100):
            time.sleep(0.02)
            if spent.is_file():
                seen.append(float(spent.read_text()))
                if seen[-1] > 0.05:
                    break
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "train", slow_train)
    assert _reproduce(out) == 130
    assert seen and seen[-1] > 0.05  # written during training, not only when it stopped
    assert float((out / runs[0].folder / "train_wall_s.txt").read_text()) >= seen[-1]


def test_a_missing_teacher_is_retrained_and_its_record_kept(tiny_budget, tmp_path, capsys):
    """A fresh machine has the committed records but no weights: a student retrains its teacher
    from its seed. The teacher's record stays (earlier students learned from those weights); each
    retrain is listed in retrains.jsonl, saying whether it reproduces the record."""
    out = tmp_path / "exp"
    runs, _, _ = make_plan((1,), ("indexnet",), (0,), "smoke")
    teacher = out / runs[0].folder
    assert _reproduce(out, "--only", runs[0].folder) == 0
    record = {p.name: p.read_bytes() for p in teacher.iterdir() if p.suffix in (".json", ".jsonl", ".txt")}
    assert json.loads(record["result.json"])["precision"] in ("float32", "bfloat16")
    (teacher / "model_best.safetensors").unlink()
    capsys.readouterr()
    assert _reproduce(out, "--only", runs[2].folder) == 0  # the PPID student
    text = capsys.readouterr().out
    assert "teacher weights missing or unfinished; training it from its seed" in text
    assert "the retrained weights reproduce the recorded test results exactly" in text, text
    assert {name: (teacher / name).read_bytes() for name in record} == record  # same bytes: deterministic files
    student = json.loads((out / runs[2].folder / RESULT).read_text())
    assert student["teacher_sha256"] == json.loads(record["result.json"])["weights_sha256"]

    other = json.loads(record["result.json"])
    other["test"]["results"]["whole"]["all"]["sad"] += 1.0  # a record of other weights (another CPU's)
    (teacher / RESULT).write_text(json.dumps(other))
    (teacher / "model_best.safetensors").unlink()
    (out / runs[2].folder / RESULT).unlink()
    assert _reproduce(out, "--only", runs[2].folder) == 0
    assert "do not reproduce the recorded test results" in capsys.readouterr().out
    assert json.loads((teacher / RESULT).read_text()) == other  # kept
    retrains = [json.loads(line) for line in (teacher / "retrains.jsonl").read_text().splitlines()]
    assert [r["reproduces_record"] for r in retrains] == [True, False]
    assert retrains[1]["weights_sha256"] == json.loads((out / runs[2].folder / RESULT).read_text())["teacher_sha256"]


def test_an_interrupted_teacher_retrain_resumes_and_still_keeps_the_record(tiny_budget, tmp_path, monkeypatch):
    """The record waits outside the run folder while the retrain rewrites it: stopped part-way and
    run again, the retrain resumes from its checkpoint and the committed record comes back."""
    import ppid.train as engine

    out = tmp_path / "exp"
    runs, _, _ = make_plan((1,), ("indexnet",), (0,), "smoke")
    teacher = out / runs[0].folder
    assert _reproduce(out, "--only", runs[0].folder) == 0
    record = (teacher / RESULT).read_text()
    (teacher / "model_best.safetensors").unlink()
    real_batches = engine.make_batches

    def stop_after_three(*args, **kwargs):  # the retrain stops after step 3 (checkpoint at 2)
        for i, item in enumerate(real_batches(*args, **kwargs)):
            if i == 3:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(engine, "make_batches", stop_after_three)
    assert _reproduce(out, "--only", runs[2].folder) == 130
    assert not (teacher / RESULT).exists()  # training rewrote the folder; the record waits aside
    monkeypatch.setattr(engine, "make_batches", real_batches)
    assert _reproduce(out, "--only", runs[2].folder) == 0
    assert json.loads((teacher / RESULT).read_text())["test"] == json.loads(record)["test"]
    assert len((teacher / "retrains.jsonl").read_text().splitlines()) == 1
    assert not list((out / ".locks").glob("*.record.json"))


def test_a_run_finished_by_another_process_is_not_trained_again(tiny_budget, tmp_path, monkeypatch):
    """Two `--only` processes that name the same run take turns: the one that waited finds the
    result and returns it."""
    import ppid.reproduce.plan as plan
    import ppid.train as engine

    out = tmp_path / "exp"
    assert _reproduce(out, "--only", "runs/indexnet/teacher/seed0") == 0
    runs, _, _ = make_plan((1,), ("indexnet",), (0,), "smoke")

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(engine, "train", must_not_train)
    by_folder = {run.folder: run for run in runs}
    result = plan.execute(runs[0], out, by_folder, log=lambda *_: None)
    assert result == json.loads((out / runs[0].folder / RESULT).read_text())
    assert (out / ".locks").is_dir() and ".locks/" in (out / ".gitignore").read_text()
