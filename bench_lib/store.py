"""The output folder: file-safe names, atomic writes, the lock, records, the consistency check.

```
<output_dir>/.lock                       the main process's flock for the whole run (FolderLock)
<output_dir>/run.json                    what the results depend on (fingerprint), attempts, the output stamp
<output_dir>/records/attempt-0002.edit.rank-00001.jsonl           append-only records of each attempt, per rank
<output_dir>/records/attempt-0002.judge.rank-00001.jsonl          (edits, judgements, each sanity baseline's
<output_dir>/records/attempt-0002.baseline-identity.rank-00000.jsonl  judgements): what a resume reads
<output_dir>/edits/<file-safe id>.png    the edited images
<output_dir>/results.jsonl               one row per sample, in dataset order
<output_dir>/baselines/<name>.jsonl      each sanity baseline's rows
<output_dir>/report.json, report.md      the report (bench_lib.report)
<output_dir>/report_chart.png            its chart (optional)
<output_dir>/gallery.html                every sample's images and scores (optional, bench_lib.gallery)
```
A sweep's folder holds one such folder per variant, plus its own `.lock`, sweep.json, sweep.md and
sweep_chart.png (bench_lib.sweep). The outputs of one reporting pass carry one stamp (run.json's `outputs`), so
`read_run` can tell a complete set from one a kill left half rewritten.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import stat
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


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _link_error(path: Path) -> OSError:
    kind = "a symbolic link" if path.is_symlink() else "not a folder"
    return OSError(errno.ELOOP, f"{path} is {kind}: the harness never writes through a link (nor into anything "
                                "but a folder it made)", str(path))


def _open_folder(root: Path, relative: Path) -> int:
    """A descriptor of the folder `root/relative`, made where missing. `root` is the folder a caller named (a
    link in its own path is theirs to make); below it, every folder is a real one, never a link: each is opened
    relative to the one above with O_NOFOLLOW, so one swapped for a link mid-run is refused too."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        here = Path(root)
        for part in Path(relative).parts:
            here = here / part
            try:
                os.mkdir(part, 0o777, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                below = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _link_error(here) from None
                raise
            os.close(fd)
            fd = below
    except BaseException:
        os.close(fd)
        raise
    return fd


def _atomic_write(path: Path, write, *, root: Optional[Path] = None) -> None:
    """`path` written whole or not at all: a temporary file in its folder, fsync'd, then renamed over it, so a
    link in its place is replaced, never written through. With `root`, every folder between `root` and the file
    is a real folder (see `_open_folder`); without it, the file's own folder is the one the caller named."""
    path = Path(path)
    if root is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd_dir = os.open(path.parent, _DIR_FLAGS)
    else:
        fd_dir = _open_folder(Path(root), path.parent.relative_to(root))
    try:
        while True:
            tmp = f".{path.name}.{secrets.token_hex(4)}.tmp"  # the shape remove_temporary_files looks for
            try:
                # the umask applies, as with open(): outputs get the permissions any file the user makes gets
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                             dir_fd=fd_dir)
                break
            except FileExistsError:
                continue
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path.name, src_dir_fd=fd_dir, dst_dir_fd=fd_dir)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=fd_dir)
            except FileNotFoundError:
                pass
            raise
        os.fsync(fd_dir)  # the rename itself survives a power loss
    finally:
        os.close(fd_dir)


def save_png(image: Image.Image, path: Path, *, text: Optional[dict[str, str]] = None,
             root: Optional[Path] = None) -> None:
    """An RGB PNG, written atomically (`root`: see `_atomic_write`); `text` goes into PNG text chunks (the chart's
    output stamp). zlib level 1: the same pixels (PNG is lossless at every level) in ~0.1 s for a 1 Mpx edit instead
    of ~0.45 s at Pillow's default 6, for files ~12% larger (measured on RISEBench images, 1024x1024): the rank
    saves each edit before its next one starts."""
    info = None
    if text:
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        for key, value in text.items():
            info.add_itxt(key, value)
    _atomic_write(path, lambda f: image.convert("RGB").save(f, format="PNG", pnginfo=info, compress_level=1),
                  root=root)


def load_png(path: Path) -> Image.Image:
    """An image of the output folder (an edit), decoded as RGB."""
    with Image.open(path) as image:
        return image.convert("RGB")


def write_text(path: Path, text: str, *, root: Optional[Path] = None) -> None:
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")), root=root)


def write_json(path: Path, obj: Any, *, root: Optional[Path] = None) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n", root=root)


def jsonl_text(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_results(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_text(path, jsonl_text(rows))


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def differences(a: Any, b: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, value in a, value in b) of every leaf where two nested mappings differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in sorted(set(a) | set(b), key=str)
                for d in differences(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))]
    return [] if a == b else [(path, a, b)]


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


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
JUDGE_INPUTS_FILE = "judge_inputs.jsonl"  # what the judge was sent, per sample and view
REPORT_FILE = "report.json"
BASELINES_DIR = "baselines"
LOCK_FILE = ".lock"
_OWNED = (RUN_FILE, RECORDS_DIR, EDITS_DIR, RESULTS_FILE, REPORT_FILE, "report.md", BASELINES_DIR, "gallery.html",
          "report_chart.png", JUDGE_INPUTS_FILE)
_FOLDERS = (RECORDS_DIR, EDITS_DIR, BASELINES_DIR)
OWNED = _OWNED  # what a run writes in its folder (and --overwrite deletes)
_TMP_FOLDERS = (".", EDITS_DIR, BASELINES_DIR, RECORDS_DIR)  # where _atomic_write may have left a temporary file


class FolderLock:
    """An exclusive `flock` on `<output_dir>/.lock`, held by the main process for the whole run: a second run
    on the same folder stops at once instead of redoing (or, with --overwrite, deleting) the first one's work.

    The kernel drops the lock when its process dies, `kill -9` included, so a lock file left behind never
    blocks the next run; the host and PID written into it only say who holds it now. On NFS, Linux clients
    implement `flock` with the server's byte-range locks, so it holds across nodes (NFSv4, or NFSv3 with
    lockd). Such a lock is lost when the holding process closes ANY descriptor of the file, so nothing else
    in the harness opens it. A filesystem without locks at all (Lustre mounted without `-o flock`) gets a
    warning and no lock. A `.lock` that is a link (symbolic or hard), a folder or anything but a plain file is
    refused (exit 2): the lock is never taken (nor written) through a link.

    `acquire` makes the folder if it is missing; `release` removes what `acquire` made when nothing else was
    written beside the lock file (a run refused before it wrote anything leaves the folders as they were).
    """

    def __init__(self, root: Path):
        self.path = Path(root) / LOCK_FILE
        self._fd: Optional[int] = None
        self._made: list[Path] = []  # folders and the lock file that `acquire` created, outermost first

    def acquire(self) -> bool:
        """Take the lock (True), or return False, with a warning, where the filesystem has no locks. Raises
        `ConfigError` naming the holder when another run holds it, or when `.lock` is not a plain file."""
        import datetime as dt
        import fcntl
        import socket

        folder = self.path.parent
        missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
        folder.mkdir(parents=True, exist_ok=True)
        self._made = [p for p in missing if p.is_dir()]
        for _ in range(10):  # a lock on a file another run unlinked meanwhile locks nothing: take it again
            folder.mkdir(parents=True, exist_ok=True)  # (that run may have removed the folder it made, too)
            fd = self._lock_file(fcntl)
            if fd is None:
                return False
            try:
                now = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_dev, now.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino):
                break
            os.close(fd)
            self._made = [p for p in self._made if p != self.path]
        else:
            raise ConfigError(f"{self.path} keeps being replaced while this run locks it: another run is starting "
                              "on the same output_dir. Wait for it, or use another output_dir.")
        started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"host {socket.gethostname()}, pid {os.getpid()}, since {started}\n".encode(), 0)
        self._fd = fd
        return True

    def _lock_file(self, fcntl) -> Optional[int]:
        """Open `.lock` (made if missing) and lock it: its descriptor, or None where the filesystem has no locks."""
        import logging

        existed = os.path.lexists(self.path)
        try:  # O_NONBLOCK: a FIFO planted as .lock can't block the open
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENOTDIR):
                raise ConfigError(self._not_a_lock()) from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode) or os.fstat(fd).st_nlink > 1:
            os.close(fd)  # a hard link: truncating it would truncate the file of its other name
            raise ConfigError(self._not_a_lock())
        if not existed:
            self._made.append(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "holder unknown"
                os.close(fd)
                self._made = []  # the holder's, now
                raise ConfigError(f"{self.path.parent} is in use by another run ({holder}). Wait for it to "
                                  "finish, or use another output_dir.") from None
            os.close(fd)
            logging.getLogger(__name__).warning(
                "cannot lock %s (%s): this filesystem has no file locks, so nothing stops a second run from "
                "using the same output_dir at the same time", self.path, err)
            return None
        return fd

    def _not_a_lock(self) -> str:
        kind = ("a symbolic link" if self.path.is_symlink() else "a folder" if self.path.is_dir()
                else "a hard link (one more name of another file)" if self.path.is_file() else "not a plain file")
        return (f"{self.path} is {kind}: the harness locks output_dir with a plain file and never follows a link. "
                "Remove it, or use another output_dir.")

    def release(self) -> None:
        """Unlock; and where `acquire` made the folder (or the lock file) and nothing else was written in it,
        remove them again."""
        made, self._made = self._made, []
        if self.path in made and os.path.isdir(self.path.parent) and os.listdir(self.path.parent) == [LOCK_FILE]:
            os.unlink(self.path)  # still locked while it goes: a run that opened it meanwhile finds it in use
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock; the file stays for the next run
            self._fd = None
        for folder in reversed([p for p in made if p != self.path]):
            try:
                folder.rmdir()  # only if empty
            except OSError:
                break


class RunFolder:
    def __init__(self, output_dir: Path):
        self.root = Path(output_dir)
        self.lock = FolderLock(self.root)

    def check(self, fingerprint: dict[str, Any], *, overwrite: bool) -> None:
        """Main process, before anything is written: raises `ConfigError` where `prepare` would refuse the folder
        (a link or an odd file where the harness writes; unless `overwrite`: another run's results, a foreign
        run file, another fingerprint). Writes nothing, so a sweep checks every variant's folder first."""
        self._check_entries()
        if overwrite:
            return
        previous = self._read_run_file()
        if previous is None and any(os.path.lexists(self.root / name) for name in _OWNED):
            raise ConfigError(f"{self.root} holds results but no {RUN_FILE}: refusing to mix runs. "
                              "Use another output_dir, or --overwrite to discard them.")
        if previous is not None and previous["fingerprint"] != fingerprint:
            differ = differences(previous["fingerprint"], fingerprint)
            details = "; ".join(f"{key}: {_short(old)} -> {_short(new)}" for key, old, new in differ)
            raise ConfigError(f"{self.root} holds a run with different settings ({details[:2000]}). "
                              "Resume with the same settings, use another output_dir, or --overwrite to start over.")

    def _check_entries(self) -> None:
        """Nothing the harness writes or deletes may be a link (it would write, or with --overwrite delete, through
        it, out of the folder): not its files and folders, nor anything inside those folders; and records/ holds
        plain files only (a FIFO there would block the resume that reads it). The harness never makes a link, so
        one found here is someone else's: it is named, never removed."""
        bad = []
        for name in _OWNED:
            path = self.root / name
            if path.is_symlink():
                bad.append(f"{path} is a symbolic link")
            elif name in _FOLDERS and os.path.lexists(path) and not path.is_dir():
                bad.append(f"{path} is not a folder")
            elif name in _FOLDERS and path.is_dir():
                with os.scandir(path) as entries:
                    for entry in entries:
                        if entry.is_symlink():
                            bad.append(f"{entry.path} is a symbolic link")
                        elif name == RECORDS_DIR and not entry.is_file(follow_symlinks=False):
                            bad.append(f"{entry.path} is not a plain file")  # a FIFO would block the reading of records
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise ConfigError(f"{bad[0]}{more}: the harness never writes or deletes through a link, nor into "
                              "anything but a folder it made. Remove it, or use another output_dir.")

    def prepare(self, fingerprint: dict[str, Any], *, overwrite: bool, versions: Optional[dict] = None,
                info: Optional[dict] = None, inputs: Optional[dict[str, str]] = None) -> int:
        """Main process only: check that the folder belongs to this run, start the next attempt.

        Returns the attempt number (1 for a fresh run). Raises `ConfigError` naming what differs when the
        folder holds a run with another fingerprint, unless `overwrite` clears it first (see `check`).
        """
        self.check(fingerprint, overwrite=overwrite)
        run_file = self.root / RUN_FILE
        if overwrite:
            self.clear()
        self.remove_temporary_files()  # left by a process killed mid-write (this run holds the folder's lock)
        previous = self._read_run_file()
        # Counting from the records too: a run.json rolled back by a crash can't reuse an attempt number.
        attempt = 1 + max([previous["attempts"] if previous else 0, *self._attempts_on_disk()])
        history = [h for h in (previous or {}).get("history") or [] if isinstance(h, dict)]
        history.append({"attempt": attempt, "versions": versions, **(info or {})})
        # `outputs` (the stamp of the last finished reporting pass) stays until this attempt writes its own
        write_json(run_file, {"fingerprint": fingerprint, "attempts": attempt, "versions": versions,
                              "history": history, "outputs": (previous or {}).get("outputs"),
                              "inputs": {**self.recorded_inputs(previous), **(inputs or {})}})
        return attempt

    def record_inputs(self, inputs: dict[str, str]) -> None:
        """Main process: add image files' digests to run.json (`prepare` records the others)."""
        data = self._read_run_file()
        assert data is not None, "record_inputs before prepare"
        write_json(self.root / RUN_FILE, {**data, "inputs": {**self.recorded_inputs(data), **inputs}})

    def recorded_inputs(self, data: Optional[dict[str, Any]] = None) -> dict[str, str]:
        """sample id -> the digest of its image files as the attempts so far found them (`data.input_digests`)."""
        data = self._read_run_file() if data is None else data
        found = (data or {}).get("inputs")
        return {k: v for k, v in found.items() if isinstance(v, str)} if isinstance(found, dict) else {}

    def remove_temporary_files(self) -> list[Path]:
        """Delete every temporary file an interrupted atomic write can leave in the folders the harness owns."""
        removed = []
        for name in _TMP_FOLDERS:
            for stale in (self.root / name).glob(".*.tmp"):
                stale.unlink(missing_ok=True)
                removed.append(stale)
        return removed

    def record_outputs(self, stamp: dict[str, Any], *, timings: Optional[dict[str, Any]] = None) -> None:
        """Main process, last step of a reporting pass: run.json names the outputs that belong together. `timings`:
        the attempt's own, when it edited or judged anything (kept in its history entry, see `worked_timings`)."""
        data = self._read_run_file()
        assert data is not None, "record_outputs before prepare"
        history = data.get("history") or []
        if timings is not None:
            history = [{**h, "timings": timings} if isinstance(h, dict) and h.get("attempt") == stamp["attempt"]
                       else h for h in history]
        write_json(self.root / RUN_FILE, {**data, "history": history, "outputs": stamp})

    def worked_timings(self) -> Optional[dict[str, Any]]:
        """The timings of the latest attempt that edited or judged anything (they carry its `attempt`), or None."""
        for entry in reversed(self.history()):
            if isinstance(entry, dict) and isinstance(entry.get("timings"), dict):
                return entry["timings"]
        return None

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
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deeply
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
        return sorted({int(match.group(1)) for p in (self.root / RECORDS_DIR).glob("attempt-*.jsonl")
                       if (match := _RECORD_NAME.fullmatch(p.name))})  # a file of another name is not a record

    def versions_changed(self, versions: dict[str, str]) -> dict[str, tuple]:
        """Library versions that differ from the previous attempt's (edits may differ slightly)."""
        previous = self._read_run_file() or {}
        old = previous.get("versions") or {}
        return {k: (old[k], v) for k, v in versions.items() if k in old and old[k] != v}  # keys both recorded

    def clear(self) -> None:
        """--overwrite: remove what the harness wrote (never the lock file: its holder is this run; never through
        a link: `check` refused the folder first)."""
        import shutil

        self._check_entries()
        self.remove_temporary_files()
        for name in _OWNED:
            path = self.root / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif os.path.lexists(path):
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

    def recorded_baselines(self) -> set[str]:
        """The sanity baselines any attempt recorded judgements of (a resume may run other ones)."""
        return {match.group(1) for p in (self.root / RECORDS_DIR).glob("attempt-*.baseline-*.jsonl")
                if _RECORD_NAME.fullmatch(p.name) and (match := _BASELINE_KIND.fullmatch(p.name))}

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
        return RecordWriter(self.root / RECORDS_DIR / f"attempt-{attempt:04d}.{stage}.rank-{rank:05d}.jsonl",
                            root=self.root)


_RECORD_NAME = re.compile(r"attempt-(\d+)\..+\.rank-\d+\.jsonl")
_BASELINE_KIND = re.compile(r"attempt-\d+\.baseline-(.+)\.rank-\d+\.jsonl")


def _read_all(fd: int) -> bytes:
    """Every byte of an open file, whatever its position."""
    chunks, offset = [], 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


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
    """Append-only JSONL; `write` returns once the lines are on disk (flush + fsync). Never through a link: the
    file is opened with O_NOFOLLOW, its folders below `root` as in `_open_folder`; a file with a second (hard)
    name is copied and renamed into place before the lines are added, so the other name keeps its content."""

    def __init__(self, path: Path, *, root: Optional[Path] = None):
        self.path = Path(path)
        self.root = Path(root) if root is not None else self.path.parent
        os.close(_open_folder(self.root, self.path.parent.relative_to(self.root)))

    def write(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        text = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records)
        fd_dir = _open_folder(self.root, self.path.parent.relative_to(self.root))
        try:
            fd = os.open(self.path.name, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_CLOEXEC, 0o666, dir_fd=fd_dir)  # O_NONBLOCK: a FIFO in its place can't block
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise _link_error(self.path) from None
            if err.errno == errno.ENXIO:
                raise OSError(errno.ENXIO, f"{self.path} is not a plain file: records are appended to files only",
                              str(self.path)) from None
            raise
        finally:
            os.close(fd_dir)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise OSError(errno.EINVAL, f"{self.path} is not a plain file: records are appended to files only",
                              str(self.path))
            if info.st_nlink > 1:  # a hard link (a snapshot made with `cp -al`): appending would change its other name
                kept = _read_all(f.fileno())
                _atomic_write(self.path, lambda g: g.write(kept + text.encode("utf-8")), root=self.root)
                return
            f.write(text)
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
    except RecursionError:
        raise ConfigError(f"{path} is not this harness's file (nested too deeply)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not this harness's file (not a JSON object)")
    return data
