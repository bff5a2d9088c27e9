"""Folder datasets (Adobe Image Matting, Distinctions-646, custom / synthetic layout), the
validator behind `ppid data check`, and the reader of built test sets."""

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class MattingSource:
    """Foregrounds with their alpha (matched by name) and a pool of backgrounds."""

    root: Path
    names: list  # foreground names (stems)
    fg: list  # Path per name
    alpha: list  # Path per name
    bg: list  # background Paths
    groups: dict = field(default_factory=dict)  # name -> group ("transparent", ...)
