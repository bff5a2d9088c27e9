"""What every benchmark records beside its numbers: the machine, its load, and the JSON file itself
(the command line comes from `ppid.io.command_line`, which the experiments share).

The scripts run as `python benchmarks/x.py`, so this folder is on sys.path and they import it as
`from common import ...`.
"""

import json
import os
import platform
import sys
from pathlib import Path

from ppid.io import atomic_path


def cpu_model():
    """The CPU's model name ("AMD EPYC 7R13 ..."): platform.processor() often says only "x86_64"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine()


def machine_info(device=None, **versions):
    """The machine a result was measured on, so that results from different machines are not
    compared as if alike. torch's version and thread count only where the benchmark imported
    torch (importing it just to record them would slow NumPy-only benchmarks); the GPU, CUDA and
    cuDNN when `device` is CUDA. `versions`: further libraries' versions (numpy=..., ...)."""
    info = {
        "platform": platform.platform(),
        "processor": cpu_model(),
        "cpu_count": os.cpu_count(),
        "nice": os.nice(0),  # the machines are shared: a niced run yields to other work
        "python": platform.python_version(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info |= {"torch": torch.__version__, "threads": torch.get_num_threads()}
        if device is not None and torch.device(device).type == "cuda":
            info |= {"gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda,
                     "cudnn": torch.backends.cudnn.version()}
    return info | versions


class LoadAverage:
    """The load average (1, 5 and 15 min) when a benchmark starts and when it ends.

    The machines are shared and other work slows timings down: every result says how busy the
    machine was while it ran.
    """

    def __init__(self):
        self.start = self.now()

    @staticmethod
    def now():
        return [round(v, 2) for v in os.getloadavg()]

    def record(self):
        """{"start": [1, 5, 15 min], "end": [...]}, the end read now."""
        return {"start": self.start, "end": self.now()}


def write_result(path, result):
    """Write `result` as indented JSON in one rename (an interrupted run leaves the previous
    result whole) and say where."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
