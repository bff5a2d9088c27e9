"""ppid-matting: trimap-free image matting by privileged prior information distillation."""

__version__ = "0.1.1"


class PpidError(Exception):
    """A user-facing error: the CLI prints its message on one line, without a traceback."""


def __getattr__(name):
    # The Predictor pulls in torch and the models; keep `import ppid` light.
    if name == "Predictor":
        from .predict import Predictor

        return Predictor
    raise AttributeError(f"module 'ppid' has no attribute {name!r}")
