"""The reproduction plan: which runs the paper's tables need, in which order, and running them.

A plan is a list of `Run`s: per family one teacher (seed 0, shared by all its students), then per
seed the students each table needs (`TABLE_VARIANTS`). Every run has a config built from the
family's built-in experiment config (Table 5's weights), the variant's distillation switches and
the budget's schedule, with paths relative to the output folder. Its hash (the config plus the
teacher's hash) names what it computes: a run whose result.json carries the same hash is done and
skipped; a run with a checkpoint of the same config resumes from it.

Protocol: students select their weights on a validation split (own foregrounds, never trained on,
never the test set); the test set is read once per finished run, for the final tables.
"""

import copy
import hashlib
import json
import shutil
import threading
import time
from pathlib import Path
from typing import NamedTuple

from .. import PpidError
from ..config import ADDED_LATER, load_config, validate
from ..io import atomic_path, exclusive, sha256_file
from ..models import revision

FAMILIES = ("indexnet", "gca", "dim")  # cheapest first: partial plans finish whole families
TABLES = (1, 3, 4, 6)

# The students of each table, besides the teacher every family has. "noclsd": ALD without
# semantic distillation (Table 3's first row); "noald": CLSD without local distillation (Tables 4
# and 6's first row); "ppid" is CLSD + ALD, the last row of every table.
TABLE_VARIANTS = {
    1: ("baseline", "ppid"),
    3: ("noclsd", "sd", "ppid"),
    4: ("noald", "ld", "ppid"),
    6: ("noald", "ald_f", "ald_a", "ppid"),
}
VARIANTS = {  # variant -> (mode, distill.semantic, distill.local)
    "baseline": ("student", None, None),
    "ppid": ("ppid", "clsd", "ald"),
    "noclsd": ("ppid", "none", "ald"),
    "sd": ("ppid", "sd", "ald"),
    "noald": ("ppid", "clsd", "none"),
    "ld": ("ppid", "clsd", "ld"),
    "ald_f": ("ppid", "clsd", "ald_f"),
    "ald_a": ("ppid", "clsd", "ald_a"),
}

# Beyond the paper (issue 13): PPID students distilled from another family's teacher through 1x1
# adapters (distill/adapt.py), as (student family, teacher family). Planned with Table 1 when both
# families are, after both families' Table 1 runs; variant "ppid_from_<teacher family>".
CROSS_FAMILY = (("indexnet", "gca"),)
CROSS_PREFIX = "ppid_from_"

# Budgets: data sizes and one schedule for every run. cpu_small keeps issue 11's floor (2000
# iterations at 128 px, 400 training foregrounds): its whole plan is about 45 h of a 2-core CPU, so
# it fills in over sessions (docs/results.md, plan cost).
BUDGETS = {
    "smoke": {
        "device": "cpu", "synth_size": 96, "n_train": 16, "n_val": 4, "n_test": 6, "test_per_fg": 1,
        "size": 64, "batch_size": 4, "iterations": 40, "val_every": 20, "ckpt_every": 20, "log_every": 10, "workers": 0,
        "grad_clip": 5.0,  # its teacher has 40 steps: raw features that can blow CLSD up (as the demo)
    },
    "cpu_small": {
        "device": "cpu", "synth_size": 256, "n_train": 400, "n_val": 32, "n_test": 60, "test_per_fg": 2,
        "size": 128, "batch_size": 8, "iterations": 2000, "val_every": 500, "ckpt_every": 100, "log_every": 50, "workers": 1,
        "grad_clip": 0.0,
    },
    "gpu_small": {
        "device": "cuda", "synth_size": 512, "n_train": 400, "n_val": 40, "n_test": 60, "test_per_fg": 2,
        "size": 256, "batch_size": 32, "iterations": 1500, "val_every": 500, "ckpt_every": 250, "log_every": 50, "workers": 4,
        "grad_clip": 0.0,
    },
    "paper": {  # Section 4.2 / App. A schedule on the procedural benchmark (or --data-root)
        "device": "auto", "synth_size": 1024, "n_train": 431, "n_val": 50, "n_test": 50, "test_per_fg": 20,
        "size": 512, "batch_size": 64, "iterations": 50000, "val_every": 5000, "ckpt_every": 1000, "log_every": 100, "workers": 8,
        "grad_clip": 0.0,
    },
}
# Data seeds: the three splits have disjoint foregrounds (synth seeds), so validation never sees
# training or test foregrounds. Seed 1 is the test set of the earlier experiments.
DATA_SEEDS = {"train": 0, "test": 1, "val": 2}
SELECTION = "val-best: the step with the lowest whole-image SAD on the validation split"
RESULT = "result.json"
EMPTY_MATTE = "empty_matte.json"  # the report's floor on this plan's test set, with the data spec it belongs to
LOG = "log.jsonl"  # train's log: one JSON record per logged step, validation and event


class Run(NamedTuple):
    family: str
    variant: str  # "teacher" or a key of VARIANTS
    seed: int
    config: dict  # paths relative to the plan's folder
    hash: str
    teacher: str | None  # the teacher run's folder, for students that distil

    @property
    def folder(self):
        return f"runs/{self.family}/{self.variant}/seed{self.seed}"

    @property
    def teacher_family(self):
        """The family of the teacher this run distils from (None for teachers and baselines)."""
        return self.teacher.split("/")[1] if self.teacher else None

    @property
    def kind(self):
        return "teacher" if self.variant == "teacher" else self.config["mode"]


def _hash(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


# Config keys that do not change what a run computes (names, output, logging cadence, loader
# processes). They, and config.ADDED_LATER's keys at their old-behaviour value, stay out of the
# hash, so that finished runs remain valid.
NOT_HASHED = {"name", "train.out", "train.log_every", "train.image_every", "train.ckpt_every", "data.workers"}


def _flatten(cfg, prefix=""):
    out = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def run_hash(cfg, data, teacher_hash):
    """What a run computes: its config (less NOT_HASHED), the data, its teacher's hash, and the
    revision of its network once a fix has changed it (revision 1 stays out: old hashes hold)."""
    flat = {k: v for k, v in _flatten(cfg).items()
            if k not in NOT_HASHED and not (k in ADDED_LATER and v == ADDED_LATER[k])}
    what = {"config": flat, "data": data, "teacher": teacher_hash}
    network = revision(cfg["model"]["family"])
    if network > 1:
        what["revision"] = network
    return _hash(what)


def budget_settings(budget, iterations=None, device=None):
    """The budget's settings; `iterations` and `device` override its schedule and training device."""
    if budget not in BUDGETS:
        raise PpidError(f"unknown budget {budget!r}; expected one of {', '.join(BUDGETS)}")
    settings = dict(BUDGETS[budget])
    if device is not None:
        settings["device"] = device
    if iterations is not None:
        settings["iterations"] = int(iterations)
        settings["val_every"] = min(settings["val_every"], settings["iterations"])
    return settings


def data_spec(settings, synth_version):
    """What the data folders hold; part of every run's hash."""
    keys = ("synth_size", "n_train", "n_val", "n_test", "test_per_fg")
    return {"synth_version": synth_version, "seeds": DATA_SEEDS, **{k: settings[k] for k in keys}}


def run_config(family, variant, seed, settings, teacher_folder=None):
    """The training config of one run (paths relative to the plan's folder)."""
    if variant == "teacher":
        cfg = load_config(f"{family}_teacher")
    else:
        cross = variant.startswith(CROSS_PREFIX)
        mode, semantic, local = VARIANTS["ppid" if cross else variant]
        cfg = load_config(f"{family}_{'student' if mode == 'student' else 'ppid'}", {"distill": {"teacher": "set below"}})
        cfg["mode"] = mode
        if mode == "ppid":
            cfg["distill"].update(semantic=semantic, local=local, teacher=f"{teacher_folder}/model_best.safetensors",
                                  cross_family=cross)
        else:
            cfg["distill"]["teacher"] = None
    cfg["name"] = f"{family}_{variant}_seed{seed}"
    cfg["data"].update(train_root="data/train", val_root="data/val", size=settings["size"], workers=settings["workers"])
    cfg["optim"].update(iterations=settings["iterations"], batch_size=settings["batch_size"], grad_clip=settings["grad_clip"])
    cfg["train"].update(
        device=settings["device"], seed=seed, val_every=settings["val_every"], ckpt_every=settings["ckpt_every"],
        log_every=settings["log_every"], image_every=settings["iterations"], out=None,
    )
    validate(cfg)
    return cfg


def make_plan(tables=TABLES, families=FAMILIES, seeds=(0, 1, 2), budget="cpu_small", iterations=None, synth_version=2,
              device=None):
    """The runs in execution order: Table 1 for every family first (teacher, then baseline and
    PPID per seed, so paired results land early; a CROSS_FAMILY student once both of its families'
    Table 1 runs are planned), then each family's ablation students."""
    tables = sorted(set(tables))
    unknown = set(tables) - set(TABLE_VARIANTS)
    if unknown:
        raise PpidError(f"unknown table(s) {sorted(unknown)}; ppid reproduce runs tables {', '.join(map(str, TABLES))}")
    bad = set(families) - set(FAMILIES)
    if bad:
        raise PpidError(f"unknown famil{'ies' if len(bad) > 1 else 'y'} {sorted(bad)}; expected {', '.join(FAMILIES)}")
    settings = budget_settings(budget, iterations, device)
    data = data_spec(settings, synth_version)
    runs, teachers = [], {}

    def add(family, variant, seed, teacher_family=None):
        if any(r.family == family and r.variant == variant and r.seed == seed for r in runs):
            return
        teacher = teachers.get(teacher_family or family)
        cfg = run_config(family, variant, seed, settings, teacher.folder if teacher else None)
        distils = cfg["mode"] == "ppid"
        runs.append(Run(family, variant, seed, cfg, run_hash(cfg, data, teacher.hash if distils else None), teacher.folder if distils else None))
        if variant == "teacher":
            teachers[family] = runs[-1]

    def students(family, table_list):
        for seed in seeds:
            for table in table_list:
                for variant in TABLE_VARIANTS[table]:
                    add(family, variant, seed)

    first = [t for t in tables if t == 1]
    rest = [t for t in tables if t != 1]
    for family in families:
        add(family, "teacher", 0)
        students(family, first)
        for student, teacher in CROSS_FAMILY:
            if first and {student, teacher} <= set(teachers):  # add() skips runs already planned
                for seed in seeds:
                    add(student, CROSS_PREFIX + teacher, seed, teacher_family=teacher)
    for family in families:
        students(family, rest)
    return runs, settings, data


# -- data -----------------------------------------------------------------------------------------
def prepare_data(root, settings, data, workers=2):
    """Synthesise the train / val / test splits (skipped when the folder records the same spec).
    One process writes them; another plan process started beside it waits and then reuses them."""
    root = Path(root)
    with exclusive(lock_file(root, "data"), f"{root / 'data'}"):
        _write_data(root, settings, data, workers)


def _write_data(root, settings, data, workers):
    from ..data.synth import synthesize
    from ..data.testset import build_testset

    size = (settings["synth_size"], settings["synth_size"])
    stamp = root / "data" / "spec.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == data:
        return
    shutil.rmtree(root / "data", ignore_errors=True)
    version = data["synth_version"]
    synthesize(root / "data" / "train", settings["n_train"], seed=DATA_SEEDS["train"], size=size, workers=workers, version=version)
    for split, n, per_fg in (("val", settings["n_val"], 1), ("test", settings["n_test"], settings["test_per_fg"])):
        src = root / "data" / f"{split}_src"
        synthesize(src, n, seed=DATA_SEEDS[split], size=size, workers=workers, version=version)
        build_testset(src / "fg", src / "alpha", src / "bg", per_fg, root / "data" / split, split=src / "split.txt")
    with atomic_path(stamp) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


# -- running --------------------------------------------------------------------------------------
def absolute(cfg, root, folder):
    """The run's config with its paths under `root`."""
    cfg = copy.deepcopy(cfg)
    cfg["data"]["train_root"] = str(root / cfg["data"]["train_root"])
    cfg["data"]["val_root"] = str(root / cfg["data"]["val_root"])
    if cfg["distill"]["teacher"]:
        cfg["distill"]["teacher"] = str(root / cfg["distill"]["teacher"])
    cfg["train"]["out"] = str(root / folder)
    return cfg


def status(run, root):
    """'done' (result with this hash), 'resume' (a checkpoint of this config) or 'pending'."""
    folder = Path(root) / run.folder
    result = folder / RESULT
    if result.is_file():
        try:
            if json.loads(result.read_text()).get("hash") == run.hash:
                return "done"
        except json.JSONDecodeError:
            pass
    return "resume" if _checkpoint_matches(run, root) else "pending"


def adopt(run, root):
    """Take over a finished run of the same hash from a sibling folder (a calibration run whose
    reading became the default); True when the run is then done."""
    root = Path(root)
    for result in root.glob(f"runs/{run.family}/*/seed{run.seed}/{RESULT}"):
        folder = result.parent
        if folder != root / run.folder and json.loads(result.read_text()).get("hash") == run.hash:
            shutil.copytree(folder, root / run.folder, dirs_exist_ok=True)
            return True
    return False


def _checkpoint_matches(run, root):
    folder = Path(root) / run.folder
    meta = folder / "checkpoint_hash.txt"
    return (folder / "checkpoint_last.pt").is_file() and meta.is_file() and meta.read_text().strip() == run.hash


WALL_CLOCK_EVERY_S = 60  # how often a training run's time is saved: a killed run loses at most this


def _write_spent(path, seconds):
    with atomic_path(path) as tmp:
        tmp.write_text(f"{seconds:.1f}\n")


def lock_file(root, name):
    """The lock that lets one plan process at a time write `name` (the data, or a run's folder)."""
    return Path(root) / ".locks" / (name.replace("/", "__") + ".lock")


RECORD = ("result.json", "config.json", "log.jsonl", "train_wall_s.txt", "retrains.jsonl")  # a run's committed files


def execute(run, root, runs_by_folder, log=print):
    """Train (or resume) one run, evaluate its selected weights on the test set once, and write
    its result.json. A student whose teacher's weights are missing (a fresh machine: weights are
    not committed) first retrains that teacher from its seed. Plan processes started side by side
    (`--only`) take turns on a run's folder: one that waits for a run another process finishes
    returns that result."""
    root = Path(root)
    if run.teacher:
        teacher = runs_by_folder[run.teacher]
        with exclusive(lock_file(root, teacher.folder), teacher.folder, log):
            # a teacher stopped part-way has weights (its best so far) but no result: it resumes
            if not weights_ready(teacher, root):
                log(f"reproduce: {teacher.folder}: teacher weights missing or unfinished; training it from its seed")
                _retrain(teacher, root, log)
    with exclusive(lock_file(root, run.folder), run.folder, log):
        if status(run, root) == "done":
            return json.loads((root / run.folder / RESULT).read_text())
        return _train_and_test(run, root)


def weights_ready(run, root):
    """A finished run whose selected weights are on this machine: a teacher its students can
    learn from without retraining it."""
    return status(run, root) == "done" and (Path(root) / run.folder / "model_best.safetensors").is_file()


def teachers_trained_first(runs, runs_by_folder, root):
    """The teachers that training `runs` trains first (weights missing or unfinished; every
    teacher on a fresh machine), in plan order, leaving out those `runs` holds itself."""
    folders = {run.teacher for run in runs if run.teacher} - {run.folder for run in runs}
    return [run for run in runs_by_folder.values() if run.folder in folders and not weights_ready(run, root)]


def trained_steps(run, root):
    """The iterations the run's matching checkpoint holds (0 without one): what resuming it skips."""
    if not _checkpoint_matches(run, root):
        return 0
    from ..train import CHECKPOINT, load_checkpoint

    return int(load_checkpoint(Path(root) / run.folder / CHECKPOINT)["step"])


def record_stash(root, folder):
    """Where a retraining run's committed record (RECORD's files, as text) waits."""
    return lock_file(root, folder).with_suffix(".record.json")


def recorded_file(run, root, name):
    """The text of one of a run's RECORD files: from its folder, or, while a retrain rewrites the
    folder (no result.json there yet), from the record kept beside the locks; None without one."""
    folder = Path(root) / run.folder
    stash = record_stash(root, run.folder)
    if not (folder / RESULT).is_file() and stash.is_file():
        return json.loads(stash.read_text()).get(name)
    return (folder / name).read_text() if (folder / name).is_file() else None


def recorded_result(run, root):
    """The run's result.json as a dict (see recorded_file), or None."""
    text = recorded_file(run, root, RESULT)
    return None if text is None else json.loads(text)


def divergence(run, root):
    """A finished run's recorded divergence ({"step", "error"}: its loss stayed NaN/inf), or None."""
    result = recorded_result(run, root)
    return result.get("diverged") if result is not None and result.get("hash") == run.hash else None


def _retrain(run, root, log):
    """Train a finished run again for its weights, and keep its committed record: that record
    describes the weights the earlier students learned from. Each retrain adds a line to the run's
    retrains.jsonl: its weights checksum, its test result, and whether it reproduces the record
    (same selected step, same test results; training is deterministic on one machine, but another
    machine, even of the same kind, sums in another order: results/retrain_determinism/). Students
    name the weights they learned from (`teacher_sha256`)."""
    folder = root / run.folder
    # The record waits beside the locks while training rewrites the folder, so that a retrain
    # interrupted and resumed on this machine still knows it (and the report still shows it).
    stash = record_stash(root, run.folder)
    if stash.is_file():
        recorded = json.loads(stash.read_text())
    else:
        recorded = {name: (folder / name).read_text() for name in RECORD if (folder / name).is_file()}
        with atomic_path(stash) as tmp:
            tmp.write_text(json.dumps(recorded))
    before = json.loads(recorded["result.json"]) if "result.json" in recorded else None
    if before is not None and before.get("hash") != run.hash:
        before = None  # another config's record: nothing to keep
    if status(run, root) == "done":  # a finished run's last checkpoint cannot give back its val-best weights
        (folder / "checkpoint_last.pt").unlink(missing_ok=True)
    result = _train_and_test(run, root)
    if before is None:
        stash.unlink()
        return
    same = (result["selected_step"], result["test"]) == (before["selected_step"], before["test"])
    if same:  # the same weights: the record names this file (ppid before 0.1.1 wrote varying bytes)
        recorded["result.json"] = json.dumps(dict(before, weights_sha256=result["weights_sha256"]), indent=2) + "\n"
    entry = {key: result.get(key) for key in ("weights_sha256", "selected_step", "device", "precision", "train_wall_s")}
    entry.update(sad_whole=result["test"]["results"]["whole"]["all"]["sad"], reproduces_record=same)
    recorded["retrains.jsonl"] = recorded.get("retrains.jsonl", "") + json.dumps(entry) + "\n"
    for name, text in recorded.items():
        with atomic_path(folder / name) as tmp:
            tmp.write_text(text)
    stash.unlink()
    if same:
        log(f"reproduce: {run.folder}: the retrained weights reproduce the recorded test results exactly")
    else:
        log(f"reproduce: {run.folder}: note: the retrained weights do not reproduce the recorded test results "
            f"(whole-image SAD {entry['sad_whole']:.3f} against {before['test']['results']['whole']['all']['sad']:.3f}, "
            f"step {result['selected_step']} against {before['selected_step']}); the record is kept, "
            "the retrain is listed in retrains.jsonl")


def _train_and_test(run, root):
    from ..train import TrainingDiverged, train

    folder = root / run.folder
    resume = "last" if _checkpoint_matches(run, root) else None
    if resume is None and folder.exists():
        shutil.rmtree(folder)  # another config's leftovers: start clean
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "checkpoint_hash.txt").write_text(run.hash + "\n")
    spent_file = folder / "train_wall_s.txt"
    spent = float(spent_file.read_text()) if resume and spent_file.is_file() else 0.0
    started, stop = time.time(), threading.Event()

    def save_spent():  # also while training: a session that ends hard kills without `finally`
        while not stop.wait(WALL_CLOCK_EVERY_S):
            _write_spent(spent_file, spent + time.time() - started)

    saver = threading.Thread(target=save_spent, daemon=True)
    saver.start()
    diverged = None
    try:
        outcome = train(absolute(run.config, root, run.folder), resume=resume)
    except TrainingDiverged as err:
        diverged = err
    finally:  # an interrupted run's time counts too, and its record is committed as it stands
        stop.set()
        saver.join()  # its last write must not land after the final one below
        spent += time.time() - started
        _write_spent(spent_file, spent)
        record_relative(folder, root)
    if diverged is not None and run.kind == "teacher":
        raise diverged  # every student of it needs working weights: the plan cannot go past it
    if diverged is not None:  # an outcome of this config, recorded so that the plan goes on past it
        error = str(diverged).replace(str(Path(root).resolve()) + "/", "")
        result = {"hash": run.hash, "family": run.family, "variant": run.variant, "seed": run.seed,
                  "diverged": {"step": diverged.step, "error": error}}
    else:
        result = evaluate_run(run, root, outcome)
    result["train_wall_s"] = round(spent, 1)
    result["precision"] = None if diverged else outcome.get("precision")
    with atomic_path(folder / RESULT) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    return result


def record_relative(folder, root):
    """Rewrite the run's config.json and log.jsonl with its paths relative to the plan folder:
    training needs this machine's paths, the committed record must not carry them."""
    prefix = str(Path(root).resolve()) + "/"

    def strip(value):
        if isinstance(value, str):
            return value[len(prefix):] if value.startswith(prefix) else value
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    config, log = Path(folder) / "config.json", Path(folder) / LOG
    if config.is_file():
        with atomic_path(config) as tmp:
            tmp.write_text(json.dumps(strip(json.loads(config.read_text())), indent=2))
    if log.is_file():
        records = read_log(folder)
        with atomic_path(log) as tmp:
            tmp.write_text("".join(json.dumps(strip(record)) + "\n" for record in records))


def _parse_log(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_log(folder):
    """A run's training log as a list of records ([] before it has one)."""
    path = Path(folder) / LOG
    return _parse_log(path.read_text()) if path.is_file() else []


def recorded_log(run, root):
    """A run's training log as recorded_file finds it (a retraining teacher's: the kept record's)."""
    return _parse_log(recorded_file(run, root, LOG) or "")


def reevaluate(run, root):
    """Evaluate a finished run's selected weights on the test set again, with today's evaluation
    (new fields in the summary), keeping everything else of its result. The weights must be the
    ones the result names (same SHA-256), on the kind of device that evaluated them; returns False
    when either is not on this machine."""
    import torch

    folder = Path(root) / run.folder
    path = folder / RESULT
    result = json.loads(path.read_text())
    weights = _selected_weights(folder, result["selection"].startswith("val-best"))
    on_gpu = result["device"] != "cpu"
    if not weights.is_file() or (on_gpu and not torch.cuda.is_available()):
        return False
    if sha256_file(weights) != result["weights_sha256"]:
        raise PpidError(f"{weights}: not the weights {path} was evaluated with (SHA-256 differs)")
    device = torch.device("cuda" if on_gpu else "cpu")
    result["test"], recalibrated = _test_summaries(run, weights, root, device)
    if recalibrated is not None:
        result["test_recalibrated"] = recalibrated
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    return True


def evaluate_run(run, root, outcome):
    """Test-set metrics of the run's selected weights (val-best, else last)."""
    import torch

    best = outcome.get("best")
    weights = _selected_weights(Path(root) / run.folder, best)
    device = torch.device("cuda" if run.config["train"]["device"] != "cpu" and torch.cuda.is_available() else "cpu")
    summary, recalibrated = _test_summaries(run, weights, root, device)
    return {
        "hash": run.hash,
        "family": run.family,
        "variant": run.variant,
        "seed": run.seed,
        "selection": f"val-best (step {best['step']}, val SAD {best['SAD']:.4f})" if best else "last",
        "selected_step": best["step"] if best else run.config["optim"]["iterations"],
        "weights_sha256": sha256_file(weights),
        "teacher_sha256": sha256_file(Path(root) / run.teacher / "model_best.safetensors") if run.teacher else None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "config": run.config,
        "test": summary,
        "test_recalibrated": recalibrated,
    }


def _selected_weights(folder, val_best):
    """The weights a run is evaluated with: the val-best file when validation picked one."""
    return Path(folder) / ("model_best.safetensors" if val_best else "model_last.safetensors")


RECALIBRATION_IMAGES = 64  # whole training composites for `test_recalibrated` (at most the training set)


def _test_summaries(run, weights, root, device):
    """Metrics of one model file on the plan's test set; for a student also (beyond the paper)
    after its BatchNorm statistics are recomputed on whole training composites (`ppid
    recalibrate`), else None. The model is loaded once and recalibrated in place after the first."""
    from ..data.datasets import CompositeTestSet
    from ..evaluate import evaluate_model
    from ..models import load_model
    from ..recalibrate import recalibrate_batchnorm, whole_composites

    model, testset = load_model(weights, device=device), CompositeTestSet(Path(root) / "data" / "test")
    summary = evaluate_model(model, testset, device)
    if run.variant == "teacher":
        return summary, None
    train = Path(root) / "data" / "train"
    count = min(RECALIBRATION_IMAGES, sum(1 for _ in (train / "fg").iterdir()))
    recalibrate_batchnorm(model, whole_composites(train, count), device)
    return summary, evaluate_model(model, testset, device)
