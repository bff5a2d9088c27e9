"""The README's set-up commands are the project's contract with a new user and with CI."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands():
    return [c.strip() for c in re.findall(r"```\n(.+?)\n *```", (ROOT / "README.md").read_text())[:2]]


def test_ci_runs_exactly_readme_command_2():
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert _readme_commands()[1].strip() in ci_lines


def test_readme_commands_pin_cpu_torch_and_package_does_not():
    for command in _readme_commands():
        assert "pip install torch==2.13.0" in command
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "torch==" not in pyproject and '"torch>=' in pyproject


def test_readme_command_1_runs_the_demo_and_2_the_tests():
    first, second = _readme_commands()
    assert "ppid demo" in first
    assert "pytest" in second and ".[dev]" in second
