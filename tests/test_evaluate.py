"""`ppid evaluate` and its Python API on small generated folders."""

import csv
import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from ppid import PpidError
from ppid.cli import main
from ppid.data.datasets import read_split
from ppid.evaluate import as_matte, evaluate_arrays, evaluate_folders, format_comparison, format_table
from ppid.io import write_image
from ppid.metrics import compute_metrics

NAMES = ("glass_0", "glass_1", "hair_0", "hair_1")


def matte(seed, shape=(24, 32)):
    rng = np.random.default_rng(seed)
    a = ndimage.gaussian_filter(rng.random(shape), 2)
    a = np.clip((a - a.min()) / (a.max() - a.min()) * 1.6 - 0.3, 0, 1)
    return np.round(a * 255).astype(np.uint8)


def trimap_of(gt):
    tri = np.full(gt.shape, 128, np.uint8)
    tri[gt == 0] = 0
    tri[gt == 255] = 255
    return tri


@pytest.fixture
def testset(tmp_path):
    """pred/, gt/, trimaps/ and split.txt (foreground names only) for four composites."""
    data = {}
    for i, name in enumerate(NAMES):
        gt, pred = matte(i), matte(i + 10)
        data[name] = (pred, gt, trimap_of(gt))
        write_image(tmp_path / "pred" / f"{name}.png", pred)
        write_image(tmp_path / "gt" / f"{name}.png", gt)
        write_image(tmp_path / "trimaps" / f"{name}.png", trimap_of(gt))
    (tmp_path / "split.txt").write_text("# fg group\nglass transparent\nhair non-transparent\n")
    return tmp_path, data


def test_folder_means_per_group_and_region(testset):
    root, data = testset
    rows, summary = evaluate_folders(root / "pred", root / "gt", root / "trimaps", root / "split.txt")
    assert summary["protocol"]["regions"] == ["whole", "transition"]  # default with trimaps: both
    assert summary["protocol"]["clamping"] == "none"
    assert summary["count"] == 4 and summary["groups"] == {"transparent": 2, "non-transparent": 2}
    assert len(rows) == 8
    for region in ("whole", "transition"):
        expected = {n: compute_metrics(*data[n], region=region) for n in NAMES}
        res = summary["results"][region]
        assert list(res) == ["transparent", "non-transparent", "all"]
        for metric in ("sad", "mse", "grad", "conn"):
            assert res["transparent"][metric] == pytest.approx(np.mean([expected[n][metric] for n in NAMES[:2]]))
            assert res["all"][metric] == pytest.approx(np.mean([expected[n][metric] for n in NAMES]))
        assert res["all"]["sad"] > 0
    # Without trimaps the default is the whole image only, and no groups without a split.
    rows, summary = evaluate_folders(root / "pred", root / "gt")
    assert summary["protocol"]["regions"] == ["whole"] and list(summary["results"]["whole"]) == ["all"]
    assert summary["results"]["whole"]["all"]["count"] == 4


def test_sixteen_bit_gt_and_rgba_tif_predictions_read_like_8_bit(testset):
    root, data = testset
    _, reference = evaluate_folders(root / "pred", root / "gt")
    for name, (pred, gt, _) in data.items():
        (root / "gt" / f"{name}.png").unlink()
        Image.fromarray(gt.astype(np.uint16) * 257).save(root / "gt" / f"{name}.png")  # 16-bit PNG
        (root / "pred" / f"{name}.png").unlink()
        rgba = np.dstack([np.full_like(pred, 77)] * 3 + [pred])
        Image.fromarray(rgba, "RGBA").save(root / "pred" / f"{name}.tif")  # alpha in the 4th channel
    _, summary = evaluate_folders(root / "pred", root / "gt")
    assert summary == reference


def test_evaluate_arrays_matches_folders_and_accepts_floats(testset):
    root, data = testset
    rows_f, summary_f = evaluate_folders(root / "pred", root / "gt", root / "trimaps", root / "split.txt", "both")
    groups = read_split(root / "split.txt")
    items = [(n, p / 255.0, g, t / 255.0, groups[n.rsplit("_", 1)[0]]) for n, (p, g, t) in data.items()]
    rows, summary = evaluate_arrays(items, region="both")
    assert summary == summary_f and rows == rows_f


def test_cli_writes_table_csv_and_json(testset, capsys):
    root, _ = testset
    out_csv, out_json = root / "out" / "per_image.csv", root / "out" / "summary.json"
    code = main(["evaluate", "--pred", str(root / "pred"), "--gt", str(root / "gt"), "--trimap", str(root / "trimaps"),
                 "--split", str(root / "split.txt"), "--region", "transition", "--csv", str(out_csv), "--json", str(out_json)])
    assert code == 0
    table = capsys.readouterr().out
    for text in ("Region: transition region (trimap == 128)", "no trimap clamping", "sums / 1000",
                 "SAD", "MSE", "Grad", "Conn", "Transparent", "Non-transparent", "Whole test set"):
        assert text in table
    summary = json.loads(out_json.read_text())
    assert summary["protocol"]["regions"] == ["transition"] and summary["count"] == 4
    with open(out_csv) as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == list(NAMES) and {r["region"] for r in rows} == {"transition"}
    assert rows[0]["group"] == "transparent"
    mean_sad = np.mean([float(r["sad"]) for r in rows])
    assert summary["results"]["transition"]["all"]["sad"] == pytest.approx(mean_sad)
    whole_row = next(line for line in table.splitlines() if line.startswith("Whole test set"))
    assert whole_row.split()[3:5] == ["4", f"{mean_sad:.2f}"]


def test_format_comparison_puts_models_in_rows():
    gt = matte(1)
    good = evaluate_arrays([("a_0", gt, gt, None, "transparent"), ("b_0", gt, gt, None, "non-transparent")])[1]
    bad = evaluate_arrays([("a_0", 255 - gt, gt, None, "transparent")])[1]
    text = format_comparison({"GCA-PPID": good, "GCA": bad})
    lines = text.splitlines()
    assert "Transparent" in lines[1] and "Non-transparent" in lines[1] and "Whole test set" in lines[1]
    gca_ppid, gca = lines[3], lines[4]
    assert gca_ppid.startswith("GCA-PPID") and gca_ppid.split()[1:5] == ["0.00", "0.0000", "0.00", "0.00"]
    assert gca.startswith("GCA ") and gca.split()[5:9] == ["-", "-", "-", "-"]  # no non-transparent images
    assert "Whole test set" in format_table(bad)


def run_cli(capsys, *argv):
    code = main(["evaluate", "--workers", "1", *map(str, argv)])
    err = capsys.readouterr().err
    return code, err


def test_missing_pairs_and_size_mismatch_are_one_line_errors(testset, capsys):
    root, _ = testset
    (root / "pred" / "hair_1.png").rename(root / "pred" / "hair_9.png")
    code, err = run_cli(capsys, "--pred", root / "pred", "--gt", root / "gt")
    assert code == 2 and "no prediction for 'hair_1'" in err and "Traceback" not in err
    assert err.count("\n") == 1
    (root / "pred" / "hair_9.png").rename(root / "pred" / "hair_1.png")

    write_image(root / "pred" / "extra.png", matte(0))
    code, err = run_cli(capsys, "--pred", root / "pred", "--gt", root / "gt")
    assert code == 2 and "no ground truth for the predictions 'extra'" in err
    (root / "pred" / "extra.png").unlink()

    write_image(root / "pred" / "hair_0.png", matte(0, (24, 30)))
    code, err = run_cli(capsys, "--pred", root / "pred", "--gt", root / "gt")
    assert code == 2 and "hair_0.png" in err and "pred is 24x30 but gt is 24x32" in err


def test_unreadable_files_and_bad_trimaps_are_named(testset, capsys):
    root, data = testset
    (root / "gt" / "glass_1.png").write_bytes(b"not a png")
    code, err = run_cli(capsys, "--pred", root / "pred", "--gt", root / "gt")
    assert code == 2 and "glass_1.png: cannot read image" in err and "Traceback" not in err
    write_image(root / "gt" / "glass_1.png", data["glass_1"][1])

    soft = data["hair_0"][2].copy()
    soft[:4, :4] = 60
    write_image(root / "trimaps" / "hair_0.png", soft)
    code, err = run_cli(capsys, "--pred", root / "pred", "--gt", root / "gt", "--trimap", root / "trimaps")
    assert code == 2 and "hair_0.png" in err and "0/128/255" in err

    write_image(root / "trimaps" / "hair_0.png", np.full_like(soft, 255))
    code, err = run_cli(capsys, "--pred", root / "pred", "--gt", root / "gt", "--trimap", root / "trimaps")
    assert code == 2 and "hair_0.png" in err and "transition region is empty" in err
    # The whole-image region does not need unknown pixels.
    code, _ = run_cli(capsys, "--pred", root / "pred", "--gt", root / "gt", "--trimap", root / "trimaps", "--region", "whole")
    assert code == 0


def test_region_and_split_errors(testset, capsys):
    root, _ = testset
    code, err = run_cli(capsys, "--pred", root / "pred", "--gt", root / "gt", "--region", "transition")
    assert code == 2 and "needs trimaps" in err

    (root / "split.txt").write_text("glass transparent\n")
    code, err = run_cli(capsys, "--pred", root / "pred", "--gt", root / "gt", "--split", root / "split.txt")
    assert code == 2 and "split.txt: no group for 'hair_0'" in err

    (root / "split.txt").write_text("glass transparent\nhair\n")
    with pytest.raises(PpidError, match=r"split.txt:2: expected 'NAME group'"):
        read_split(root / "split.txt")
    (root / "split.txt").write_text("glass transparent\nglass non-transparent\n")
    with pytest.raises(PpidError, match=r"split.txt:2: 'glass' is listed in groups"):
        read_split(root / "split.txt")


def test_failed_run_keeps_previous_outputs(testset, capsys):
    root, _ = testset
    out_json = root / "summary.json"
    out_json.write_text("previous")
    (root / "gt" / "glass_0.png").write_bytes(b"broken")
    code, _ = run_cli(capsys, "--pred", root / "pred", "--gt", root / "gt", "--json", out_json)
    assert code == 2 and out_json.read_text() == "previous"


def test_workers_give_the_same_rows_in_the_same_order(testset, capsys):
    root, _ = testset
    outputs = []
    for workers in ("1", "2"):
        out_csv = root / f"rows_{workers}.csv"
        assert main(["evaluate", "--pred", str(root / "pred"), "--gt", str(root / "gt"), "--trimap", str(root / "trimaps"),
                     "--split", str(root / "split.txt"), "--workers", workers, "--csv", str(out_csv)]) == 0
        outputs.append((capsys.readouterr().out.replace(str(out_csv), ""), out_csv.read_text()))
    assert outputs[0] == outputs[1]


def test_an_error_in_a_worker_is_the_one_line_error_of_the_first_bad_file(testset, capsys):
    root, _ = testset
    for name in ("glass_1", "hair_1"):
        (root / "pred" / f"{name}.png").write_bytes(b"not a png")
    code, err = run_cli(capsys, "--pred", root / "pred", "--gt", root / "gt", "--workers", "2")
    errors = [line for line in err.splitlines() if line.startswith("ppid evaluate: error")]  # besides progress lines
    assert code == 2 and len(errors) == 1 and "glass_1.png: cannot read image" in errors[0]
    code, err = run_cli(capsys, "--pred", root / "pred", "--gt", root / "gt", "--workers", "0")
    assert code == 2 and "workers must be at least 1" in err


def test_results_json_names_models_and_data_relative_to_itself(tmp_path, capsys):
    """A results file moves with its experiment folder: no paths of the machine that wrote it."""
    import torch

    from ppid.data.synth import synthesize
    from ppid.data.testset import build_testset
    from ppid.models import build, save_model

    exp = tmp_path / "exp"
    synthesize(exp / "src", 2, seed=1, size=(64, 64), workers=1)
    build_testset(exp / "src" / "fg", exp / "src" / "alpha", exp / "src" / "bg", 1, exp / "data" / "test",
                  split=exp / "src" / "split.txt")
    torch.manual_seed(0)
    save_model(build("indexnet", "student"), exp / "student" / "model_best.safetensors")
    out = exp / "results" / "results.json"
    assert main(["evaluate", "--model", str(exp / "student" / "model_best.safetensors"), "--label", "baseline",
                 "--data", str(exp / "data" / "test"), "--device", "cpu", "--json", str(out)]) == 0
    text = out.read_text()
    saved = json.loads(text)
    assert saved["models"] == {"baseline": "../student/model_best.safetensors"} and saved["data"] == "../data/test"
    assert str(tmp_path) not in text
    assert (out.parent / saved["models"]["baseline"]).resolve() == (exp / "student" / "model_best.safetensors").resolve()


def test_a_collapsed_model_is_counted_and_warned_about(tmp_path, capsys):
    """A dead alpha head predicts one value everywhere, or a few (a one-channel BatchNorm whose weight
    went to ~0): the summary counts such flat images and the CLI warns, so that its SAD is not read
    as the method's."""
    import torch

    from ppid.data.synth import synthesize
    from ppid.data.testset import build_testset
    from ppid.models import build, save_model

    synthesize(tmp_path / "src", 3, seed=1, size=(64, 64), workers=1)
    build_testset(tmp_path / "src" / "fg", tmp_path / "src" / "alpha", tmp_path / "src" / "bg", 1, tmp_path / "test",
                  split=tmp_path / "src" / "split.txt")
    torch.manual_seed(0)
    alive, dead = build("indexnet", "student"), build("indexnet", "student", revision=1)  # 1: ReLU6 head
    with torch.no_grad():
        dead.head[0][1].bias.fill_(-1e3)  # BN shift far below zero: ReLU6 outputs 0 everywhere
    faint = build("dim", "student", revision=1).eval()  # 1: conv 64 -> 1 + BN(1) at the end
    with torch.no_grad():  # the collapsed DIM PPID student's BN weight and bias: alpha 0.17-0.20
        bn = faint.decoder[-1][1]
        bn.weight.fill_(0.009), bn.bias.fill_(-1.49), bn.running_var.fill_(1e-3)  # var: the conv's scale
        levels = as_matte(faint(torch.rand(1, 3, 64, 64)).alpha[0, 0].numpy())
    assert 0 < int(levels.max()) - int(levels.min()) < 13  # a few values: more than one, fewer than 13
    for name, model in (("alive", alive), ("dead", dead), ("faint", faint)):
        save_model(model, tmp_path / f"{name}.safetensors")
    out = tmp_path / "summary.json"
    args = ["evaluate", "--data", str(tmp_path / "test"), "--device", "cpu", "--json", str(out)]
    for name in ("alive", "dead", "faint"):
        args += ["--model", str(tmp_path / f"{name}.safetensors"), "--label", name]
    assert main(args) == 0
    summaries = json.loads(out.read_text())["summaries"]
    assert summaries["dead"]["flat_predictions"] == summaries["dead"]["count"] == 3
    assert summaries["faint"]["flat_predictions"] == 3
    assert summaries["alive"]["flat_predictions"] == 0
    text = capsys.readouterr().out
    assert "warning: dead predicted a flat alpha (fewer than 13 of 256 levels) for 3 of 3 images" in text
    assert "warning: faint predicted a flat alpha" in text and "warning: alive" not in text


def test_the_empty_matte_scores_the_true_alpha_mass(tmp_path):
    """The floor: alpha 0 everywhere scores, per image, SAD = the true matte's sum / 1000 (8-bit)
    and MSE = the mean of its square, over the whole image and the trimap's unknown band."""
    import numpy as np

    from ppid.data.datasets import CompositeTestSet
    from ppid.data.synth import synthesize
    from ppid.data.testset import build_testset
    from ppid.evaluate import empty_matte_summary

    synthesize(tmp_path / "src", 2, seed=3, size=(64, 64), workers=1)
    build_testset(tmp_path / "src" / "fg", tmp_path / "src" / "alpha", tmp_path / "src" / "bg", 1, tmp_path / "test",
                  split=tmp_path / "src" / "split.txt")
    testset = CompositeTestSet(tmp_path / "test")
    truth = [np.round(it["alpha"] * 255) / 255 for it in testset]
    bands = [it["trimap"] == 128 for it in testset]
    summary = empty_matte_summary(testset)["results"]
    assert summary["whole"]["all"]["sad"] == pytest.approx(np.mean([t.sum() / 1000 for t in truth]))
    assert summary["whole"]["all"]["mse"] == pytest.approx(np.mean([(t ** 2).mean() for t in truth]))
    assert summary["transition"]["all"]["sad"] == pytest.approx(np.mean([t[b].sum() / 1000 for t, b in zip(truth, bands)]))
