"""Rubric templates `<prompts_dir>/<category>.txt`, matched to categories case-insensitively; a category without
a file uses `default.txt`. Templates hold `{instruction}` and `{reference}`, filled by plain replacement."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Optional

from ..config import ConfigError

DEFAULT_RUBRIC = "default"


class Rubrics:
    """Rubric templates `<prompts_dir>/<name>.txt` of the default protocol; a category without a file (after
    `category_map`) uses `default.txt`.

    Templates hold `{instruction}` and `{reference}`, filled by plain replacement (braces elsewhere are text).
    """

    def __init__(self, prompts_dir: str | Path):
        folder = Path(prompts_dir)
        files = sorted(folder.glob("*.txt"))
        by_name: dict[str, list[Path]] = {}
        for path in files:  # categories match rubric files case-insensitively: Physics.txt serves "physics"
            by_name.setdefault(path.stem.strip().lower(), []).append(path)
        clashes = [sorted(p.name for p in paths) for paths in by_name.values() if len(paths) > 1]
        if clashes:
            raise ConfigError(f"`prompts_dir` {str(folder)!r} has rubric files that differ only by case: {clashes}; "
                              "keep one of each.")
        try:
            self.templates = {name: _read_rubric(paths[0]) for name, paths in sorted(by_name.items())}
        except UnicodeDecodeError as err:
            raise ConfigError(f"a rubric in `prompts_dir` {str(folder)!r} is not UTF-8 text: {err}") from None
        if DEFAULT_RUBRIC not in self.templates:
            raise ConfigError(f"`prompts_dir` {str(folder)!r} has no {DEFAULT_RUBRIC}.txt rubric")
        self._hashes = {name: hashlib.sha256(text.encode("utf-8")).hexdigest()
                        for name, text in self.templates.items()}

    def hashes(self) -> dict[str, str]:
        """sha256 of every rubric's text: a changed rubric changes scores (and the run's fingerprint)."""
        return dict(self._hashes)

    def sha256(self, name: str) -> str:
        """The hash of rubric `name` (a row records the rubric its sample was judged with)."""
        return self._hashes[name]

    def rubric_name(self, category: str) -> str:
        """The rubric of a category: the file of that name (any case), else default.txt."""
        name = category.strip().lower()
        return name if name in self.templates else DEFAULT_RUBRIC

    def render_named(self, name: str, instruction: str, reference_text: Optional[str], has_image: bool) -> str:
        template = self.templates[name if name in self.templates else DEFAULT_RUBRIC]
        return template.replace("{instruction}", instruction).replace(
            "{reference}", reference_block(reference_text, has_image))


def _read_rubric(path: Path) -> str:
    """A rubric file's text: a regular file only (opened non-blocking, so a FIFO named `x.txt` can't hang the run, and
    a folder named so is one line, not a traceback)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise ConfigError(f"rubric {str(path)!r} cannot be read: {err.strerror or err}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"rubric {str(path)!r} is not a regular file (a folder, FIFO or device): a rubric is a "
                          "text file.")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as f:
        return f.read().decode("utf-8")


def reference_block(text: Optional[str], has_image: bool) -> str:
    parts = []
    if text:
        parts.append(f"Reference: a correct edit shows: {text}")
    if has_image:
        parts.append("The third image shows a correct result.")
    if not parts:
        return "No reference is available: judge from the instruction and your own knowledge."
    return " ".join(parts)
