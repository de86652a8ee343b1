"""Provenance: enough to reproduce a number months later (models at resolved revisions, package versions,
the harness's commit, devices). Recorded in report.json and run.json; small per-sample facts go on rows."""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import os
import platform
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

from .models import is_tiny, resolve_model
from .registry import EDITORS, JUDGES

PACKAGES = ("torch", "torchvision", "diffusers", "transformers", "accelerate", "datasets", "huggingface_hub", "peft",
            "tokenizers", "safetensors", "pillow", "numpy")
REPO_ROOT = Path(__file__).resolve().parent.parent
HARNESS_PATHS = ("bench_lib", "scripts", "run_benchmark.py", "configs", "accelerate_configs", "requirements.txt")


def package_versions() -> dict[str, Optional[str]]:
    versions: dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    import torch

    versions["torch"] = torch.__version__  # with its build tag (+cu130, +cpu): the metadata version drops it
    versions["cuda"] = torch.version.cuda
    return versions


def harness_commit(root: Path = REPO_ROOT) -> dict[str, Any]:
    """The git commit of the harness's own checkout (not of the folder the run was started from), and
    whether its code differs from it (modified tracked files, or new files in the harness's folders).
    Nulls outside a git checkout (an installed copy)."""
    def git(*args: str) -> Optional[str]:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--", *HARNESS_PATHS) if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


CONFIG_SUFFIXES = (".json", ".txt", ".model", ".jinja")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
PIECE_BYTES = 16 << 20  # weights are hashed in pieces of this size, several at once


def config_files_sha256(folder: Path) -> str:
    """sha256 over the config and tokenizer files of a local model folder (paths and contents)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in CONFIG_SUFFIXES
                       and not p.name.startswith(".")):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _piece_sha256(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return hashlib.sha256(f.read(size)).digest()


def weights_sha256(folder: Path) -> str:
    """sha256 over every weight file's path and size and the sha256 of each 16 MiB piece of its bytes, all of
    them: a fine-tune saved in place that changed a few tensors is another model, and a copy (new time
    stamps, another node's disk) is the same one. The pieces are hashed on up to 16 threads (hashlib releases
    the GIL while it hashes), so reading the files is the cost (docs/PERFORMANCE.md)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    sizes = [path.stat().st_size for path in files]
    pieces = [(path, offset, min(PIECE_BYTES, size - offset))
              for path, size in zip(files, sizes) for offset in range(0, size, PIECE_BYTES)]
    with ThreadPoolExecutor(max_workers=max(1, min(16, os.cpu_count() or 1, len(pieces)))) as pool:
        hashed = iter(pool.map(lambda piece: _piece_sha256(*piece), pieces))
    digest = hashlib.sha256()
    for path, size in zip(files, sizes):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{size}\0".encode())
        for _ in range(0, size, PIECE_BYTES):
            digest.update(next(hashed))
    return digest.hexdigest()


def model_source(name_or_path: str, revision: Optional[str], marker: str,
                 cache_dir: Optional[str] = None) -> dict[str, Any]:
    """Where a model came from. A local folder (tiny models included) is identified by hashes of its config
    files and of all of its weights (see `weights_sha256`); a hub id by the commit its cached files
    resolve to (after the pre-flight check downloaded `marker`), or null if it is not in the local hub
    cache. Called when an attempt starts, so a branch that moves later can't change what is recorded."""
    local = Path(resolve_model(name_or_path)) if is_tiny(name_or_path) else Path(name_or_path).expanduser()
    out: dict[str, Any] = {"id": name_or_path, "requested_revision": revision}
    if local.is_dir():
        out.update(source="local", path=str(local.resolve()), config_sha256=config_files_sha256(local),
                   weights_sha256=weights_sha256(local))
        return out
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name_or_path, marker, revision=revision, cache_dir=cache_dir)
    parts = Path(cached).parts if isinstance(cached, str) else ()
    commit = parts[parts.index("snapshots") + 1] if "snapshots" in parts else None
    out.update(source="hub", resolved_revision=commit)
    return out


def device_name(device) -> str:
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"


def backend_models(cfg) -> dict[str, Any]:
    """Where the editor's and the judge's models came from, as their backends describe them (main process,
    when an attempt starts: after the pre-flight checks downloaded what they need)."""
    return {"editor": {"backend": cfg.editor.editor, **EDITORS.get(cfg.editor.editor).provenance(cfg.editor_backend)},
            "judge": {"backend": cfg.judge.judge, **JUDGES.get(cfg.judge.judge).provenance(cfg.judge_backend)}}


def collect(*, rubric_hashes: dict[str, str], devices: list[str], models: dict[str, Any], seed: int) -> dict[str, Any]:
    """The run's provenance (main process): everything but the start and end time, which the caller adds."""
    return {"harness": harness_commit(), "packages": package_versions(), "models": models, "seed": seed,
            "rubrics": rubric_hashes, "world_size": len(devices), "devices": devices, "command": sys.argv}
