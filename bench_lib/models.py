"""Model names: a hub id, a local folder, or `tiny:<name>`, a tiny randomly initialised model of a real class
that is built locally on first use (by a builder of bench_lib.demo, imported only then) and loaded like any
local folder.

Also the checks that tell a user, before anything heavy happens, why a model cannot be loaded: a local path
that does not exist, a hub id that is not in the cache while offline, a repository that does not exist or is
gated. One attempt each, no retries.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Optional, Union

from .config import ConfigError
from .registry import load_object

logger = logging.getLogger(__name__)

TINY_PREFIX = "tiny:"
# The tiny models: name -> the function that builds one into a folder ("module:function"; bench_lib.demo is
# imported only when one is built, never by a run of real models).
TINY_MODELS: dict[str, Union[str, Callable[[Path], None]]] = {
    "qwen-image-edit": "bench_lib.demo.tiny:build_editor",
    "qwen-image-edit-plus": "bench_lib.demo.tiny:build_editor_plus",
    "flux-kontext": "bench_lib.demo.tiny_flux:build_flux_kontext",
    "flux2": "bench_lib.demo.tiny_flux:build_flux2",
    "qwen3-vl": "bench_lib.demo.tiny:build_judge",
    "qwen3-vl-moe": "bench_lib.demo.tiny:build_moe_judge",
    "qwen2.5-vl": "bench_lib.demo.tiny:build_qwen2_5_vl_judge",
}
# Bump whenever a builder changes: the cache folder name carries it, so stale builds are never reused.
TINY_BUILD_VERSION = "v2"
TINY_CACHE_ENV = "BENCH_TINY_CACHE"
TINY_DEFAULT_CACHE = Path("~/.cache/bench_lib/tiny")


def is_tiny(name: str) -> bool:
    return name.startswith(TINY_PREFIX)


def check_tiny_name(key: str, name: str) -> None:
    if is_tiny(name) and name.removeprefix(TINY_PREFIX) not in TINY_MODELS:
        raise ConfigError(f"`{key}`: unknown tiny model {name!r}; known: {[TINY_PREFIX + n for n in TINY_MODELS]}")


def resolve_model(name_or_path: str) -> str:
    """The local path of tiny model `tiny:<name>` (built on first use); any other string unchanged."""
    if not is_tiny(name_or_path):
        return name_or_path
    return build_tiny(name_or_path.removeprefix(TINY_PREFIX))


def tiny_builder(name: str) -> Callable[[Path], None]:
    """The function that builds tiny model `name` into a folder (importing its bench_lib.demo module)."""
    builder = TINY_MODELS[name]
    return load_object(builder) if isinstance(builder, str) else builder


def build_tiny(name: str) -> str:
    """The local folder of tiny model `name`, built into the cache on first use (under a file lock, so
    processes that start together build it once)."""
    if name not in TINY_MODELS:
        raise ValueError(f"Unknown tiny model 'tiny:{name}'; known: {', '.join('tiny:' + n for n in TINY_MODELS)}.")
    target = _tiny_cache_dir() / f"{name}-{TINY_BUILD_VERSION}"
    if not target.is_dir():
        from filelock import FileLock

        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # a file in its place, no permission: the user's setting to fix, in one line
            raise ConfigError(f"the tiny models' cache {target.parent} (${TINY_CACHE_ENV}) can't be a folder: "
                              f"{err.strerror or err}.") from None
        with FileLock(f"{target}.lock"):
            if not target.is_dir():
                _build_atomically(name, target)
    return str(target)


def _tiny_cache_dir() -> Path:
    return Path(os.environ.get(TINY_CACHE_ENV) or TINY_DEFAULT_CACHE).expanduser()


def _build_atomically(name: str, target: Path) -> None:
    """Build into a temporary sibling and rename it into place, so a half-built model is never visible."""
    scratch = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        tiny_builder(name)(scratch)
        try:
            os.rename(scratch, target)
        except OSError:
            # Another process won the race (the file lock may not hold across nodes): keep its copy.
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def looks_local(name: str) -> bool:
    """A name that can only be a local path: absolute, relative with ./ or ../, or with more than one '/'
    (hub ids are ORG/NAME), or `~`, or ORG/NAME where ORG is a folder here (`data/mine` next to a `data/`
    folder is a mistyped path, not a hub id). Such a name is never sent to the hub."""
    return (os.path.isabs(name) or name.startswith(("./", "../", "~", ".\\")) or name.count("/") > 1
            or name in (".", "..") or (name.count("/") == 1 and os.path.isdir(name.split("/")[0])))


def hub_problem(repo_id: str, *, repo_type: str, revision: Optional[str], key: str,
                filename: Optional[str] = None) -> Optional[str]:
    """Why `repo_id` cannot be used, in one sentence, or None when it can (cached, or reachable and public).

    Tells apart: offline mode with nothing cached (which variable to unset, which download to run), a
    repository that does not exist or is private, a gated one, an unreachable hub. One request, no retries.
    """
    from huggingface_hub import constants, errors, try_to_load_from_cache

    if filename and isinstance(try_to_load_from_cache(repo_id, filename, revision=revision, repo_type=repo_type),
                               str):
        return None
    offline = constants.HF_HUB_OFFLINE or (repo_type == "dataset" and os.environ.get("HF_DATASETS_OFFLINE") == "1")
    kind = "dataset" if repo_type == "dataset" else "model"
    download = f"hf download {'--repo-type dataset ' if repo_type == 'dataset' else ''}{repo_id}"
    if offline:
        if _cached_anything(repo_id, repo_type):
            return None
        variable = "HF_DATASETS_OFFLINE/HF_HUB_OFFLINE" if repo_type == "dataset" else "HF_HUB_OFFLINE"
        return (f"`{key}` {repo_id!r}: offline mode is on and this {kind} is not in the local cache. Unset "
                f"{variable} to download it, or run `{download}` where the hub is reachable (same HF_HOME).")
    from huggingface_hub import HfApi

    try:
        HfApi().repo_info(repo_id, repo_type=repo_type, revision=revision, timeout=10)
    except errors.GatedRepoError:
        return (f"`{key}` {repo_id!r} is a gated {kind}: accept its terms on huggingface.co and log in "
                "(`hf auth login` or HF_TOKEN).")
    except errors.RepositoryNotFoundError:
        return (f"`{key}` {repo_id!r}: no such {kind} on the hub (or it is private: log in with `hf auth login` "
                f"or HF_TOKEN). A local path that does not exist is read as a hub id: check the path.")
    except errors.RevisionNotFoundError:
        return f"`{key}` {repo_id!r} has no revision {revision!r}."
    except Exception as err:  # HTTP errors, and the transport's own (httpx raises its own ConnectError)
        if _cached_anything(repo_id, repo_type):
            return None  # unreachable, but cached: the libraries will use the cache
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return (f"`{key}` {repo_id!r}: the hub cannot be reached and the {kind} is not cached ({first[:200]}). "
                f"Set HF_HUB_OFFLINE=1 after `{download}`, or check the network.")
    return None


def _cached_anything(repo_id: str, repo_type: str) -> bool:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir()
    except (CacheNotFound, OSError):
        return False
    return any(repo.repo_id == repo_id and repo.repo_type == repo_type and repo.revisions for repo in cache.repos)


def check_model_name(key: str, name: str, *, revision: Optional[str], marker: str, resolve: bool = True) -> str:
    """Where model `name` is, before any library tries it: `tiny:` names are checked, a local path must exist,
    and a hub id must be usable (see `hub_problem`). Returns the name resolved (with `resolve`, tiny models are
    built: that imports the model libraries)."""
    check_tiny_name(key, name)
    if is_tiny(name):
        return resolve_model(name) if resolve else name
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"`{key}` {name!r} is a file; a model is a folder (or a hub id).")
        if marker and not (path / marker).is_file():
            what = "a diffusers pipeline" if marker == "model_index.json" else "a transformers model"
            raise ConfigError(f"`{key}` {name!r} is not {what}: the folder has no {marker}.")
        return str(path)
    if looks_local(name):
        raise ConfigError(f"`{key}` {name!r}: no such folder.")
    problem = hub_problem(name, repo_type="model", revision=revision, key=key, filename=marker)
    if problem:
        raise ConfigError(problem)
    return name


# What a transformers model's from_pretrained reads (configs, tokenizer and processor files, safetensors weights):
# never the other weight formats a repository may also hold (.bin, .pth, .gguf, ONNX, ...).
TRANSFORMERS_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"]


def download_model(key: str, name: str, *, revision: Optional[str], pipeline: bool,
                   trust_remote_code: bool = False) -> None:
    """Put hub model `name`'s weights into the local hub cache before anything loads it (a local folder or a
    `tiny:` model: nothing to do), with the hub's progress bars; offline (HF_HUB_OFFLINE), check they are there.
    `pipeline`: a diffusers pipeline, fetched with diffusers' own `DiffusionPipeline.download` (the very files
    `from_pretrained` reads: the components model_index.json names, safetensors only); else a transformers
    model (`TRANSFORMERS_FILES`). Raises ConfigError when they cannot be had."""
    if is_tiny(name) or Path(name).expanduser().exists():
        return
    from huggingface_hub import constants
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    offline = constants.HF_HUB_OFFLINE
    logger.info("%s %s%s into the hub cache (%s)", "checking" if offline else "fetching", name,
                f" at {revision}" if revision else "", constants.HF_HUB_CACHE)
    quiet = are_progress_bars_disabled()
    enable_progress_bars()  # a download of tens of GB shows its progress, even when the run is quiet
    started = time.perf_counter()

    def fetch(local_files_only: bool) -> str:
        if pipeline:
            from diffusers import DiffusionPipeline

            return DiffusionPipeline.download(name, revision=revision, use_safetensors=True,
                                              local_files_only=local_files_only, trust_remote_code=trust_remote_code)
        from huggingface_hub import snapshot_download

        return snapshot_download(name, revision=revision, allow_patterns=TRANSFORMERS_FILES,
                                 local_files_only=local_files_only)

    try:
        folder = fetch(offline)
    except Exception as err:  # the hub's, the transport's, diffusers' OSError/ValueError
        folder = None if offline else _cached_snapshot(fetch)  # the hub failed, but the weights may be cached
        if folder is None:
            _download_failed(key, name, err, offline)
        logger.warning("%s: the hub failed (%s: %s); using the cached snapshot %s", name, type(err).__name__,
                       str(err).strip()[:200], folder)
    finally:
        if quiet:
            disable_progress_bars()
    missing = missing_weights(Path(folder), pipeline=pipeline)
    if missing:
        raise ConfigError(f"`{key}` {name!r}: the cached snapshot {folder} lacks weight files: "
                          f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}. "
                          + (f"Run `hf download {name}` where the hub is reachable (same HF_HOME)." if offline
                             else "Run again to resume the download."))
    logger.info("%s ready in %.0f s", name, time.perf_counter() - started)


def _cached_snapshot(fetch) -> Optional[str]:
    try:
        return fetch(True)
    except Exception:  # not cached either: the caller reports the hub's error, the informative one
        return None


def _download_failed(key: str, name: str, err: Exception, offline: bool) -> None:
    first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
    hint = (" Offline mode is on: run `hf download " + name + "` where the hub is reachable (same HF_HOME)."
            if offline else "")
    failed = "found in the cache" if offline else "downloaded"
    raise ConfigError(f"`{key}` {name!r}: its weights could not be {failed}: {type(err).__name__}: "
                      f"{first}.{hint}") from None


def missing_weights(folder: Path, *, pipeline: bool) -> list[str]:
    """The weight files a model snapshot needs and lacks, paths relative to `folder`. The folders that hold a
    model (a transformers model: `folder`; a diffusers pipeline: each component model_index.json names that has
    a config.json, which a scheduler, tokenizer or processor has not) need safetensors weights, and every shard
    their `*.safetensors.index.json` lists. Other folders of the snapshot (an earlier full download) are not
    looked at."""
    import json

    if pipeline:
        try:
            index = json.loads((folder / "model_index.json").read_text())
        except (OSError, ValueError):
            return ["model_index.json"]
        models = [folder / name for name, entry in index.items() if not name.startswith("_")
                  and isinstance(entry, list) and (folder / name / "config.json").is_file()]
    else:
        models = [folder]
    missing = []
    for model in models:
        indexes = sorted(model.glob("*.safetensors.index.json"))
        if not indexes and not any(model.glob("*.safetensors")):
            missing.append(str((model / "*.safetensors").relative_to(folder)))
        for shard_index in indexes:
            try:
                shards = set(json.loads(shard_index.read_text()).get("weight_map", {}).values())
            except (OSError, ValueError):
                missing.append(str(shard_index.relative_to(folder)))
                continue
            missing += [str((model / s).relative_to(folder)) for s in sorted(shards) if not (model / s).is_file()]
    return missing
