"""The training engine: configs, objective and ablation switches, frozen teacher, resume parity,
non-finite guard, every shipped config, 2-process DDP, and stopping cleanly on SIGINT/SIGTERM,
broken checkpoints and a full disk."""

import errno
import io
import json
import math
import multiprocessing
import os
import pickle
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ppid import PpidError
from ppid.config import BUILTIN, load_config, parse_set
from ppid.models import build, load_model, save_model
from ppid.train import Objective, TrainingInterrupted, build_models, config_changes, load_checkpoint, resume_command, train

CONFIGS = sorted(BUILTIN.glob("*.yaml"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Four tiny foregrounds with fractional alpha and two backgrounds (custom layout)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for sub in ("fg", "alpha", "bg"):
        (root / sub).mkdir()
    yy, xx = np.mgrid[:80, :80]
    for i in range(4):
        r = np.hypot(yy - 40 - 3 * i, xx - 40)
        alpha = np.clip((22 + 2 * i - r) / 6, 0, 1)
        Image.fromarray((alpha * 255).round().astype(np.uint8)).save(root / "alpha" / f"f{i}.png")
        Image.fromarray(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(root / "fg" / f"f{i}.png")
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(root / "bg" / f"b{i}.png")
    return root


def tiny(dataset, out, **extra):
    cfg = {
        "data": {"train_root": str(dataset), "val_root": None, "size": 32, "workers": 0},
        "optim": {"iterations": 4, "batch_size": 2},
        "train": {"device": "cpu", "log_every": 1, "val_every": 1000, "image_every": 0, "ckpt_every": 1, "out": str(out)},
    }
    for key, value in extra.items():
        cfg.setdefault(key, {})
        if isinstance(value, dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


def losses(out):
    return [r["total"] for r in map(json.loads, (Path(out) / "log.jsonl").read_text().splitlines()) if "total" in r and "event" not in r]


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    paths = {}
    for family in ("dim", "indexnet", "gca"):
        torch.manual_seed(0)
        paths[family] = root / f"{family}_teacher.safetensors"
        save_model(build(family, "teacher"), paths[family])
    return paths


# -- config ---------------------------------------------------------------------------------------
def test_unknown_keys_are_errors(tmp_path):
    with pytest.raises(PpidError, match="unknown config key 'optim.lrr'"):
        load_config(None, parse_set(["optim.lrr=0.1"]))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  famly: dim\n")
    with pytest.raises(PpidError, match="model.famly"):
        load_config(bad)


def test_compile_flag_must_be_a_boolean():
    assert load_config("indexnet_student")["train"]["compile"] is False
    assert load_config(None, parse_set(["train.compile=true"]))["train"]["compile"] is True
    with pytest.raises(PpidError, match="train.compile must be true or false, got 1"):
        load_config(None, parse_set(["train.compile=1"]))


def test_crop_centre_is_checked_when_the_config_loads():
    assert load_config("indexnet_student")["data"]["crop_centre"] == "transition"  # the paper's rule
    assert load_config(None, parse_set(["data.crop_centre=anywhere"]))["data"]["crop_centre"] == "anywhere"
    with pytest.raises(PpidError, match=re.escape("data.crop_centre must be one of transition, anywhere, got 'edge'")):
        load_config(None, parse_set(["data.crop_centre=edge"]))


def test_base_inheritance_and_set_values():
    cfg = load_config("dim_ppid_ld", parse_set(["optim.lr=0.05", "data.crop_sizes=[64, 96]"]))
    assert cfg["mode"] == "ppid" and cfg["distill"]["local"] == "ld" and cfg["distill"]["semantic"] == "clsd"
    assert cfg["distill"]["alpha"] == 0.02 and cfg["distill"]["beta"] == 0.002  # Table 5, DIM
    assert cfg["optim"]["lr"] == 0.05 and cfg["data"]["crop_sizes"] == [64, 96]
    assert cfg["optim"]["iterations"] == 50000 and cfg["optim"]["batch_size"] == 64


def test_builtin_config_names_resolve_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here: the names come from the installed package
    assert load_config("indexnet_ppid")["distill"]["local"] == "ald"
    assert load_config("gca_ppid_sd.yaml")["distill"]["semantic"] == "sd"
    with pytest.raises(PpidError, match="not a built-in config"):
        load_config("indexnet_ppdi")
    from ppid.cli import main

    assert main(["train", "--list-configs"]) == 0


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_loads_with_table5_weights(path):
    cfg = load_config(path)
    fam = cfg["model"]["family"]
    assert path.stem.startswith(fam)
    if cfg["mode"] == "ppid":
        expected = (0.02, 0.002) if fam == "dim" else (0.002, 0.0002)
        assert (cfg["distill"]["alpha"], cfg["distill"]["beta"]) == expected
        assert (cfg["distill"]["lambda1"], cfg["distill"]["lambda2"], cfg["distill"]["gamma"]) == (0.2, 1.0, 1.0)


# -- objective ------------------------------------------------------------------------------------
ABLATIONS = {
    ("clsd", "ald"): {"clsd_same", "clsd_cross", "ald_f", "ald_a"},
    ("sd", "ald"): {"clsd_same", "ald_f", "ald_a"},
    ("none", "ald"): {"ald_f", "ald_a"},
    ("clsd", "ld"): {"clsd_same", "clsd_cross", "ald_f"},
    ("clsd", "none"): {"clsd_same", "clsd_cross"},
    ("clsd", "ald_f"): {"clsd_same", "clsd_cross", "ald_f"},
    ("clsd", "ald_a"): {"clsd_same", "clsd_cross", "ald_a"},
}


def _batch(n=2, size=32):
    torch.manual_seed(1)
    alpha = torch.rand(n, 1, size, size)
    trimap = torch.full_like(alpha, 0.5)
    trimap[..., : size // 4, :] = 0.0
    trimap[..., -size // 4 :, :] = 1.0
    return {"image": torch.rand(n, 3, size, size), "alpha": alpha, "trimap": trimap}


@pytest.mark.parametrize("semantic,local", list(ABLATIONS), ids=[f"{s}-{l}" for s, l in ABLATIONS])
def test_ablation_switches_remove_their_terms(teachers, semantic, local):
    cfg = load_config(None, {"mode": "ppid", "distill": {"teacher": str(teachers["indexnet"]), "semantic": semantic, "local": local}})
    model, teacher = build_models(cfg, torch.device("cpu"))
    assert (model.connectors is not None) == (semantic == "clsd")  # SD and no-CLSD students have no connectors
    batch = _batch()
    with torch.no_grad():
        t_out = teacher(batch["image"], batch["trimap"])
    objective = Objective(model, cfg, [f.shape[1] for f in t_out.enc])
    terms, _ = objective(batch, t_out)
    distill_terms = set(terms) - {"l1_f", "l1_b", "l1_t", "ce_f", "ce_b", "ce_t", "grad", "alpha", "total", "distill"}
    assert distill_terms == ABLATIONS[(semantic, local)]
    assert terms["total"].item() == pytest.approx((terms["alpha"] + terms["distill"]).item(), rel=1e-5)


def test_gradients_reach_connectors_and_gc_blocks_not_teacher(teachers):
    cfg = load_config(None, {"mode": "ppid", "distill": {"teacher": str(teachers["indexnet"])}})
    model, teacher = build_models(cfg, torch.device("cpu"))
    batch = _batch()
    with torch.no_grad():
        t_out = teacher(batch["image"], batch["trimap"])
    objective = Objective(model, cfg, [f.shape[1] for f in t_out.enc])
    terms, _ = objective(batch, t_out)
    terms["total"].backward()
    for module in (model.connectors, objective.clsd.gc_student, objective.clsd.gc_cross, objective.clsd.gc_teacher):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())


def test_cross_family_distillation_through_adapters(teachers, dataset, tmp_path):
    cfg = load_config("indexnet_ppid_from_gca", {"distill": {"teacher": str(teachers["gca"])}})
    model, teacher = build_models(cfg, torch.device("cpu"))
    assert teacher.build_args["family"] == "gca" and model.build_args["family"] == "indexnet"
    batch = _batch()
    with torch.no_grad():
        t_out = teacher(batch["image"], batch["trimap"])
    objective = Objective(model, cfg, [f.shape[1] for f in t_out.enc], t_out)
    terms, _ = objective(batch, t_out)
    assert {"clsd_same", "clsd_cross", "ald_f", "ald_a"} <= set(terms)
    terms["total"].backward()
    convs = [m for m in objective.adapters.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.grad is not None and c.weight.grad.abs().sum() > 0 for c in convs)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in build("indexnet", "student", cross_layer=True).parameters())
    train(load_config("indexnet_ppid_from_gca", tiny(dataset, tmp_path / "x", distill={"teacher": str(teachers["gca"])})))
    assert len(losses(tmp_path / "x")) == 4


def test_teacher_of_wrong_role_or_family_is_refused(tmp_path, teachers):
    student = tmp_path / "student.safetensors"
    save_model(build("indexnet", "student"), student)
    with pytest.raises(PpidError, match="expected a indexnet teacher"):
        build_models(load_config(None, {"mode": "ppid", "distill": {"teacher": str(student)}}), torch.device("cpu"))
    with pytest.raises(PpidError, match="expected a indexnet teacher .distill.cross_family"):
        build_models(load_config(None, {"mode": "ppid", "distill": {"teacher": str(teachers["dim"])}}), torch.device("cpu"))


# -- the loop -------------------------------------------------------------------------------------
def test_ppid_training_keeps_the_teacher_frozen(dataset, teachers, tmp_path, monkeypatch):
    import ppid.train as engine

    held = {}
    real_load = engine.load_model

    def load_and_keep(path, device="cpu"):
        held["teacher"] = real_load(path, device)
        held["before"] = {k: v.clone() for k, v in held["teacher"].state_dict().items()}
        return held["teacher"]

    monkeypatch.setattr(engine, "load_model", load_and_keep)
    train(load_config(None, tiny(dataset, tmp_path / "p", mode="ppid", distill={"teacher": str(teachers["indexnet"])})))
    after = held["teacher"].state_dict()
    assert all(torch.equal(held["before"][k], after[k]) for k in after)  # weights and BN statistics
    assert not held["teacher"].training
    rec = [json.loads(line) for line in (tmp_path / "p" / "log.jsonl").read_text().splitlines()]
    assert {"clsd_same", "clsd_cross", "ald_f", "ald_a", "alpha", "total", "lr", "samples_per_s"} <= set(rec[0])


def test_distillation_ratios_logged_from_the_first_step_and_dominant_terms_warned(dataset, teachers, tmp_path, capsys):
    """Each ratio is the term as it weighs in the total (eq. 18's gamma included) over L_alpha."""
    cfg = tiny(dataset, tmp_path / "r", mode="ppid", optim={"iterations": 3, "lr": 1e-6},
               train={"log_every": 2}, distill={"teacher": str(teachers["indexnet"]), "alpha": 1e4, "gamma": 2.0})
    train(load_config(None, cfg))
    rec = [r for r in map(json.loads, (tmp_path / "r" / "log.jsonl").read_text().splitlines()) if "event" not in r]
    assert [r["step"] for r in rec] == [1, 2, 3]  # the first step, then every log_every and the last
    for r in rec:
        for term in ("clsd_same", "clsd_cross", "ald_f", "ald_a"):
            assert r[f"ratio_{term}"] == pytest.approx(2.0 * r[term] / r["alpha"])
    assert rec[0]["ratio_ald_f"] > 10
    err = capsys.readouterr()
    warnings = [line for line in (err.out + err.err).splitlines() if "distillation terms over 10x" in line]
    warned = [term for line in warnings for term in re.findall(r"'(\w+)': ", line)]
    assert "ald_f" in warned and len(warned) == len(set(warned))  # once per term, not at every log step


def test_distillation_stops_at_distill_until(dataset, teachers, tmp_path):
    """distill.until: the share of the schedule that distils; the rest trains on L_alpha alone."""
    cfg = tiny(dataset, tmp_path / "u", mode="ppid", distill={"teacher": str(teachers["indexnet"]), "until": 0.5})
    train(load_config(None, cfg))
    rows = list(map(json.loads, (tmp_path / "u" / "log.jsonl").read_text().splitlines()))
    steps = [r for r in rows if "event" not in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all("distill" in r and "ald_f" in r for r in steps[:2])
    assert all("distill" not in r and not any(k.startswith(("clsd_", "ald_", "ratio_")) for k in r) for r in steps[2:])
    assert all(r["total"] == pytest.approx(r["alpha"]) for r in steps[2:])
    assert [r["step"] for r in rows if r.get("event") == "distillation_off"] == [2]
    for bad in (0, 1.5, "half", True):
        with pytest.raises(PpidError, match="distill.until must be a share"):
            load_config(None, {"distill": {"until": bad}})


def test_a_student_can_carry_the_connectors_without_distillation(dataset, tmp_path):
    """model.connectors: true builds the plain student with CLSD's cross-layer connectors and trains
    it on L_alpha alone: the control that separates CLSD's loss from the network change it brings."""
    cfg = tiny(dataset, tmp_path / "c", mode="student", model={"connectors": True}, optim={"iterations": 2, "batch_size": 2})
    train(load_config(None, cfg))
    model = load_model(tmp_path / "c" / "model_last.safetensors")
    assert model.build_args["cross_layer"] is True and len(model.connectors.convs) == 4
    steps = [r for r in map(json.loads, (tmp_path / "c" / "log.jsonl").read_text().splitlines()) if "event" not in r]
    assert steps and all(r["total"] == pytest.approx(r["alpha"]) and "distill" not in r for r in steps)
    for bad, message in (({"connectors": "yes"}, "must be auto, true or false"), ({"connectors": 0}, "must be auto"),
                         ({"connectors": True, "mode": "teacher"}, "is for students"),
                         ({"connectors": False, "mode": "ppid"}, "cannot train CLSD")):
        mode = bad.pop("mode", "student")
        with pytest.raises(PpidError, match=message):
            load_config(None, {"mode": mode, "model": bad, "distill": {"teacher": "t.safetensors"}})


def test_a_dead_alpha_head_is_reported_once(dataset, tmp_path, monkeypatch, capsys):
    """IndexNet's revision-1 one-channel BN + ReLU6 head can die (a cpu_small PPID seed did): alpha is then
    0.5 everywhere and never trains again. The log and the console say so at the next log step."""
    import ppid.train as engine

    def dead_head(*args, **kwargs):
        model = build(*args, revision=1, **kwargs)  # revision 1: the head with ReLU6, which can die
        with torch.no_grad():
            model.head[0][1].bias.fill_(-1e3)  # BN shift far below zero: ReLU6 outputs 0, no gradient
        return model

    monkeypatch.setattr(engine, "build", dead_head)
    cfg = tiny(dataset, tmp_path / "dead", mode="student", optim={"iterations": 3})
    train(load_config(None, cfg))
    log = [json.loads(line) for line in (tmp_path / "dead" / "log.jsonl").read_text().splitlines()]
    events = [r for r in log if r.get("event") == "alpha_constant"]
    assert len(events) == 1 and events[0]["step"] == 1 and events[0]["alpha"] == pytest.approx(0.5)
    assert all(r["alpha_range"] == 0 for r in log if "event" not in r)
    err = capsys.readouterr()
    assert (err.out + err.err).count("the predicted alpha is constant") == 1

    monkeypatch.setattr(engine, "build", build)  # a healthy network: no event
    train(load_config(None, tiny(dataset, tmp_path / "alive", mode="student", optim={"iterations": 2})))
    log = [json.loads(line) for line in (tmp_path / "alive" / "log.jsonl").read_text().splitlines()]
    assert not [r for r in log if r.get("event") == "alpha_constant"]
    assert all(r["alpha_range"] > 1e-3 for r in log if "event" not in r)


@pytest.mark.parametrize("family", ["dim", "indexnet", "gca"])
def test_cpu_bf16_autocast_losses_agree_with_float32(family, teachers):
    from ppid.train import autocast_dtype

    if autocast_dtype("bf16", torch.device("cpu")) is None:
        pytest.skip("this CPU has no native bf16: training runs float32 here")
    cfg = load_config(None, {"mode": "ppid", "model": {"family": family}, "distill": {"teacher": str(teachers[family])}})
    torch.manual_seed(0)  # the student's init: the measured agreement below is for this one, whatever ran before
    model, teacher = build_models(cfg, torch.device("cpu"))
    batch = _batch(size=64)
    objective = Objective(model, cfg, [f.shape[1] for f in teacher(batch["image"], batch["trimap"]).enc]).eval()
    terms = {}
    for dtype in (None, torch.bfloat16):
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            t_out = teacher(batch["image"], batch["trimap"])
            terms[dtype] = {k: v.item() for k, v in objective(batch, t_out)[0].items()}
    # measured with seed 0: every term within 0.8% (DIM), the total within 0.03%
    for name, value in terms[None].items():
        assert terms[torch.bfloat16][name] == pytest.approx(value, rel=2e-2, abs=1e-6), name
    assert terms[torch.bfloat16]["total"] == pytest.approx(terms[None]["total"], rel=2e-3)


@pytest.mark.parametrize("augmenter", ["loader", "batch"])
def test_resume_continues_bit_for_bit(dataset, tmp_path, monkeypatch, augmenter):
    import ppid.train as engine

    cfg = tiny(dataset, tmp_path / "full", data={"augmenter": augmenter}, optim={"iterations": 6})
    train(load_config(None, cfg))
    full = losses(tmp_path / "full")

    real = engine.make_batches

    def interrupted(*args, **kwargs):
        for i, item in enumerate(real(*args, **kwargs)):
            if i == 3:
                raise KeyboardInterrupt
            yield item

    cfg["train"]["out"] = str(tmp_path / "cut")
    monkeypatch.setattr(engine, "make_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(None, cfg))
    monkeypatch.setattr(engine, "make_batches", real)
    train(load_config(None, cfg), resume="last")
    resumed = losses(tmp_path / "cut")
    assert len(full) == 6 and resumed == full


def test_the_loader_batch_stream_ends_with_the_schedule(dataset, tmp_path):
    # A reader of a finished run's next batches (a diagnostic at its last checkpoint) gets none
    # rather than waiting forever on an empty loader.
    from itertools import islice

    from ppid.train import make_batches

    cfg = load_config(None, tiny(dataset, tmp_path, data={"augmenter": "loader"}, optim={"iterations": 3}))
    device = torch.device("cpu")
    assert len(list(islice(make_batches(cfg, device, 1, 0, 1), 5))) == 2  # bounded: a regression fails, not hangs
    assert list(islice(make_batches(cfg, device, 3, 0, 1), 5)) == []


def test_gradient_norm_logged_before_clipping_and_clipped_steps_counted(dataset, tmp_path):
    """Each log record carries the interval's largest gradient norm (what a divergence shows
    first); with optim.grad_clip it is the norm before clipping, and the steps clipped are counted."""
    def records(out):
        return [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "event" not in r]

    train(load_config(None, tiny(dataset, tmp_path / "free", optim={"iterations": 2})))
    free = records(tmp_path / "free")
    assert all(math.isfinite(r["grad_norm_max"]) and r["grad_norm_max"] > 0 for r in free)
    assert all("clipped_steps" not in r for r in free)
    first = free[0]["grad_norm_max"]
    cfg = tiny(dataset, tmp_path / "clip", optim={"iterations": 2, "grad_clip": first / 2})
    train(load_config(None, cfg))
    clip = records(tmp_path / "clip")
    assert clip[0]["grad_norm_max"] == pytest.approx(first, rel=1e-5)  # the same first step, measured before the clip
    assert clip[0]["clipped_steps"] == 1 and clip[0]["total"] == free[0]["total"]
    assert clip[1]["total"] != free[1]["total"]  # the clipped update changed the weights


def test_nonfinite_losses_are_skipped_then_abort(dataset, tmp_path, monkeypatch):
    import ppid.train as engine

    calls = {"n": 0}
    real = engine.alpha_loss

    def sometimes_nan(*args):
        calls["n"] += 1
        terms = real(*args)
        if calls["n"] in (2,) or calls["n"] >= 4:
            terms["alpha"] = terms["alpha"] * float("nan")
        return terms

    monkeypatch.setattr(engine, "alpha_loss", sometimes_nan)
    cfg = tiny(dataset, tmp_path / "nan", optim={"iterations": 20}, train={"max_nonfinite": 3})
    with pytest.raises(engine.TrainingDiverged, match="NaN/inf for 3 steps in a row") as diverged:
        train(load_config(None, cfg))
    events = [json.loads(line) for line in (tmp_path / "nan" / "log.jsonl").read_text().splitlines()]
    skipped = [e["step"] for e in events if e.get("event") == "nonfinite_loss"]
    assert len(skipped) == 4  # one isolated skip, then three in a row
    assert diverged.value.step == skipped[1] and skipped[1:] == [skipped[1], skipped[1] + 1, skipped[1] + 2]
    assert (tmp_path / "nan" / "checkpoint_last.pt").is_file()
    with pytest.raises(engine.TrainingDiverged) as again:  # resuming goes on from the next step: the same streak
        train(load_config(None, cfg), resume="last")
    assert again.value.step == diverged.value.step and "NaN/inf for 4 steps in a row" in str(again.value)


def test_a_validation_with_nan_predictions_is_logged_and_never_best(dataset, tmp_path, monkeypatch):
    import ppid.evaluate
    from ppid.data.synth import synthesize
    from ppid.data.testset import build_testset
    from ppid.metrics import NonFiniteMatte

    synthesize(tmp_path / "src", 2, seed=1, size=(64, 64), workers=1)
    build_testset(tmp_path / "src" / "fg", tmp_path / "src" / "alpha", tmp_path / "src" / "bg", 1, tmp_path / "val",
                  split=tmp_path / "src" / "split.txt")
    real = ppid.evaluate.evaluate_model
    calls = {"n": 0}

    def diverged_first(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise NonFiniteMatte("synth_00000_0: matte holds NaN or inf")
        return real(*args, **kwargs)

    monkeypatch.setattr(ppid.evaluate, "evaluate_model", diverged_first)
    cfg = tiny(dataset, tmp_path / "v", data={"val_root": str(tmp_path / "val")}, train={"val_every": 2})
    result = train(load_config(None, cfg))
    events = [json.loads(line).get("event") for line in (tmp_path / "v" / "log.jsonl").read_text().splitlines()]
    assert events.count("validation_nonfinite") == 1 and events.count("validation") == 1
    assert result["best"]["step"] == 4


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_trains_a_few_steps(path, dataset, teachers, tmp_path):
    cfg = load_config(path)
    overrides = tiny(dataset, tmp_path, optim={"iterations": 2}, train={"ckpt_every": 2})
    overrides["data"]["size"] = 32
    if cfg["mode"] == "ppid":
        overrides["distill"] = {"teacher": str(teachers[cfg["model"]["family"]])}
    from ppid.cli import main

    sets = [f"{section}.{k}={json.dumps(v)}" for section, values in overrides.items() for k, v in values.items()]
    args = ["train", "--config", str(path)]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    assert (tmp_path / "model_last.safetensors").is_file()
    assert len(losses(tmp_path)) == 2


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("ppid_until", [None, 0.5], ids=["teacher", "ppid-until-half"])
def test_two_process_ddp_keeps_ranks_identical(dataset, teachers, tmp_path, ppid_until):
    """Also a PPID student that stops distilling half-way: its distillation modules then get no
    gradient, which DDP accepts only when told (find_unused_parameters)."""
    extra = [] if ppid_until is None else [
        "--set", "mode=ppid", "--set", f"distill.teacher={teachers['indexnet']}", "--set", f"distill.until={ppid_until}"]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
        "-m", "ppid", "train",
        "--set", f"data.train_root={dataset}", "--set", "data.size=32", "--set", "data.workers=0",
        "--set", "optim.iterations=3", "--set", "optim.batch_size=4", "--set", "train.device=cpu",
        "--set", "train.log_every=1", "--set", "train.image_every=0", *extra, "--out", str(tmp_path / "ddp"),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines() if '"done"' in line][-1]
    assert len(done["rank_param_checksums"]) == 2 and done["ranks_in_sync"] is True


# -- stopping on SIGINT / SIGTERM ----------------------------------------------------------------
@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    from ppid.data.synth import synthesize

    root = tmp_path_factory.mktemp("synth") / "train"
    synthesize(root, 4, seed=0, size=(64, 64), workers=1)
    return root


def tiny_sets(data, iterations, workers=0):
    """`--set` values of a tiny CPU run: checkpoints only at the end (or when stopped)."""
    values = {
        "data.train_root": str(data), "data.size": 32, "data.workers": workers, "optim.iterations": iterations,
        "optim.batch_size": 2, "train.device": "cpu", "train.log_every": 1, "train.image_every": 0,
        "train.ckpt_every": 1000, "train.val_every": 1000,
        "train.amp": "none",  # float32: these runs are compared bit for bit across processes
    }
    return [f"{k}={v}" for k, v in values.items()]


def cli_args(sets, out):
    return ["train", *(w for s in sets for w in ("--set", s)), "--out", str(out)]


def weights(out):
    from safetensors.torch import load_file

    return load_file(str(Path(out) / "model_last.safetensors"))


# Run by the test below as `python -c CHILD train ...`: the real CLI, with step 3's loss waiting
# (at most a minute) for the test's signal, so that it lands mid-step however fast the machine is.
CHILD = """
import signal, sys, time
import ppid.train as engine
from ppid.cli import main

real, calls = engine.alpha_loss, [0]

def loss(*args):
    calls[0] += 1
    if calls[0] == 3:
        stop = signal.getsignal(signal.SIGTERM).__self__
        deadline = time.monotonic() + 60
        while stop.signum is None and time.monotonic() < deadline:
            time.sleep(0.02)
    return real(*args)

engine.alpha_loss = loss
sys.exit(main())
"""


def test_sigterm_checkpoints_the_step_and_resume_matches_an_uninterrupted_run(synth_data, tmp_path):
    sets = tiny_sets(synth_data, iterations=6, workers=1)
    args = cli_args(sets, tmp_path / "cut")
    # Its own process group, signalled as a whole as a scheduler does: DataLoader workers included.
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *args], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "cut" / "log.jsonl"
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if log.is_file() and len(log.read_text().splitlines()) >= 2:  # steps 1 and 2 are done
            os.killpg(proc.pid, signal.SIGTERM)
            break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 143, err[-3000:]
    last = err.strip().splitlines()[-1]
    step = int(last.split("interrupted at step ")[1].split(";")[0])
    assert last == f"ppid train: interrupted at step {step}; continue with: {shlex.join(['ppid', *args, '--resume'])}"
    assert step in (2, 3) and load_checkpoint(tmp_path / "cut" / "checkpoint_last.pt")["step"] == step
    assert json.loads(log.read_text().splitlines()[-1]) == {"event": "interrupted", "step": step, "signal": "SIGTERM"}

    # The printed command, as given, and the uninterrupted run: fresh processes like the cut one, so
    # that no state of this test process (threads, kernels chosen by earlier tests) enters the comparison.
    resume = shlex.split(last.split("continue with: ")[1])[1:]
    subprocess.run([sys.executable, "-m", "ppid", *resume], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "ppid", *cli_args(sets, tmp_path / "full")], check=True, capture_output=True)
    assert losses(tmp_path / "cut") == losses(tmp_path / "full") and len(losses(tmp_path / "full")) == 6
    resumed, full = weights(tmp_path / "cut"), weights(tmp_path / "full")
    assert resumed.keys() == full.keys() and all(torch.equal(resumed[k], full[k]) for k in full)


def _signal_in_step(engine, monkeypatch, step, signum):
    real, calls = engine.alpha_loss, {"n": 0}

    def loss(*args):
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), signum)
        return real(*args)

    monkeypatch.setattr(engine, "alpha_loss", loss)


def test_sigint_finishes_the_step_exits_130_and_restores_the_handlers(synth_data, tmp_path, monkeypatch, capfd):
    import ppid.train as engine
    from ppid.cli import main

    # A shell starts background jobs with SIGINT ignored, which the engine keeps (a test below):
    # give this test Python's own handler, however pytest was started.
    launched_with = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        _signal_in_step(engine, monkeypatch, 2, signal.SIGINT)
        args = cli_args(tiny_sets(synth_data, iterations=5), tmp_path / "run")
        monkeypatch.setattr(sys, "argv", ["/venv/bin/ppid", *args])
        assert main(args) == 130
        err = capfd.readouterr().err
        assert "ppid train: SIGINT received, stopping after this step" in err
        assert f"ppid train: interrupted at step 2; continue with: {shlex.join(['ppid', *args, '--resume'])}" in err
        assert load_checkpoint(tmp_path / "run" / "checkpoint_last.pt")["step"] == 2
        assert {s: signal.getsignal(s) for s in before} == before
    finally:
        signal.signal(signal.SIGINT, launched_with)


def test_signal_in_the_last_step_lets_the_run_finish(synth_data, tmp_path, monkeypatch):
    import ppid.train as engine

    before = signal.getsignal(signal.SIGTERM)
    _signal_in_step(engine, monkeypatch, 2, signal.SIGTERM)
    result = train(load_config(None, parse_set([*tiny_sets(synth_data, iterations=2), f"train.out={tmp_path}"])))
    assert result["steps"] == 2 and load_checkpoint(tmp_path / "checkpoint_last.pt")["step"] == 2
    assert signal.getsignal(signal.SIGTERM) == before


def test_an_ignored_signal_stays_ignored(synth_data, tmp_path, monkeypatch):
    import ppid.train as engine

    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        _signal_in_step(engine, monkeypatch, 1, signal.SIGTERM)
        result = train(load_config(None, parse_set([*tiny_sets(synth_data, iterations=2), f"train.out={tmp_path}"])))
        assert result["steps"] == 2 and signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_library_callers_get_a_keyboard_interrupt(synth_data, tmp_path, monkeypatch):
    import ppid.train as engine

    _signal_in_step(engine, monkeypatch, 1, signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt) as caught:
        train(load_config(None, parse_set([*tiny_sets(synth_data, iterations=3), f"train.out={tmp_path}"])))
    assert isinstance(caught.value, TrainingInterrupted)
    assert (caught.value.step, caught.value.exit_code) == (1, 143)


def test_resume_command_rebuilds_the_users_command_line(monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert resume_command(["/venv/bin/ppid", "train", "--config", "my runs/a.yaml", "--out", "r"]) == \
        "ppid train --config 'my runs/a.yaml' --out r --resume"
    assert resume_command(["/x/ppid/__main__.py", "train", "--resume", "old/ckpt.pt", "--out", "r"]) == \
        "python -m ppid train --out r --resume"
    assert resume_command(["ppid", "train", "--resume", "--set", "a=1", "--resume=x.pt"]) == "ppid train --set a=1 --resume"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert resume_command(["/x/ppid/__main__.py", "train", "--out", "r"]) == \
        "torchrun --nproc_per_node=4 -m ppid train --out r --resume"


# Run by torchrun in the test below: rank 1 alone gets SIGTERM, in step 2.
DDP_CHILD = """
import os, signal, sys
import ppid.train as engine
from ppid.cli import main

real, calls = engine.alpha_loss, [0]

def loss(*args):
    calls[0] += 1
    if calls[0] == 2 and os.environ["RANK"] == "1":
        os.kill(os.getpid(), signal.SIGTERM)
    return real(*args)

engine.alpha_loss = loss
sys.exit(main())
"""


@pytest.mark.slow
def test_ddp_ranks_stop_at_the_same_step(synth_data, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(DDP_CHILD)
    sets = [s for s in tiny_sets(synth_data, iterations=6) if not s.startswith("optim.batch_size")] + ["optim.batch_size=4"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           str(script), *cli_args(sets, tmp_path / "ddp")]
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    # Rank 0 got no signal: it stopped at step 2 because rank 1 did, and wrote that step's checkpoint.
    events = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert events[-1] == {"event": "interrupted", "step": 2, "signal": "SIGTERM"}
    assert load_checkpoint(tmp_path / "ddp" / "checkpoint_last.pt")["step"] == 2


# -- broken checkpoints and a full disk ----------------------------------------------------------
class NotAState:
    pass


def _write_bad_checkpoint(path, kind):
    good = {"objective": {"w": torch.ones(2000)}, "optimizer": {}, "scheduler": {}, "step": 3, "rng": {}, "config": {}}
    if kind == "truncated":
        buffer = io.BytesIO()
        torch.save(good, buffer)
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "pickle":
        path.write_bytes(pickle.dumps(NotAState()))
    elif kind == "torch_object":
        torch.save(NotAState(), path)
    elif kind == "list":
        torch.save([1, 2, 3], path)
    elif kind == "missing_keys":
        torch.save({"objective": good["objective"], "step": 3}, path)


BROKEN_CHECKPOINTS = {
    "truncated": "truncated or corrupt",
    "random": "not a torch.save archive",
    "empty": "empty file",
    "pickle": "not a torch.save archive",
    "torch_object": "holds Python objects other than tensors and plain data",
    "list": "holds a list, not a checkpoint dict",
    "missing_keys": "missing optimizer, scheduler, rng, config",
}


@pytest.mark.parametrize("kind", list(BROKEN_CHECKPOINTS))
def test_broken_checkpoint_is_one_safe_line(tmp_path, kind):
    path = tmp_path / "broken.ckpt"
    _write_bad_checkpoint(path, kind)
    with pytest.raises(PpidError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == f"{path}: not a ppid checkpoint ({BROKEN_CHECKPOINTS[kind]})"


def test_resume_from_a_broken_checkpoint_or_a_model_file_on_the_command_line(synth_data, tmp_path, capsys):
    from ppid.cli import main

    args = cli_args(tiny_sets(synth_data, iterations=2), tmp_path / "run")
    bad = tmp_path / "broken.ckpt"
    _write_bad_checkpoint(bad, "torch_object")
    assert main([*args, "--resume", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == f"ppid train: error: {bad}: not a ppid checkpoint (holds Python objects other than tensors and plain data)\n"
    model = tmp_path / "model_last.safetensors"
    save_model(build("indexnet", "student"), model)
    assert main([*args, "--resume", str(model)]) == 2
    assert "a model file; --resume takes a training checkpoint such as checkpoint_last.pt" in capsys.readouterr().err


def test_a_fresh_start_refuses_a_folder_with_an_earlier_runs_checkpoint(synth_data, tmp_path, capsys):
    """Without --resume, `ppid train` into a folder that holds a checkpoint would overwrite that
    run's progress: it stops with a clear error instead, and the checkpoint is untouched."""
    from ppid.cli import main

    out = tmp_path / "run"
    args = cli_args(tiny_sets(synth_data, iterations=2), out)
    assert main(args) == 0
    checkpoint = out / "checkpoint_last.pt"
    before = checkpoint.read_bytes()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{out}: holds the checkpoint of an earlier run; continue it with --resume" in err
    assert checkpoint.read_bytes() == before


class FullDisk(io.FileIO):
    """A file on a disk that fills up after `room` bytes."""

    room = 4096

    def write(self, data):
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(synth_data, tmp_path, monkeypatch):
    import ppid.train as engine

    opened = {"checkpoints": 0}

    def open_on_a_filling_disk(file, mode="r", *args, **kwargs):
        if Path(file).name.startswith(".checkpoint_last."):  # atomic_path's temporary file
            opened["checkpoints"] += 1
            if opened["checkpoints"] == 2:
                return FullDisk(file, mode)
        return open(file, mode, *args, **kwargs)

    monkeypatch.setattr(engine, "open", open_on_a_filling_disk, raising=False)
    sets = [*tiny_sets(synth_data, iterations=3, workers=1), "train.ckpt_every=1"]
    out = tmp_path / "run"
    with pytest.raises(PpidError) as caught:
        train(load_config(None, parse_set([*sets, f"train.out={out}"])))
    path = out / "checkpoint_last.pt"
    assert str(caught.value) == f"{path}: cannot write checkpoint (No space left on device); the previous checkpoint is intact"
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temporary file left
    # The DataLoader worker (it ignores SIGTERM) is stopped, or the interpreter's exit would wait for it.
    leftover = multiprocessing.active_children()
    for child in leftover:
        child.kill()  # so that a failure here does not hang the test session at exit
    assert leftover == []


def test_resume_warning_names_the_changed_config_keys():
    old = load_config("indexnet_ppid")
    new = load_config("indexnet_ppid", parse_set(["optim.lr=0.02", "train.log_every=7"]))
    del old["distill"]["cross_family"]  # keys added after the checkpoint was written
    del old["data"]["trimap_kernel_max"]
    new["data"]["trimap_kernel_max"] = 60
    assert config_changes(old, new) == [  # cross_family at its old-behaviour value is no change
        "data.trimap_kernel_max ('<absent>' -> 60)",
        f"optim.lr ({old['optim']['lr']!r} -> 0.02)",
        f"train.log_every ({old['train']['log_every']!r} -> 7)",
    ]
    assert config_changes(new, new) == []


def test_cpu_bf16_only_where_the_cpu_has_it_in_hardware(monkeypatch):
    """oneDNN says bf16 is supported on plain AVX-512 too, where it is emulated and slower than
    float32: autocast is used only with AVX512-BF16 or AMX."""
    from ppid.train import autocast_dtype

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    for avx512_bf16, amx, expected in ((False, False, None), (True, False, torch.bfloat16), (False, True, torch.bfloat16)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert autocast_dtype("bf16", torch.device("cpu")) is expected
        # bf16-always: a bf16 run's numerics on any CPU (a control for runs trained in bf16)
        assert autocast_dtype("bf16-always", torch.device("cpu")) is torch.bfloat16
    assert autocast_dtype("none", torch.device("cpu")) is None
    load_config(None, {"train": {"amp": "bf16-always"}})
    with pytest.raises(PpidError, match=re.escape("train.amp must be one of bf16|fp16|none|bf16-always, got 'bf17'")):
        load_config(None, {"train": {"amp": "bf17"}})
