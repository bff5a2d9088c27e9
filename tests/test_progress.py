"""Progress in logs: plain lines at a low rate when the stream is not a terminal, a bar when it is."""

import io

import pytest

import ppid.progress as progress_module
from ppid.progress import LogProgress, progress


class FakeClock:
    def __init__(self, step):
        self.now, self.step = 1000.0, step

    def __call__(self):
        self.now += self.step
        return self.now


def test_log_lines_every_tenth_without_carriage_returns():
    stream = io.StringIO()
    for _ in progress(range(250), desc="synth", unit="img", file=stream):
        pass
    text = stream.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and len(lines) == 10
    assert lines[0].startswith("synth: 25/250 (10%) ") and " img/s, eta " in lines[0]
    assert lines[-1].startswith("synth: 250/250 (100%) ")


def test_log_lines_every_minute_when_tenths_are_slow(monkeypatch):
    monkeypatch.setattr(progress_module.time, "monotonic", FakeClock(61.0))
    stream = io.StringIO()
    bar = progress(total=4000, initial=0, desc="train", file=stream)
    bar.set_postfix(loss="0.1234", lr="1.00e-02")
    for _ in range(3):
        bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3  # every update is 61 s after the last line
    # One step in 61 s, 3999 to go: 3999 * 61 s = 67:45:39.
    assert lines[0] == "train: 1/4000 (0%) 0.0164 it/s, eta 67:45:39, loss=0.1234, lr=1.00e-02"


def test_resumed_progress_counts_its_rate_from_the_resume_point(monkeypatch):
    monkeypatch.setattr(progress_module.time, "monotonic", FakeClock(0.5))
    stream = io.StringIO()
    bar = progress(total=100, initial=55, desc="train", file=stream)
    for _ in range(45):
        bar.update(1)
    lines = stream.getvalue().splitlines()
    assert [line.split(" ")[1] for line in lines] == ["60/100", "70/100", "80/100", "90/100", "100/100"]
    assert " 2 it/s, eta 0:20" in lines[0]  # 5 steps in 2.5 s, 40 to go


def test_terminal_gets_a_bar_and_disabled_progress_is_silent():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    bar = progress(total=3, desc="x", file=Terminal())
    assert not isinstance(bar, LogProgress)
    bar.close()
    quiet = io.StringIO()
    bar = progress(total=3, desc="x", enabled=False, file=quiet)
    for _ in range(3):
        bar.update(1)
    assert quiet.getvalue() == ""


@pytest.mark.parametrize("seconds,text", [(59.6, "1:00"), (3599, "59:59"), (3600, "1:00:00"), (90061, "25:01:01")])
def test_clock_format(seconds, text):
    assert progress_module._clock(seconds) == text
