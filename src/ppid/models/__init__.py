"""Model registry: `build(family, role, cross_layer=False, **options)`, `list_models()`,
`save_model(model, path)` / `load_model(path)` (safetensors + JSON build arguments, no pickle)."""

import importlib
import json
import os
import re
from pathlib import Path

from .. import PpidError
from .common import DecoderTap, MattingNet, MattingOutput  # noqa: F401  (public API)

FAMILIES = {"dim": "ppid.models.dim", "indexnet": "ppid.models.indexnet", "gca": "ppid.models.gca"}
ROLES = ("teacher", "student")

# Parameter counts quoted in the paper (Table 1): teachers and baseline students share the
# figure; PPID students carry the CLSD connectors.
PAPER_PARAMS = {
    "dim": {"plain": 25.58e6, "ppid": 29.12e6},
    "indexnet": {"plain": 5.95e6, "ppid": 6.47e6},
    "gca": {"plain": 25.13e6, "ppid": 26.60e6},
}


def list_models():
    """(family, role, cross_layer) for the nine networks: teacher, student, PPID student."""
    return [(f, r, c) for f in FAMILIES for r, c in (("teacher", False), ("student", False), ("student", True))]


def revision(family):
    """The revision of a family's network. It changes when a fix changes what the network computes
    (models/<family>.py says how); model files record it, and the reproduction plan does not reuse
    results of an earlier revision."""
    if family not in FAMILIES:
        raise PpidError(f"unknown model family {family!r}; choose from {', '.join(FAMILIES)}")
    return getattr(importlib.import_module(FAMILIES[family]), "REVISION", 1)


def build(family, role, cross_layer=False, backbone_weights=None, **options):
    if family not in FAMILIES:
        raise PpidError(f"unknown model family {family!r}; choose from {', '.join(FAMILIES)}")
    if role not in ROLES:
        raise PpidError(f"unknown role {role!r}; choose from {', '.join(ROLES)}")
    current = revision(family)
    if current > 1:  # recorded in the build arguments, so that files say what they hold
        options.setdefault("revision", current)
    module = importlib.import_module(FAMILIES[family])
    model = module.build(role, cross_layer=cross_layer, **options)
    model.build_args = dict(family=family, role=role, cross_layer=bool(cross_layer), **options)
    if backbone_weights is not None:
        model.load_backbone(backbone_weights)
    return model


def count_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_model(model, path):
    """Weights as safetensors with the build arguments in its metadata: reloading needs no pickle
    and runs no code from the file."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    from ..io import atomic_path, write_failure

    args = getattr(model, "build_args", None)
    if args is None:
        raise PpidError("model was not made by ppid.models.build; its build arguments are unknown")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # One metadata entry: safetensors writes several in a random order, so the same weights would
    # give files of other bytes (and checksums) from one process to the next.
    meta = {"ppid_build": json.dumps(args, sort_keys=True)}
    existed = Path(path).is_file()
    try:
        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata=meta)
    except (OSError, SafetensorError) as err:
        raise write_failure(path, "model file", _reason(err), existed) from None


def _reason(err):
    """A short reason from an OSError or a safetensors error ("... (os error 28)")."""
    if isinstance(err, OSError):
        return err.strerror or str(err)
    code = re.search(r"os error (\d+)", str(err))
    return os.strerror(int(code.group(1))) if code else str(err).split(": ", 1)[-1]


def read_build_args(path):
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise PpidError(f"{path}: model file not found")
    with open(path, "rb") as f:
        if f.read(4) == b"PK\x03\x04":  # torch.save's zip archive
            raise PpidError(f"{path}: not a ppid model file (a torch.save archive such as a training checkpoint; "
                            "the model is the .safetensors file beside it)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:
        raise PpidError(f"{path}: not a ppid model file (damaged or not safetensors: {_reason(err)})") from None
    if "ppid_build" not in meta:
        raise PpidError(f"{path}: safetensors file without ppid build arguments (not saved by ppid)")
    try:
        args = json.loads(meta["ppid_build"])
    except json.JSONDecodeError:
        args = None
    if not isinstance(args, dict):
        raise PpidError(f"{path}: not a ppid model file (unreadable build arguments)")
    return args


def load_model(path, device="cpu"):
    from safetensors.torch import load_file

    args = read_build_args(path)
    if args.get("family") in FAMILIES and revision(args["family"]) > 1:
        args.setdefault("revision", 1)  # written before the family's first revision
    try:
        model = build(**args)
    except (TypeError, PpidError) as err:
        raise PpidError(f"{path}: not a ppid model file (build arguments {args}: {err})") from None
    state = load_file(str(path), device=str(device))
    own = model.state_dict()
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    reshaped = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if missing or unexpected or reshaped:
        raise PpidError(
            f"{path}: weights do not match {args}: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shape {reshaped[:5]}"
        )
    model.load_state_dict(state)
    return model.to(device).eval()
