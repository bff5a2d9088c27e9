"""`ppid <command>`: one entry point; each command lives in the module that does the work.

A command module exposes `add_arguments(parser)` and `run(args) -> int`. Only the module of the
command being run is imported, so `ppid --help` and light commands start fast.
"""

import argparse
import importlib
import sys

from . import PpidError, __version__

# name -> (module, one-line help)
COMMANDS = {
    "data": ("ppid.data.cli", "synthesise, preview, check and build datasets"),
    "models": ("ppid.models.cli", "the nine networks, parameters beside the paper's"),
    "train": ("ppid.train", "train a teacher, baseline or PPID student"),
    "evaluate": ("ppid.evaluate", "SAD/MSE/Grad/Conn tables for predictions or models"),
    "predict": ("ppid.predict", "alpha, RGBA cut-outs and composites for photos"),
    "export": ("ppid.export", "export to ONNX, checked against onnxruntime"),
    "recalibrate": ("ppid.recalibrate", "recompute BatchNorm statistics on whole training images"),
    "viz": ("ppid.viz", "visual reports: GT, teacher, student, error, attention"),
    "reproduce": ("ppid.reproduce", "the paper's tables: plan, train, resume, report"),
    "demo": ("ppid.demo", "end-to-end demo on the synthetic benchmark"),
}


class _OneLineCommands(argparse.HelpFormatter):
    """argparse measures subcommand names at the section's indent but prints them one level
    deeper, so the longest name wraps its help onto a second line; widen by that level."""

    def add_argument(self, action):
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):
            self._action_max_length += self._indent_increment


def build_parser(command=None):
    parser = argparse.ArgumentParser(
        prog="ppid",
        description="ppid-matting: trimap-free image matting with privileged trimap distillation.",
        formatter_class=_OneLineCommands,
    )
    parser.add_argument("--version", action="version", version=f"ppid-matting {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except PpidError as err:
        print(f"ppid {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C, or training stopped by SIGINT/SIGTERM (exit_code 130/143)
        print(f"ppid {args.command}: interrupted", file=sys.stderr)
        return getattr(err, "exit_code", 130)


if __name__ == "__main__":
    sys.exit(main())
