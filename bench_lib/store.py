"""The output folder: file-safe names, atomic writes, results rows.

```
<output_dir>/edits/<file-safe id>.png
<output_dir>/results.jsonl     one row per sample, in dataset order
<output_dir>/report.json
<output_dir>/report.md
```
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

from PIL import Image

from .config import ConfigError

EDITS_DIR = "edits"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_KEEP = re.compile(r"[a-z0-9._-]+")
_HASHED = re.compile(r"-[0-9a-f]{12}$")
_MAX_STEM = 96


def sample_seed(seed: int, sample_id: str) -> int:
    """The generator seed of one sample: a function of (seed, id) only, never of rank or batch position."""
    digest = hashlib.sha256(f"{seed}\x00{sample_id}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def safe_stem(sample_id: str) -> str:
    """A file name stem for a sample id, safe on every filesystem and unique per id.

    Ids made only of [a-z0-9._-] that fit are kept as they are (``causal_reasoning_3``). Any other id is
    sanitised and gets a short hash of the original, so two ids never share a file, not even on a
    case-insensitive filesystem ("Cup" and "cup"). The name depends on the id alone, never on the rest
    of the dataset, so it is the same in every run.
    """
    if (_KEEP.fullmatch(sample_id) and not sample_id.startswith(".") and len(sample_id) <= _MAX_STEM
            and not _HASHED.search(sample_id)):  # never the shape of a hashed name: those can't collide
        return sample_id
    cleaned = _UNSAFE.sub("_", sample_id).strip("._").lower()
    digest = hashlib.sha256(sample_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{cleaned[:_MAX_STEM] or 'sample'}-{digest}"


def edit_path(sample_id: str) -> str:
    """Path of a sample's edited image, relative to the output folder."""
    return f"{EDITS_DIR}/{safe_stem(sample_id)}.png"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()  # read once at import: os.umask can only be read by setting it


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the permissions open() would give
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # the rename itself survives a power loss
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_png(image: Image.Image, path: Path, *, text: Optional[dict[str, str]] = None) -> None:
    """An RGB PNG, written atomically; `text` goes into PNG text chunks (the chart's output stamp)."""
    info = None
    if text:
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        for key, value in text.items():
            info.add_itxt(key, value)
    _atomic_write(path, lambda f: image.convert("RGB").save(f, format="PNG", pnginfo=info))


def load_png(path: Path) -> Image.Image:
    """An image of the output folder (an edit), decoded as RGB."""
    with Image.open(path) as image:
        return image.convert("RGB")


def write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def jsonl_text(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_results(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_text(path, jsonl_text(rows))


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- resume -------------------------------------------------------------------------------------
#
# <output_dir>/run.json                                what the results depend on, and the attempt count
# <output_dir>/records/attempt-0002.edit.rank-00001.jsonl   append-only, one line per sample, fsync'd per batch
# <output_dir>/records/attempt-0002.judge.rank-00001.jsonl
#
# Records are keyed by sample id, never by rank, so a run can resume with any number of processes.

RUN_FILE = "run.json"
RECORDS_DIR = "records"
RESULTS_FILE = "results.jsonl"
REPORT_FILE = "report.json"
BASELINES_DIR = "baselines"
LOCK_FILE = ".lock"
_OWNED = (RUN_FILE, RECORDS_DIR, EDITS_DIR, RESULTS_FILE, REPORT_FILE, "report.md", BASELINES_DIR, "gallery.html",
          "report_chart.png")
_TMP_FOLDERS = (".", EDITS_DIR, BASELINES_DIR, RECORDS_DIR)  # where _atomic_write may have left a temporary file


class FolderLock:
    """An exclusive `flock` on `<output_dir>/.lock`, held by the main process for the whole run: a second run
    on the same folder stops at once instead of redoing (or, with --overwrite, deleting) the first one's work.

    The kernel drops the lock when its process dies, `kill -9` included, so a lock file left behind never
    blocks the next run; the host and PID written into it only say who holds it now. On NFS, Linux clients
    implement `flock` with the server's byte-range locks, so it holds across nodes (NFSv4, or NFSv3 with
    lockd). Such a lock is lost when the holding process closes ANY descriptor of the file, so nothing else
    in the harness opens it. A filesystem without locks at all (Lustre mounted without `-o flock`) gets a
    warning and no lock.
    """

    def __init__(self, root: Path):
        self.path = Path(root) / LOCK_FILE
        self._fd: Optional[int] = None

    def acquire(self) -> bool:
        """Take the lock (True), or return False, with a warning, where the filesystem has no locks. Raises
        `ConfigError` naming the holder when another run holds it."""
        import datetime as dt
        import errno
        import fcntl
        import logging
        import socket

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "holder unknown"
                os.close(fd)
                raise ConfigError(f"{self.path.parent} is in use by another run ({holder}). Wait for it to "
                                  "finish, or use another output_dir.") from None
            os.close(fd)
            logging.getLogger(__name__).warning(
                "cannot lock %s (%s): this filesystem has no file locks, so nothing stops a second run from "
                "using the same output_dir at the same time", self.path, err)
            return False
        started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"host {socket.gethostname()}, pid {os.getpid()}, since {started}\n".encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock; the file stays for the next run
            self._fd = None


class RunFolder:
    def __init__(self, output_dir: Path):
        self.root = Path(output_dir)
        self.lock = FolderLock(self.root)

    def prepare(self, fingerprint: dict[str, Any], *, overwrite: bool, versions: Optional[dict] = None,
                info: Optional[dict] = None) -> int:
        """Main process only: check that the folder belongs to this run, start the next attempt.

        Returns the attempt number (1 for a fresh run). Raises `ConfigError` naming what differs when the
        folder holds a run with another fingerprint, unless `overwrite` clears it first.
        """
        run_file = self.root / RUN_FILE
        if overwrite:
            self.clear()
        self.remove_temporary_files()  # left by a process killed mid-write (this run holds the folder's lock)
        previous = self._read_run_file()
        if previous is None and any((self.root / name).exists() for name in _OWNED):
            raise ConfigError(f"{self.root} holds results but no {RUN_FILE}: refusing to mix runs. "
                              "Use another output_dir, or --overwrite to discard them.")
        if previous is not None and previous["fingerprint"] != fingerprint:
            old, new = previous["fingerprint"], fingerprint
            differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ)
            raise ConfigError(f"{self.root} holds a run with different settings ({details[:2000]}). "
                              "Resume with the same settings, use another output_dir, or --overwrite to start over.")
        # Counting from the records too: a run.json rolled back by a crash can't reuse an attempt number.
        attempt = 1 + max([previous["attempts"] if previous else 0, *self._attempts_on_disk()])
        history = [h for h in (previous or {}).get("history") or [] if isinstance(h, dict)]
        history.append({"attempt": attempt, "versions": versions, **(info or {})})
        # `outputs` (the stamp of the last finished reporting pass) stays until this attempt writes its own
        write_json(run_file, {"fingerprint": fingerprint, "attempts": attempt, "versions": versions,
                              "history": history, "outputs": (previous or {}).get("outputs")})
        return attempt

    def remove_temporary_files(self) -> list[Path]:
        """Delete every temporary file an interrupted atomic write can leave in the folders the harness owns."""
        removed = []
        for name in _TMP_FOLDERS:
            for stale in (self.root / name).glob(".*.tmp"):
                stale.unlink(missing_ok=True)
                removed.append(stale)
        return removed

    def record_outputs(self, stamp: dict[str, Any]) -> None:
        """Main process, last step of a reporting pass: run.json names the outputs that belong together."""
        data = self._read_run_file()
        assert data is not None, "record_outputs before prepare"
        write_json(self.root / RUN_FILE, {**data, "outputs": stamp})

    def fingerprint(self) -> Optional[dict[str, Any]]:
        data = self._read_run_file()
        return data["fingerprint"] if data else None

    def history(self) -> list[dict[str, Any]]:
        """One entry per attempt: when it started, on how many processes, with which harness commit and
        library versions (row `attempts` point here: a resumed run's rows can come from several)."""
        data = self._read_run_file()
        return list(data.get("history") or []) if data else []

    def _read_run_file(self) -> Optional[dict[str, Any]]:
        path = self.root / RUN_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("fingerprint"), dict) and \
                    isinstance(data.get("attempts"), int):
                return data
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
        raise ConfigError(f"{path} is not this harness's run file (unreadable or foreign). "
                          "Use another output_dir, or --overwrite to discard the folder's results.")

    def recorded_attempt(self) -> Optional[int]:
        """The attempt number in run.json as this process sees it; None if absent or not readable (yet)."""
        try:
            previous = self._read_run_file()
        except (ConfigError, OSError):
            return None
        return previous["attempts"] if previous else None

    def _attempts_on_disk(self) -> list[int]:
        """Attempt numbers that have record files, in order."""
        return sorted({int(p.name.split(".")[0].removeprefix("attempt-"))
                       for p in (self.root / RECORDS_DIR).glob("attempt-*.jsonl")})

    def versions_changed(self, versions: dict[str, str]) -> dict[str, tuple]:
        """Library versions that differ from the previous attempt's (edits may differ slightly)."""
        previous = self._read_run_file() or {}
        old = previous.get("versions") or {}
        return {k: (old[k], v) for k, v in versions.items() if k in old and old[k] != v}  # keys both recorded

    def clear(self) -> None:
        """--overwrite: remove what the harness wrote (never the lock file: its holder is this run)."""
        import shutil

        self.remove_temporary_files()
        for name in _OWNED:
            path = self.root / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    def read_records(self) -> tuple[dict[str, dict], dict[str, dict]]:
        """The latest edit and judge record of every sample id from earlier attempts.

        A judge record older than the sample's latest edit record is dropped: it judged another image.
        Lines torn by a kill are skipped (their samples are redone).
        """
        edits: dict[str, dict] = {}
        judgements: dict[str, dict] = {}
        for attempt in self._attempts_on_disk():
            for record in self._records(attempt, "edit"):
                edits[record["id"]] = record
                judgements.pop(record["id"], None)
            judgements.update((record["id"], record) for record in self._records(attempt, "judge"))
        return edits, judgements

    def read_baseline_records(self, name: str) -> dict[str, dict]:
        """The latest judge record of every sample id for sanity baseline `name` (its "edit" is computed from
        the source, so no edit record can make it stale)."""
        records: dict[str, dict] = {}
        for attempt in self._attempts_on_disk():
            records.update((record["id"], record) for record in self._records(attempt, f"baseline-{name}"))
        return records

    def _records(self, attempt: int, kind: str) -> list[dict]:
        """Every rank's records of one kind (edit, judge, baseline-<name>) from one attempt."""
        return [record for path in sorted((self.root / RECORDS_DIR).glob(f"attempt-{attempt:04d}.{kind}.*.jsonl"))
                for record in _read_jsonl(path)]

    def edit_is_reusable(self, record: Optional[dict]) -> bool:
        """An ok edit whose PNG is on disk with the recorded size (PNGs are renamed into place whole)."""
        if not record or record["status"] != "ok":
            return False
        path = self.root / record["edited_image"]
        return path.is_file() and path.stat().st_size == record["size"]

    def record_writer(self, attempt: int, stage: str, rank: int) -> RecordWriter:
        return RecordWriter(self.root / RECORDS_DIR / f"attempt-{attempt:04d}.{stage}.rank-{rank:05d}.jsonl")


def _read_jsonl(path: Path) -> list[dict]:
    """Records of one file. A line that doesn't parse (torn by a kill or a crash) is skipped: its sample
    simply has no record and is redone."""
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").split("\n"):
        try:
            record = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            records.append(record)
    return records


class RecordWriter:
    """Append-only JSONL; `write` returns once the lines are on disk (flush + fsync)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path

    def write(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())


# --- a finished run, as readers see it ----------------------------------------------------------
#
# One reporting pass writes results.jsonl, baselines/*.jsonl, report.json, report_chart.png, report.md and
# gallery.html, then records its stamp in run.json: {"attempt", "results_sha256", "baselines_sha256"}.
# report.json carries the same stamp, report.md, the chart and the gallery carry its digest, and
# results.jsonl and each baseline file are identified by the digest of their own bytes. A kill between two of
# those writes leaves files that disagree; `read_run` refuses such a folder instead of mixing two passes.

STAMP_TEXT_KEY = "edit-bench-outputs"  # the PNG text chunk of the chart that holds the stamp


def stamp_line(stamp: dict[str, Any]) -> str:
    """The line report.md and gallery.html carry, so a person (and `read_run`) can match them to results.jsonl."""
    return f"Outputs of attempt {stamp['attempt']}; results.jsonl sha256 {stamp['results_sha256']}."


class InconsistentRun(ConfigError):
    """A run folder whose outputs come from different reporting passes (or from none)."""


def read_run(root: Path) -> dict[str, Any]:
    """A finished run: {"folder", "run", "fingerprint", "report", "rows", "baselines"}, after checking that
    every output belongs to the same reporting pass. Raises `ConfigError` (`InconsistentRun` when files
    disagree), naming the files."""
    root = Path(root)
    missing = [name for name in (RUN_FILE, RESULTS_FILE, REPORT_FILE) if not (root / name).is_file()]
    if missing:
        raise ConfigError(f"{root} is not a finished run: it has no {', '.join(missing)}")
    run, report = (_read_json_file(root / name) for name in (RUN_FILE, REPORT_FILE))
    stamp, report_stamp = run.get("outputs"), report.get("stamp")
    if not isinstance(stamp, dict) or not isinstance(report_stamp, dict):
        raise InconsistentRun(f"{root}: {RUN_FILE} or {REPORT_FILE} has no output stamp (an unfinished reporting "
                              "pass, or an older harness): rerun the same command to rewrite the outputs.")
    disagree = []
    if report_stamp != stamp:
        disagree.append(f"{REPORT_FILE} (attempt {report_stamp.get('attempt')}) vs {RUN_FILE} "
                        f"(attempt {stamp.get('attempt')})")
    results = (root / RESULTS_FILE).read_text(encoding="utf-8")
    if sha256_text(results) != stamp.get("results_sha256"):
        disagree.append(f"{RESULTS_FILE} (not the results {RUN_FILE} names)")
    baselines = {}
    for name, digest in (stamp.get("baselines_sha256") or {}).items():
        path = root / BASELINES_DIR / f"{name}.jsonl"
        text = path.read_text(encoding="utf-8") if path.is_file() else None
        if text is None or sha256_text(text) != digest:
            disagree.append(f"{BASELINES_DIR}/{name}.jsonl")
        else:
            baselines[name] = [json.loads(line) for line in text.splitlines() if line.strip()]
    line = stamp_line(stamp)
    for view in ("report.md", "gallery.html"):  # optional views: checked where present
        if (root / view).is_file() and line not in (root / view).read_text(encoding="utf-8", errors="replace"):
            disagree.append(view)
    chart = root / "report_chart.png"
    if chart.is_file():
        with Image.open(chart) as image:
            if image.info.get(STAMP_TEXT_KEY) != line:
                disagree.append(chart.name)
    if disagree:
        raise InconsistentRun(f"{root}: its outputs come from different reporting passes ({'; '.join(disagree)}), "
                              "as after a kill while they were written. Rerun the same command to rewrite them.")
    return {"folder": root, "run": run, "fingerprint": run.get("fingerprint"), "report": report,
            "rows": [json.loads(line) for line in results.splitlines() if line.strip()], "baselines": baselines}


def _read_json_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not readable JSON: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not this harness's file (not a JSON object)")
    return data
