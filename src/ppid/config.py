"""Training configuration: plain nested values, every key declared in DEFAULTS.

A YAML file overrides DEFAULTS; `base: other.yaml` (relative to the file) lets a variant start from
another file; `--set section.key=value` overrides last (values parsed as YAML). An unknown key is
an error, so a typo never silently trains the wrong thing.
"""

import copy
from pathlib import Path

import yaml

from . import PpidError
from .data.augment import check_crop_centre

DEFAULTS = {
    "name": "run",
    "mode": "teacher",  # teacher | student | ppid
    "model": {
        "family": "indexnet",  # dim | indexnet | gca
        "backbone_weights": None,  # local torchvision-format .pth/.safetensors (ImageNet init)
        "connectors": "auto",  # CLSD's cross-layer connectors in the student: auto (iff ppid + clsd) | true | false
    },
    "distill": {  # used by mode: ppid
        "teacher": None,  # teacher weights (.safetensors from `ppid train` / save_model)
        "cross_family": False,  # allow a teacher of another family (1x1-conv adapters, distill/adapt.py)
        "semantic": "clsd",  # none | sd | clsd
        "local": "ald",  # none | ld | ald | ald_f | ald_a
        "lambda1": 0.2,  # Table 5
        "lambda2": 1.0,
        "alpha": 0.002,
        "beta": 0.0002,
        "gamma": 1.0,
        "temperature": 0.5,
        "attention_norm": "fgd",  # ALD's M: softmax | positions | fgd (docs/training.md, calibration)
        "gc_ratio": 2,
        "reduction": "mean",  # CLSD squared error: mean over elements | sum over C,H,W (diverges, docs/training.md)
        # share of optim.iterations that distils; the steps after it train on L_alpha alone, without
        # the teacher (not the paper's: a diagnostic of a late-schedule cost, results/long_schedule)
        "until": 1.0,
    },
    "data": {
        "train_root": None,  # fg/alpha/bg dataset folder (synthetic, custom, Adobe, D646)
        "layout": "auto",
        "bg_dir": None,
        "val_root": None,  # a built test set (merged/, alpha/, trimaps/, split.txt)
        "val_max_items": None,
        "size": 512,  # training crop size after resizing
        "crop_sizes": [512, 640, 960],  # at size 512; scaled with size
        "jitter": False,
        # largest random erosion kernel of the training trimaps, at 512 px, scaled with `size`: DIM's
        # 30; larger trains a teacher for wide unknown bands (refine mode, docs/predict.md)
        "trimap_kernel_max": 30,
        # where crops are centred: "transition" (the paper's DIM rule: every crop holds the object's
        # edge) | "anywhere" (trimap-free methods' random crops: far background too; docs/training.md)
        "crop_centre": "transition",
        "augmenter": "auto",  # auto (batch on CUDA, loader on CPU) | loader | batch
        "workers": 2,
        "bank_max_side": 1024,
    },
    "optim": {  # Section 4.2
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 0.0005,
        "poly_power": 0.9,
        "iterations": 50000,
        "batch_size": 64,
        "grad_clip": 0.0,  # 0 = off
    },
    "train": {
        "device": "auto",  # auto | cpu | cuda
        "amp": "bf16",  # bf16 | fp16 | none | bf16-always; CPU: bf16 only where native (bf16-always: emulated too)
        "channels_last": True,  # CUDA only
        "compile": False,  # torch.compile the objective and the teacher (docs/training.md: what it measured)
        "seed": 0,
        "log_every": 20,
        "val_every": 1000,
        "image_every": 1000,
        "ckpt_every": 500,
        "max_nonfinite": 5,  # abort after this many non-finite losses in a row
        "out": None,  # default runs/<name>
    },
}

# Keys added after checkpoints and results were first written, with the value that keeps the
# behaviour from before them: an old config without the key means this value (reproduce's run
# hashes and train's resume warning rely on it).
ADDED_LATER = {"distill.cross_family": False, "train.compile": False, "data.trimap_kernel_max": 30,
               "data.crop_centre": "transition", "distill.until": 1.0, "model.connectors": "auto"}

MODES = ("teacher", "student", "ppid")
AMPS = ("bf16", "fp16", "none", "bf16-always")  # train.amp


def _merge(base, override, where):
    out = copy.deepcopy(base)
    for key, value in override.items():
        path = f"{where}.{key}" if where else key
        if key not in base:
            raise PpidError(f"unknown config key {path!r}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise PpidError(f"config key {path!r} must be a mapping")
            out[key] = _merge(base[key], value, path)
        else:
            out[key] = value
    return out


def _read_yaml(path, seen=()):
    path = Path(path)
    if not path.is_file():
        raise PpidError(f"{path}: config file not found")
    if path.resolve() in seen:
        raise PpidError(f"{path}: 'base' chain loops")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise PpidError(f"{path}: invalid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise PpidError(f"{path}: config must be a mapping")
    base = raw.pop("base", None)
    if base is None:
        return raw
    parent = _read_yaml(path.parent / base, seen + (path.resolve(),))
    return _deep_update(parent, raw)


def _deep_update(a, b):
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_set(items):
    """['optim.lr=0.1', ...] -> nested dict (values parsed as YAML scalars/lists)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise PpidError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


BUILTIN = Path(__file__).parent / "configs"  # shipped with the package: one per experiment of the paper


def builtin_configs():
    return sorted(p.stem for p in BUILTIN.glob("*.yaml"))


def resolve_config(name_or_path):
    """A YAML path, or a built-in experiment name (`indexnet_ppid`, `dim_ppid_ld.yaml`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    builtin = BUILTIN / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if path.parent == Path(".") and builtin.is_file():
        return builtin
    raise PpidError(f"{name_or_path}: no such config file, and not a built-in config (`ppid train --list-configs` lists them)")


def load_config(path=None, overrides=None):
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        cfg = _merge(cfg, _read_yaml(resolve_config(path)), "")
    if overrides:
        cfg = _merge(cfg, overrides if isinstance(overrides, dict) else parse_set(overrides), "")
    validate(cfg)
    return cfg


def validate(cfg):
    if cfg["mode"] not in MODES:
        raise PpidError(f"mode must be one of {MODES}, got {cfg['mode']!r}")
    d = cfg["distill"]
    if d["semantic"] not in ("none", "sd", "clsd"):
        raise PpidError(f"distill.semantic must be none|sd|clsd, got {d['semantic']!r}")
    if d["local"] not in ("none", "ld", "ald", "ald_f", "ald_a"):
        raise PpidError(f"distill.local must be none|ld|ald|ald_f|ald_a, got {d['local']!r}")
    if d["attention_norm"] not in ("softmax", "positions", "fgd"):
        raise PpidError(f"distill.attention_norm must be softmax|positions|fgd, got {d['attention_norm']!r}")
    if isinstance(d["until"], bool) or not isinstance(d["until"], (int, float)) or not 0 < d["until"] <= 1:
        raise PpidError(f"distill.until must be a share of the iterations in (0, 1], got {d['until']!r}")
    connectors = cfg["model"]["connectors"]
    if connectors != "auto" and not isinstance(connectors, bool):
        raise PpidError(f"model.connectors must be auto, true or false, got {connectors!r}")
    if connectors is True and cfg["mode"] == "teacher":
        raise PpidError("model.connectors: true is for students (the teacher has no cross-layer connectors)")
    if connectors is False and cfg["mode"] == "ppid" and d["semantic"] == "clsd":
        raise PpidError("model.connectors: false cannot train CLSD (its cross-layer term distils the connectors' output)")
    if cfg["mode"] == "ppid" and not d["teacher"]:
        raise PpidError("mode ppid needs distill.teacher (the trained teacher's weights file)")
    check_crop_centre(cfg["data"]["crop_centre"])
    if cfg["data"]["size"] % 32:
        raise PpidError(f"data.size must be a multiple of 32, got {cfg['data']['size']}")
    if cfg["optim"]["batch_size"] < 1 or cfg["optim"]["iterations"] < 1:
        raise PpidError("optim.batch_size and optim.iterations must be positive")
    if not isinstance(cfg["train"]["compile"], bool):
        raise PpidError(f"train.compile must be true or false, got {cfg['train']['compile']!r}")
    if cfg["train"]["amp"] not in AMPS:
        raise PpidError(f"train.amp must be one of {'|'.join(AMPS)}, got {cfg['train']['amp']!r}")
