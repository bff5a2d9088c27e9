"""Progress of every long loop in ppid (training, predict, evaluate, data): one place.

On a terminal it is a tqdm bar. In a log (stderr redirected to a file, a batch job) a bar would
write hundreds of carriage-return updates on one line, so there it is a plain line every 10% or
every 60 s, whichever comes first:

    train: 400/4000 (10%) 1.2 it/s, eta 50:00, loss=0.1234, lr=9.9e-03
"""

import math
import sys
import time

LOG_STEP = 0.1  # a line each time another tenth of the work is done
LOG_SECONDS = 60.0  # and at least this often


def progress(iterable=None, *, total=None, desc, unit="it", initial=0, enabled=True, leave=True, file=None):
    """A bar (terminal), a `LogProgress` (anything else) or a silent `LogProgress` (enabled=False).

    Both sides offer what our loops use: iteration, update(n), set_postfix(**values), write(text),
    close()."""
    file = sys.stderr if file is None else file
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if enabled and _is_terminal(file):
        from tqdm import tqdm

        return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, leave=leave, file=file, dynamic_ncols=True)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, file=file if enabled else None)


def write(text, file=None):
    """Print a line without breaking a bar on screen (default stdout)."""
    from tqdm import tqdm

    tqdm.write(text, file=file)


def _is_terminal(file):
    try:
        return file.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class LogProgress:
    """Plain progress lines at a low rate; file=None keeps it silent."""

    def __init__(self, iterable=None, *, total=None, desc, unit="it", initial=0, file=None):
        self.iterable, self.total, self.desc, self.unit, self.file = iterable, total, desc, unit, file
        self.n = self.start = self.last_n = initial
        self.started = self.last_time = time.monotonic()
        self.postfix = ""

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def update(self, n=1):
        self.n += n
        if self.file is None:
            return
        now = time.monotonic()
        if self._tenth(self.n) > self._tenth(self.last_n) or now - self.last_time >= LOG_SECONDS:
            self.file.write(self.line(now) + "\n")
            self.file.flush()
            self.last_n, self.last_time = self.n, now

    def _tenth(self, n):
        return math.floor(n / (self.total * LOG_STEP)) if self.total else 0

    def line(self, now):
        rate = (self.n - self.start) / max(now - self.started, 1e-9)
        text = f"{self.desc}: {self.n}"
        if self.total:
            text += f"/{self.total} ({100 * self.n / self.total:.0f}%)"
        text += f" {rate:.3g} {self.unit}/s"
        if self.total and rate > 0:
            text += f", eta {_clock((self.total - self.n) / rate)}"
        return text + (f", {self.postfix}" if self.postfix else "")

    def set_postfix(self, **values):
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    write = staticmethod(write)

    def close(self):
        pass


def _clock(seconds):
    """Seconds as M:SS or H:MM:SS."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
