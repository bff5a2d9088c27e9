"""`ppid train`: one engine for teachers, baseline students and PPID students.

Read top to bottom: config -> devices (DDP through torchrun) -> data -> models -> objective
(L_alpha, + gamma * (L_CLSD + L_ALD) for PPID, eq. 18) -> SGD with poly decay -> the loop
(non-finite guard, logging, image grids, validation, atomic checkpoints, resume, stopping cleanly
on SIGINT/SIGTERM).
"""

import contextlib
import json
import math
import os
import pickle
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from . import PpidError
from .config import ADDED_LATER, builtin_configs, load_config, parse_set
from .distill.adapt import TapAdapters
from .distill.ald import ald_loss
from .distill.clsd import CLSD
from .io import atomic_path, write_failure, write_image
from .losses import alpha_loss
from .metrics import NonFiniteMatte
from .models import build, load_model, save_model
from .progress import progress as progress_bar, write as write_line

CHECKPOINT = "checkpoint_last.pt"
CHECKPOINT_KEYS = ("objective", "optimizer", "scheduler", "step", "rng", "config")


def add_arguments(parser):
    parser.add_argument("--config", help="experiment YAML file, or a built-in name such as indexnet_ppid (--list-configs)")
    parser.add_argument("--list-configs", action="store_true", help="print the built-in experiment configs and exit")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. optim.lr=0.05")
    parser.add_argument("--resume", nargs="?", const="last", default=None, metavar="CKPT", help=f"resume from CKPT (default: <out>/{CHECKPOINT})")
    parser.add_argument("--out", type=Path, help="output folder (default: train.out or runs/<name>)")


def run(args):
    if args.list_configs:
        print("\n".join(builtin_configs()))
        return 0
    overrides = parse_set(args.set)
    if args.out is not None:
        overrides.setdefault("train", {})["out"] = str(args.out)
    cfg = load_config(args.config, overrides)
    last = output_folder(cfg) / CHECKPOINT
    if args.resume is None and last.is_file():  # a fresh start would overwrite that run's progress
        raise PpidError(f"{last.parent}: holds the checkpoint of an earlier run; continue it with --resume, "
                        f"or start over in another --out (or after deleting {last})")
    try:
        train(cfg, resume=args.resume)
    except TrainingInterrupted as stop:
        if stop.report:
            print(f"ppid train: interrupted at step {stop.step}; continue with: {resume_command(sys.argv)}", file=sys.stderr)
        return stop.exit_code
    return 0


def output_folder(cfg):
    return Path(cfg["train"]["out"] or Path("runs") / cfg["name"])


def resume_command(argv):
    """The user's command line with `--resume` (this run's last checkpoint) in place of any --resume."""
    words, rest = [], argv[1:]
    skip = False
    for i, word in enumerate(rest):
        if skip:
            skip = False
        elif word == "--resume":  # and its optional CKPT
            skip = i + 1 < len(rest) and not rest[i + 1].startswith("-")
        elif not word.startswith("--resume="):
            words.append(word)
    return shlex.join([*_launcher(argv[0]), *words, "--resume"])


def _launcher(argv0):
    """How ppid was started: torchrun workers, `python -m ppid` or the console script."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        local, world = os.environ.get("LOCAL_WORLD_SIZE", "1"), os.environ.get("WORLD_SIZE", "1")
        nodes = [] if local == world else [f"--nnodes={int(world) // int(local)}"]
        return ["torchrun", *nodes, f"--nproc_per_node={local}", "-m", "ppid"]
    if Path(argv0).name == "__main__.py":
        return ["python", "-m", "ppid"]
    return ["ppid"]


# -- devices -----------------------------------------------------------------------------------
def setup_devices(cfg):
    """(rank, world, device). Under torchrun: one process per GPU (NCCL) or per CPU slot (gloo)."""
    want = cfg["train"]["device"]
    if want == "cuda" and not torch.cuda.is_available():
        raise PpidError("train.device is cuda but no CUDA device is available")
    use_cuda = want == "cuda" or (want == "auto" and torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        torch.backends.cudnn.benchmark = True  # fixed training crop size: autotune the convolutions once
    else:
        device = torch.device("cpu")
    return rank, world, device


# -- data --------------------------------------------------------------------------------------
def make_batches(cfg, device, start_step, rank, world, generator_state=None):
    """Yield (batch dict on device, batch generator) for the steps from start_step.

    Loader path: sample k of step s is TrainDataset[s * B + rank * b + k] (deterministic by index),
    so a resumed run sees exactly the batches the uninterrupted run would; it ends with the
    schedule (a finished run's start_step yields nothing). Batch path: the whole batch is augmented
    on the device by BatchAugmenter from a seeded generator whose state is checkpointed; it never ends.
    """
    from .data.augment import BatchAugmenter, TrainDataset, load_bank
    from .data.datasets import find_source

    d, o = cfg["data"], cfg["optim"]
    if not d["train_root"]:
        raise PpidError("data.train_root is not set (a dataset folder: fg/, alpha/, bg/)")
    source = find_source(d["train_root"], layout=d["layout"], bg_dir=d["bg_dir"])
    per_rank = o["batch_size"] // world
    if per_rank < 1:
        raise PpidError(f"optim.batch_size {o['batch_size']} is smaller than the number of processes {world}")
    mode = d["augmenter"]
    if mode == "auto":
        mode = "batch" if device.type == "cuda" else "loader"
    if mode == "batch":
        bank = load_bank(source, device, max_side=d["bank_max_side"], crop_centre=d["crop_centre"])
        aug = BatchAugmenter(bank, d["size"], crop_sizes=d["crop_sizes"], jitter=d["jitter"], kernel_max=d["trimap_kernel_max"])
        gen = torch.Generator(device=device)
        gen.manual_seed(cfg["train"]["seed"] * 1_000_003 + rank)
        if generator_state is not None:
            gen.set_state(generator_state)
        while True:
            yield aug.sample(per_rank, gen), gen
    total = o["iterations"]
    dataset = TrainDataset(
        source, d["size"], crop_sizes=d["crop_sizes"], jitter=d["jitter"], seed=cfg["train"]["seed"],
        length=total * o["batch_size"], kernel_max=d["trimap_kernel_max"], crop_centre=d["crop_centre"],
    )
    indices = StepSampler(start_step, total, o["batch_size"], rank, per_rank)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=per_rank,
        sampler=indices,
        num_workers=d["workers"],
        pin_memory=device.type == "cuda",
        drop_last=True,
        # Its own generator: creating the iterator must not consume the global RNG (resume parity).
        generator=torch.Generator().manual_seed(cfg["train"]["seed"]),
        persistent_workers=False,
        worker_init_fn=_ignore_stop_signals,
    )
    for batch in loader:
        yield {k: v.to(device, non_blocking=True) for k, v in batch.items()}, None


class StepSampler:
    """Dataset indices of this rank's samples for steps start..total-1, generated lazily (the
    paper's 50k steps x 64 would otherwise be a 3.2M-element list per rank)."""

    def __init__(self, start, total, batch_size, rank, per_rank):
        self.start, self.total, self.batch_size, self.rank, self.per_rank = start, total, batch_size, rank, per_rank

    def __len__(self):
        return (self.total - self.start) * self.per_rank

    def __iter__(self):
        for step in range(self.start, self.total):
            first = step * self.batch_size + self.rank * self.per_rank
            yield from range(first, first + self.per_rank)


# -- models and objective ------------------------------------------------------------------------
def build_models(cfg, device):
    """(model being trained, frozen teacher or None)."""
    family, mode = cfg["model"]["family"], cfg["mode"]
    role = "teacher" if mode == "teacher" else "student"
    cross = cfg["model"]["connectors"]
    if cross == "auto":
        cross = mode == "ppid" and cfg["distill"]["semantic"] == "clsd"
    model = build(family, role, cross_layer=cross, backbone_weights=cfg["model"]["backbone_weights"])
    teacher = None
    if mode == "ppid":
        teacher = load_model(cfg["distill"]["teacher"], device=device)
        args = teacher.build_args
        other_family_ok = cfg["distill"]["cross_family"]
        if args["role"] != "teacher" or (args["family"] != family and not other_family_ok):
            hint = " (distill.cross_family: true distils across families)" if args["role"] == "teacher" else ""
            raise PpidError(
                f"{cfg['distill']['teacher']}: is a {args['family']} {args['role']}, expected a {family} teacher{hint}"
            )
        teacher.requires_grad_(False).eval()  # frozen: eval mode, no grad
    return model.to(device), teacher


PROBE_SIZE = 64  # px of the zero images that size the distillation modules from the networks' taps


class Objective(nn.Module):
    """The trained parameters (model + auxiliary GC blocks) and the loss; DDP wraps this."""

    def __init__(self, model, cfg, enc_channels=None, teacher_probe=None):
        """enc_channels: the teacher's encoder widths (CLSD's GC blocks work at them).
        teacher_probe: the teacher's output on a small probe, needed across families to size the
        adapters from the student's taps to the teacher's (distill/adapt.py)."""
        super().__init__()
        self.model = model
        self.mode = cfg["mode"]
        self.d = dict(cfg["distill"])
        self.adapters = None
        if self.mode == "ppid" and self.d["cross_family"]:
            device = next(model.parameters()).device
            was_training = model.training
            with torch.no_grad():  # eval: batch-norm statistics stay untouched by the probe
                student_probe = model.eval()(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE, device=device))
            model.train(was_training)
            self.adapters = TapAdapters(student_probe, teacher_probe)
        self.clsd = None
        if self.mode == "ppid" and self.d["semantic"] != "none":
            self.clsd = CLSD(
                enc_channels, self.d["lambda1"], self.d["lambda2"], mode=self.d["semantic"],
                gc_ratio=self.d["gc_ratio"], reduction=self.d["reduction"],
            )

    def forward(self, batch, teacher_out=None):
        trimap = batch["trimap"] if self.mode == "teacher" else None
        out = self.model(batch["image"], trimap)
        terms = alpha_loss(out.alpha_logits, batch["alpha"], batch["trimap"])
        total = terms["alpha"]
        if self.mode == "ppid" and teacher_out is not None:  # None: past distill.until
            distill = {}
            taps = out if self.adapters is None else self.adapters(out, teacher_out)
            if self.clsd is not None:
                distill.update(self.clsd(teacher_out, taps))
            distill.update(
                ald_loss(
                    teacher_out.dec, taps.dec, batch["trimap"], self.d["local"], self.d["alpha"], self.d["beta"],
                    self.d["temperature"], self.d["attention_norm"],
                )
            )
            terms.update(distill)
            if distill:
                terms["distill"] = sum(distill.values())
                total = total + self.d["gamma"] * terms["distill"]
        terms["total"] = total
        return terms, out


def make_objective(model, cfg, teacher=None):
    """The Objective for `model`; with a teacher, sized from the teacher's output on a probe
    (its encoder widths for CLSD, its taps for cross-family adapters)."""
    enc_channels = teacher_probe = None
    if teacher is not None:
        device = next(teacher.parameters()).device
        size = (1, 1, PROBE_SIZE, PROBE_SIZE)
        with torch.no_grad():
            teacher_probe = teacher(torch.zeros(1, 3, *size[2:], device=device), torch.full(size, 0.5, device=device), taps_only=True)
        enc_channels = [f.shape[1] for f in teacher_probe.enc]
    return Objective(model, cfg, enc_channels, teacher_probe)


def forward_losses(objective, teacher, batch, amp):
    """One training forward pass under autocast: the frozen teacher without gradients and only up to
    its last distillation tap (its alpha is never read), then the objective (plain or DDP-wrapped).
    Returns (loss terms, student output, teacher output or None)."""
    with torch.autocast(batch["image"].device.type, dtype=amp, enabled=amp is not None):
        teacher_out = None
        if teacher is not None:
            with torch.no_grad():
                teacher_out = teacher(batch["image"], batch["trimap"], taps_only=True)
        terms, out = objective(batch, teacher_out)
    return terms, out, teacher_out


def config_changes(old, new, prefix=""):
    """Dotted keys whose values differ between two nested configs (present in one only included,
    except a key added later that the new config holds at its old-behaviour value)."""
    changed = []
    for key in sorted(set(old) | set(new), key=str):
        name = f"{prefix}{key}"
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            changed += config_changes(a, b, f"{name}.")
        elif a != b and not (key not in old and name in ADDED_LATER and b == ADDED_LATER[name]):
            changed.append(f"{name} ({a!r} -> {b!r})")
    return changed


def autocast_dtype(amp, device):
    """The autocast dtype for train.amp on this device, or None for float32. On the CPU only bf16,
    and only where the CPU has native bf16 (AVX512-BF16 / AMX): elsewhere it emulates and is slower.
    "bf16-always" is bf16 there too: the numerics of a bf16 run, on any CPU, at about half the speed."""
    if amp == "none":
        return None
    if amp == "bf16-always":
        return torch.bfloat16
    if device.type == "cuda":
        return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    if amp == "bf16" and native_cpu_bf16():
        return torch.bfloat16
    return None


def native_cpu_bf16():
    """Whether this CPU does bf16 in hardware (AVX512-BF16 or AMX). oneDNN's own check
    (`mkldnn._is_mkldnn_bf16_supported`) also says yes on plain AVX-512, where it emulates bf16:
    an IndexNet training step there took 1.7-1.9x as long as in float32
    (results/train_speed_cpu_bf16_emulated.json)."""
    cpu = torch.cpu
    if hasattr(cpu, "_is_avx512_bf16_supported") and hasattr(cpu, "_is_amx_tile_supported"):
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # torch before 2.3 has no finer check


RATIO_WARN = 10.0
# A batch whose predicted alpha spans less than this is constant: a dead output head (IndexNet's
# one-channel BN + ReLU6 before its last conv can die, leaving sigmoid(0) = 0.5 everywhere).
ALPHA_CONSTANT = 1e-3


def distill_ratios(terms, gamma=1.0):
    """Each distillation term as it weighs in the total (eq. 18's gamma included) over L_alpha: a
    term far above 1 means the student is optimising the distillation rather than the matte
    (issue 10: ALD at 5-64x with one reading)."""
    base = abs(float(terms["alpha"])) or 1e-12
    return {f"ratio_{k}": gamma * float(v) / base for k, v in terms.items() if k.startswith(("clsd_", "ald_"))}


def poly_lambda(iterations, power):
    return lambda step: max(0.0, 1.0 - step / iterations) ** power


# -- checkpoints ---------------------------------------------------------------------------------
def save_checkpoint(path, state):
    """Atomic: a crash or a full disk mid-write leaves the previous checkpoint intact."""
    path = Path(path)
    existed = path.is_file()
    try:
        # Through a Python file, not a path: torch's own writer reports a full disk as
        # "basic_ios::clear: iostream error"; this way the OSError with its errno survives.
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(state, f)
    except (OSError, RuntimeError) as err:
        cause = _os_error(err)
        if cause is None:
            raise
        raise write_failure(path, "checkpoint", cause.strerror or cause, existed) from None


def _os_error(err):
    """The OSError behind a failed write: `err` itself, or what torch's writer was handling."""
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    return err


def load_checkpoint(path):
    """weights_only=True: tensors, numbers, strings and containers only; no code from the file.

    Anything else is "PATH: not a ppid checkpoint (reason)" on one line; torch's own message is not
    passed on, since it suggests weights_only=False, which would run code from the file."""
    path = Path(path)
    if not path.is_file():
        raise PpidError(f"{path}: checkpoint not found")
    ckpt, reason = _read_checkpoint(path)
    reason = reason or _checkpoint_problem(ckpt)
    if reason:
        raise PpidError(f"{path}: not a ppid checkpoint ({reason})")
    return ckpt


def _read_checkpoint(path):
    """(contents, None), or (None, why the file cannot be a checkpoint)."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if not magic:
        return None, "empty file"
    if path.suffix == ".safetensors":
        return None, f"a model file; --resume takes a training checkpoint such as {CHECKPOINT}"
    if magic != b"PK\x03\x04":  # torch.save writes a zip archive
        return None, "not a torch.save archive"
    try:
        return torch.load(path, map_location="cpu", weights_only=True), None
    except pickle.UnpicklingError:  # an object weights_only refuses to build
        return None, "holds Python objects other than tensors and plain data"
    except Exception:  # a damaged archive fails in many ways (miniz, EOF, invalid seeks)
        return None, "truncated or corrupt"


def _checkpoint_problem(ckpt):
    if not isinstance(ckpt, dict):
        return f"holds a {type(ckpt).__name__}, not a checkpoint dict"
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    return f"missing {', '.join(missing)}" if missing else None


class TrainingDiverged(PpidError):
    """The loss stayed NaN/inf for `max_nonfinite` steps in a row from `step` on: the weights a
    step before it produced can no longer give a finite loss, so resuming cannot help."""

    def __init__(self, message, step):
        super().__init__(message)
        self.step = step


# -- stopping on a signal ------------------------------------------------------------------------
class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped training after a whole step, whose checkpoint is written.

    A KeyboardInterrupt, so library callers see Ctrl-C as they expect; `exit_code` is the shell's
    128 + signal number (130 SIGINT, 143 SIGTERM)."""

    def __init__(self, step, signum, checkpoint, report=True):
        self.step, self.signum, self.checkpoint, self.report = step, signum, checkpoint, report
        self.exit_code = 128 + signum
        super().__init__(f"{signal.Signals(signum).name} at step {step}; checkpoint {checkpoint}")


class StopSignals:
    """While active, SIGINT and SIGTERM (what schedulers send before pre-emption) only ask the
    loop to stop after the current step; the previous handlers come back on exit. A signal the
    caller ignores (a background job of a script ignores SIGINT) stays ignored."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = None
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # Python handles signals only there
            wanted = [s for s in self.SIGNALS if signal.getsignal(s) != signal.SIG_IGN]
            self.previous = {s: signal.signal(s, self._handle) for s in wanted}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        if self.signum is None and int(os.environ.get("RANK", "0")) == 0:
            # os.write, not print: a handler may run in the middle of another print.
            os.write(2, f"\nppid train: {signal.Signals(signum).name} received, stopping after this step\n".encode())
        self.signum = self.signum or signum

    def requested(self, device, world):
        """Stop after this step? Under torchrun every rank gets the same answer (and signal)."""
        if world == 1:
            return self.signum is not None
        flag = torch.tensor(self.signum or 0, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self.signum = int(flag) or None
        return self.signum is not None


def _ignore_stop_signals(worker_id):
    """DataLoader workers leave SIGINT/SIGTERM to the main process, which stops them itself; a
    worker killed first would make the main process fail before it can checkpoint."""
    for s in StopSignals.SIGNALS:
        signal.signal(s, signal.SIG_IGN)


# -- pictures --------------------------------------------------------------------------------
def save_grid(path, batch, out, teacher_out=None, n=4):
    """Rows: image | trimap | gt | pred | teacher attention | student attention (stride-4 tap)."""
    def grey(x):
        return x.float().detach().cpu().expand(-1, 3, -1, -1)

    def attention(o, size):
        a = torch.sigmoid(o.dec[0].logits.float().detach())
        return grey(nn.functional.interpolate(a, size=size, mode="nearest"))

    size = batch["image"].shape[-2:]
    cols = [batch["image"].float().cpu(), grey(batch["trimap"]), grey(batch["alpha"]), grey(out.alpha)]
    if teacher_out is not None:
        cols.append(attention(teacher_out, size))
    cols.append(attention(out, size))
    rows = torch.cat([torch.cat([c[i] for c in cols], dim=2) for i in range(min(n, cols[0].shape[0]))], dim=1)
    write_image(path, rows.permute(1, 2, 0).clamp(0, 1).numpy())


# -- the loop ------------------------------------------------------------------------------------
def train(cfg, resume=None):
    """Run one training; returns {"out", "best", "steps", ...}. SIGINT/SIGTERM end it after the
    current step with a checkpoint and raise `TrainingInterrupted`."""
    with StopSignals() as stop, contextlib.ExitStack() as on_exit:
        return _train(cfg, resume, stop, on_exit)


def _train(cfg, resume, stop, on_exit):
    rank, world, device = setup_devices(cfg)
    is_main = rank == 0
    t_cfg, o_cfg = cfg["train"], cfg["optim"]
    out_dir = output_folder(cfg)
    torch.manual_seed(t_cfg["seed"] + rank)
    use_cuda = device.type == "cuda"
    amp = autocast_dtype(t_cfg["amp"], device)
    if is_main and t_cfg["amp"] != "none" and amp is None:
        print(f"note: train.amp={t_cfg['amp']} is not used on this {device.type} (no native support); training in float32")

    model, teacher = build_models(cfg, device)
    objective = make_objective(model, cfg, teacher).to(device)
    if use_cuda and t_cfg["channels_last"]:
        objective = objective.to(memory_format=torch.channels_last)
        if teacher is not None:
            teacher = teacher.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        objective.parameters(), lr=o_cfg["lr"], momentum=o_cfg["momentum"], weight_decay=o_cfg["weight_decay"]
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lambda(o_cfg["iterations"], o_cfg["poly_power"]))
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)

    start_step, best, gen_state, nonfinite = 0, None, None, 0
    if resume:
        ckpt = load_checkpoint(out_dir / CHECKPOINT if resume == "last" else resume)
        objective.load_state_dict(ckpt["objective"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_step, best, nonfinite = ckpt["step"], ckpt.get("best"), ckpt.get("nonfinite", 0)
        torch.set_rng_state(ckpt["rng"]["torch"])
        if use_cuda and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"])
        gen_state = ckpt["rng"].get("batch")
        changed = config_changes(ckpt["config"], cfg)
        if changed and is_main:
            print(f"warning: resuming with a config that differs from the checkpoint's: {', '.join(changed)}")

    trained = objective
    if world > 1:
        # Past distill.until the distillation modules get no gradient, which DDP must be told of.
        partial = cfg["mode"] == "ppid" and cfg["distill"]["until"] < 1
        trained = nn.parallel.DistributedDataParallel(objective, device_ids=[device.index] if use_cuda else None,
                                                      find_unused_parameters=partial)
    if t_cfg["compile"]:  # the wrappers share the parameters: checkpoints still save `objective`
        trained = torch.compile(trained)
        teacher = torch.compile(teacher) if teacher is not None else None

    testset = None
    if cfg["data"]["val_root"]:
        from .data.datasets import CompositeTestSet

        testset = CompositeTestSet(cfg["data"]["val_root"])

    logger = RunLogger(out_dir, cfg, enabled=is_main)
    # Closed however _train ends: DataLoader workers ignore SIGTERM, so they must be stopped by us
    # (the interpreter's exit would terminate and wait for them forever).
    batches = on_exit.enter_context(contextlib.closing(make_batches(cfg, device, start_step, rank, world, gen_state)))
    iterations = o_cfg["iterations"]
    distill_steps = math.ceil(cfg["distill"]["until"] * iterations) if teacher is not None else 0
    progress = progress_bar(total=iterations, initial=start_step, enabled=is_main, desc="train")
    tick, seen, norm_peak, clipped = time.perf_counter(), 0, None, 0  # per logging interval
    gen = None
    warned = set()  # distillation terms already reported as dominating

    def checkpoint(step):
        if not is_main:
            return
        state = {
            "objective": objective.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "best": best,
            "nonfinite": nonfinite,
            "config": cfg,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state() if use_cuda else None,
                "batch": gen.get_state() if gen is not None else None,
            },
        }
        save_checkpoint(out_dir / CHECKPOINT, state)
        save_model(model, out_dir / "model_last.safetensors")

    for step in range(start_step, iterations):
        batch, gen = next(batches)
        objective.train()
        if use_cuda and t_cfg["channels_last"]:
            batch = {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch.items()}
        if step == distill_steps and teacher is not None and is_main:
            logger.log({"event": "distillation_off", "step": step})
            write_line(f"step {step}: distillation off (distill.until={cfg['distill']['until']}): L_alpha alone from here")
        terms, out, teacher_out = forward_losses(trained, teacher if step < distill_steps else None, batch, amp)
        loss = terms["total"]
        finite = torch.isfinite(loss)
        if world > 1:  # every rank skips together, or DDP would desynchronise
            flag = finite.float().to(device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = flag.bool()
        optimizer.zero_grad(set_to_none=True)
        if not bool(finite):
            nonfinite += 1
            logger.log({"event": "nonfinite_loss", "step": step, **_floats(terms)})
            scheduler.step()
            if nonfinite >= t_cfg["max_nonfinite"]:
                checkpoint(step + 1)  # this step is skipped and counted: a resume goes on from the next
                first = step - nonfinite + 1
                raise TrainingDiverged(
                    f"loss was NaN/inf for {nonfinite} steps in a row (from step {first}); {out_dir / CHECKPOINT} "
                    "holds the weights that gave it, so resuming repeats it: train again with a lower optim.lr "
                    "or distillation weights, or with optim.grad_clip", first)
            continue
        nonfinite = 0
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # the logged norm and the clip read the true gradients
        if o_cfg["grad_clip"]:
            norm = nn.utils.clip_grad_norm_(objective.parameters(), o_cfg["grad_clip"])
        else:
            norm = grad_norm(objective.parameters())
        norm_peak = norm.detach() if norm_peak is None else torch.maximum(norm_peak, norm.detach())
        clipped += (norm > o_cfg["grad_clip"]) if o_cfg["grad_clip"] else 0
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        seen += batch["image"].shape[0] * world
        done = step + 1

        if done % t_cfg["log_every"] == 0 or done == iterations or step == start_step:
            elapsed = time.perf_counter() - tick
            floats = _floats(terms)
            ratios = distill_ratios(floats, cfg["distill"]["gamma"])
            record = {"step": done, "lr": optimizer.param_groups[0]["lr"], "samples_per_s": seen / max(elapsed, 1e-9), **floats, **ratios,
                      "grad_norm_max": float(norm_peak)}
            if o_cfg["grad_clip"]:
                record["clipped_steps"] = int(clipped)
            record["alpha_range"] = float((out.alpha.max() - out.alpha.min()).detach())
            if record["alpha_range"] < ALPHA_CONSTANT and "alpha_constant" not in warned and is_main:
                warned.add("alpha_constant")
                level = float(out.alpha.mean().detach())
                logger.log({"event": "alpha_constant", "step": done, "alpha": level})
                write_line(f"warning: step {done}: the predicted alpha is constant ({level:.4f} over the "
                           "whole batch): the network's output head has died and the alpha loss no longer trains it "
                           "(docs/training.md, 'A dead alpha head'); this run will not recover")
            loud = {k[6:]: round(v, 1) for k, v in ratios.items() if v > RATIO_WARN and k not in warned}
            if loud and is_main:
                warned.update(f"ratio_{k}" for k in loud)
                write_line(f"warning: step {done}: distillation terms over {RATIO_WARN:g}x the alpha loss: {loud} "
                           "(they dominate the matte; see docs/training.md on distill.attention_norm and the weights)")
            if use_cuda:
                record["gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
            logger.log(record)
            progress.set_postfix(loss=f"{record['total']:.4f}", lr=f"{record['lr']:.2e}")
            tick, seen, norm_peak, clipped = time.perf_counter(), 0, None, 0
        if is_main and t_cfg["image_every"] and (done % t_cfg["image_every"] == 0 or done == iterations):
            save_grid(out_dir / "images" / f"step_{done:07d}.png", batch, out, teacher_out)
        if testset is not None and (done % t_cfg["val_every"] == 0 or done == iterations):
            if is_main:
                from .evaluate import evaluate_model

                # float32 on the CPU: bf16 there is for training speed, not for the numbers we select on
                try:
                    summary = evaluate_model(model, testset, device, cfg["data"]["val_max_items"], amp if use_cuda else None)
                except NonFiniteMatte as err:  # diverged weights: never a best step, and the run goes on
                    summary = None
                    logger.log({"event": "validation_nonfinite", "step": done, "error": str(err)})
                    write_line(f"warning: step {done}: the model predicts NaN/inf on the validation set ({err})")
                sad = summary["results"]["whole"]["all"]["sad"] if summary else math.inf
                if summary:
                    logger.log({"event": "validation", "step": done, "summary": summary})
                if summary and (best is None or sad < best["SAD"]):
                    best = {"step": done, "SAD": sad}
                    save_model(model, out_dir / "model_best.safetensors")
            if world > 1:
                dist.barrier()
        stopping = stop.requested(device, world)
        if stopping or done % t_cfg["ckpt_every"] == 0 or done == iterations:
            checkpoint(done)
        progress.update(1)
        if stopping and done < iterations:
            _stop(done, stop.signum, out_dir / CHECKPOINT, progress, logger, world, is_main)
    progress.close()

    # the precision that trained (train.amp asks; the device decides): runs on other CPUs differ
    result = {"out": str(out_dir), "best": best, "steps": iterations, "precision": str(amp or torch.float32).replace("torch.", "")}
    if world > 1:
        result["rank_param_checksums"] = _rank_checksums(objective, device, world)
        result["ranks_in_sync"] = len(set(result["rank_param_checksums"])) == 1
    logger.log({"event": "done", **result})
    logger.close()
    if world > 1:
        dist.destroy_process_group()
    return result


def grad_norm(parameters):
    """The gradients' total L2 norm (what optim.grad_clip compares), without changing them. The
    log keeps each interval's peak: a divergence shows there first."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if hasattr(nn.utils, "get_total_norm"):  # torch >= 2.6: one fused pass
        return nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def _floats(terms):
    return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()}


def _rank_checksums(module, device, world):
    """Each rank's parameter checksum, gathered: DDP replicas must hold identical weights."""
    flat = torch.cat([p.detach().double().flatten() for p in module.parameters()])
    value = torch.stack([flat.sum(), (flat * torch.arange(flat.numel(), device=flat.device, dtype=torch.float64).remainder(97)).sum()])
    gathered = [torch.zeros_like(value) for _ in range(world)]
    dist.all_gather(gathered, value.to(device))
    return [f"{g[0].item():.10e}/{g[1].item():.10e}" for g in gathered]


def _stop(step, signum, checkpoint, progress, logger, world, is_main):
    progress.close()
    logger.log({"event": "interrupted", "step": step, "signal": signal.Signals(signum).name})
    logger.close()
    if world > 1:
        dist.barrier()  # rank 0's checkpoint is on disk before any rank exits (torchrun then stops the rest)
        dist.destroy_process_group()
    raise TrainingInterrupted(step, signum, checkpoint, report=is_main)


class RunLogger:
    """JSONL (always), stdout for events, TensorBoard when installed; rank 0 only."""

    def __init__(self, out_dir, cfg, enabled=True):
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_dir / "config.json") as tmp:
            tmp.write_text(json.dumps(cfg, indent=2))
        self.file = open(out_dir / "log.jsonl", "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tb"))
        except Exception:  # tensorboard is optional ([tb] extra)
            self.tb = None

    def log(self, record):
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None and "step" in record:
            for k, v in record.items():
                if isinstance(v, float) and math.isfinite(v):
                    self.tb.add_scalar(k, v, record["step"])
        if record.get("event") in ("validation", "nonfinite_loss"):
            write_line(json.dumps({k: v for k, v in record.items() if k != "summary"} | _short(record)))

    def close(self):
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def _short(record):
    s = record.get("summary")
    if not s:
        return {}
    return {region: {m: round(v, 4) for m, v in groups["all"].items()} for region, groups in s["results"].items()}
