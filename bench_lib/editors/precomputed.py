"""`precomputed`: edits made elsewhere (an API model, another codebase), scored like the harness's own.

Each sample's edit comes from a dataset column (`--columns edited_image=<column>`: a path relative to the
dataset, image bytes, or a base64/data-URI string) or from a folder (`--edits_dir DIR`) holding one image per
sample, named by the sample id with the output folder's safe-name rules (`bench_lib.store.safe_stem`: an id
made of [a-z0-9._-] is its own name) and any image extension. A missing or unreadable edit is that sample's
`edit_failed`, with the path in `error` (so is a file that is not a regular file, and a symbolic link out of the
folder). The run costs judge time only; every edit's sha256 is kept in its record, and provenance records one
digest over them all (`bench_lib.outputs.edits_digest`). A resumed run compares each kept edit with its file
(`stale_edits`): a changed one is read and judged again.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..backends import Editor, EditResult, register_editor
from ..config import ConfigError, option
from ..data import IMAGE_SUFFIXES, ImageRef
from ..store import safe_stem


@dataclass
class PrecomputedConfig:
    edits_dir: Optional[str] = option(
        None, result=True, path="always",
        help="precomputed editor: the folder of edited images, one per sample, named <sample id>.<png|jpg|...> "
             "(ids outside [a-z0-9._-] use the output folder's hashed names). Or map a dataset column with "
             "--columns edited_image=<column>.")


@register_editor("precomputed")
class PrecomputedEditor(Editor):
    description = "edits made elsewhere: one image file per sample id, or a dataset column"
    Config = PrecomputedConfig
    needs_model = False

    @classmethod
    def preflight(cls, cfg: PrecomputedConfig, bench) -> None:
        """The edits are inputs: never inside the output folder, whose `edits/` the run writes (and `--overwrite`
        deletes)."""
        if cfg.edits_dir is None:
            return
        edits, output = Path(cfg.edits_dir).expanduser().resolve(), Path(bench.run.output_dir).expanduser().resolve()
        if edits.is_relative_to(output):
            raise ConfigError(f"`edits_dir` {cfg.edits_dir!r} is inside `output_dir` {bench.run.output_dir!r}, whose "
                              "files the run writes (and --overwrite deletes): move the edits out of it, or use "
                              "another output_dir.")

    @classmethod
    def check(cls, cfg: PrecomputedConfig, bench) -> None:
        if cfg.edits_dir is None and "edited_image" not in bench.data.columns:
            raise ConfigError("editor `precomputed` needs the edits: --edits_dir DIR (one image per sample id) or "
                              "--columns edited_image=<column>.")
        if cfg.edits_dir is not None and not Path(cfg.edits_dir).is_dir():
            raise ConfigError(f"`edits_dir` {cfg.edits_dir!r} is not a folder.")

    @classmethod
    def fingerprint(cls, cfg: PrecomputedConfig, bench) -> dict:
        """Where the edits come from, not the folder's path: each kept edit is compared with its file when the run
        resumes (`stale_edits`), so the same folder named another way (relative, absolute, moved) resumes."""
        return {"edits": "edits_dir" if cfg.edits_dir else "edited_image column"}

    @classmethod
    def display_name(cls, cfg: PrecomputedConfig) -> str:
        return f"precomputed:{cfg.edits_dir}" if cfg.edits_dir else "precomputed:edited_image column"

    @classmethod
    def stale_edits(cls, cfg: PrecomputedConfig, samples, records: dict[str, dict]) -> dict[str, str]:
        """Kept edits whose file (or column value) is no longer the one recorded: each is read and judged again."""
        editor, stale = cls(cfg, device=None), {}
        for sample in samples:
            record = records.get(sample.id)
            if not record or record.get("status") != "ok":
                continue
            try:
                digest = hashlib.sha256(editor._locate(sample)[0].read_bytes()).hexdigest()
            except (OSError, ValueError) as err:  # gone, several, unreadable: the redone edit records why
                stale[sample.id] = f"{type(err).__name__}: {err}"
                continue
            if digest != record.get("edit_sha256"):
                stale[sample.id] = "the edit changed since it was judged"
        return stale

    def __init__(self, cfg: PrecomputedConfig, *, device, trust_remote_code: bool = False):
        super().__init__(cfg, device=device, trust_remote_code=trust_remote_code)
        self.folder = Path(cfg.edits_dir) if cfg.edits_dir else None
        self.files: dict[str, list[str]] = {}  # file-name stem -> image files of that stem
        if self.folder is not None:
            for path in sorted(self.folder.iterdir()):
                if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                    self.files.setdefault(path.stem, []).append(path.name)

    def _locate(self, sample) -> tuple[ImageRef, str]:
        """The sample's edit and where it is (for messages); raises when there is none or more than one."""
        if getattr(sample, "edited_image", None) is not None:
            return sample.edited_image, sample.edited_image.describe()
        if self.folder is None:
            raise FileNotFoundError("this sample has no edited_image value")
        stem = safe_stem(sample.id)
        names = self.files.get(stem, [])
        if not names:
            raise FileNotFoundError(f"no edit for this sample: expected {self.folder / stem}.<"
                                    f"{'|'.join(s.lstrip('.') for s in IMAGE_SUFFIXES)}>")
        if len(names) > 1:
            raise ValueError(f"several edits for this sample in {self.folder}: {names}")
        path = self.folder / names[0]
        if path.is_symlink() and not path.resolve().is_relative_to(self.folder.resolve()):
            raise ValueError(f"the edit {path} is a symbolic link to {os.readlink(path)}, outside edits_dir: links "
                             "out of the folder are not followed (copy the file in)")
        return ImageRef(path=path), str(path)

    def max_source_images(self) -> int:
        return sys.maxsize  # the edit was made elsewhere, from however many sources the sample has

    def edit(self, sample, source, *, seed: int) -> EditResult:
        ref, where = self._locate(sample)
        data = ref.read_bytes()  # a regular file only: a FIFO or device is refused, never waited on
        try:
            image = ImageRef(data=data, max_pixels=ref.max_pixels).load()
        except Exception as err:
            raise ValueError(f"cannot read the edit {where}: {type(err).__name__}: {err}") from None
        return EditResult(image=image, info={"edit_source": where, "edit_sha256": hashlib.sha256(data).hexdigest()})
