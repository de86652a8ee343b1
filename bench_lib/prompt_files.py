"""A benchmark's own judge prompts, read at run time from the benchmark's files (`judge_prompts`), never copied into
this project.

`judge_prompts` is a local file, a local folder (the file is then found under it by the path the protocol names),
or an `https://` URL of one file at a pinned commit; `judge_prompts_sha256` pins the file's bytes. A download is
kept in the prompt cache (`BENCH_PROMPTS_CACHE`, default ~/.cache/bench_lib/prompts), named by its sha256, so a run
works offline once the file is cached (`<sha256>/<the URL's file name>`; an entry whose bytes don't have that
digest is downloaded again). A URL needs `judge_prompts_sha256` (an unpinned download could change under the run)
and must end in a .yaml/.yml/.py file's name; a redirect is followed only where the same rules allow (https, or
plain http on this machine). A prompt file is at most 16 MiB.

Texts are taken by name, exactly as the file holds them:
- YAML (`.yaml`/`.yml`): a dotted key path, e.g. `prompts.physical.system_prompt` (block scalars as YAML reads them);
- Python (`.py`): a module-level string constant `NAME = "..."`, read with `ast` (the module is never imported or
  executed); implicit concatenation and triple quotes are what Python makes of them; an f-string or any other
  expression is refused, with its line.

Every problem is a `ConfigError` (one line, exit 2), raised before any model loads. Imports no model library.
"""

from __future__ import annotations

import ast
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .config import ConfigError

CACHE_ENV = "BENCH_PROMPTS_CACHE"
DEFAULT_CACHE = Path("~/.cache/bench_lib/prompts")
DOWNLOAD_TIMEOUT_S = 30
MAX_BYTES = 16 * 2**20  # a prompt file is text: anything larger is not one
SUFFIXES = (".yaml", ".yml", ".py")


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class PromptFile:
    """One benchmark prompt file: where it came from, its bytes' sha256, and the texts taken from it by name."""

    source: str  # as configured (a path or a URL)
    path: str  # the file read (inside a folder, or the cached download)
    sha256: str
    data: bytes = field(repr=False)
    _parsed: Any = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        suffix = Path(self.path).suffix.lower()
        if suffix in (".yaml", ".yml"):
            return "yaml"
        if suffix == ".py":
            return "python"
        raise ConfigError(f"`judge_prompts` {self.source!r}: cannot read prompts from a {suffix or 'suffix-less'} "
                          "file (a .yaml/.yml file or a .py module).")

    def text(self, name: str) -> str:
        """The text named `name` (a dotted YAML key path, or a Python constant's name), exactly as the file has it."""
        return yaml_text(self._yaml(), name, self.source) if self.kind == "yaml" else \
            python_constant(self._text(), name, self.source)

    def names(self) -> list[str]:
        """What the file offers (the top-level keys, or the module's string constants), for messages."""
        if self.kind == "yaml":
            value = self._yaml()
            return sorted(value) if isinstance(value, dict) else []
        return sorted(python_constants(self._text(), self.source))

    def _text(self) -> str:
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(f"`judge_prompts` {self.source!r} is not UTF-8 text (byte {err.start}).") from None

    def _yaml(self) -> Any:
        if self._parsed is None:
            import yaml

            text = self._text()
            try:
                self._parsed = yaml.safe_load(text)
            except yaml.YAMLError as err:
                raise ConfigError(f"`judge_prompts` {self.source!r} is not valid YAML: "
                                  f"{' '.join(str(err).split())}") from None
            except RecursionError:
                raise ConfigError(f"`judge_prompts` {self.source!r}: its YAML nests too deeply to read.") from None
        return self._parsed


def yaml_text(document: Any, name: str, source: str = "") -> str:
    value = document
    for depth, key in enumerate(name.split(".")):
        if not isinstance(value, dict) or key not in value:
            where = ".".join(name.split(".")[:depth]) or "the top level"
            known = sorted(map(str, value)) if isinstance(value, dict) else []
            raise ConfigError(f"`judge_prompts` {source!r} has no key {name!r} ({key!r} is missing under {where}; "
                              f"there: {known}).")
        value = value[key]
    if not isinstance(value, str):
        raise ConfigError(f"`judge_prompts` {source!r}: {name!r} is a {type(value).__name__}, not a text.")
    return value


def python_constants(source_text: str, source: str = "") -> dict[str, ast.AST]:
    """Every module-level `NAME = <expression>` (the last assignment wins, as at import), not evaluated."""
    try:
        tree = ast.parse(source_text)
    except SyntaxError as err:
        raise ConfigError(f"`judge_prompts` {source!r} is not valid Python: {err.msg} (line {err.lineno}).") from None
    except (RecursionError, MemoryError):
        raise ConfigError(f"`judge_prompts` {source!r}: its Python nests too deeply to parse.") from None
    except ValueError as err:  # a NUL byte
        raise ConfigError(f"`judge_prompts` {source!r} is not valid Python: {err}.") from None
    out: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            out[node.target.id] = node.value
    return out


def python_constant(source_text: str, name: str, source: str = "") -> str:
    """The string constant `name` of a module's source, as Python reads the literal (concatenation and triple
    quotes included); the module is parsed, never imported or run."""
    constants = python_constants(source_text, source)
    if name not in constants:
        strings = sorted(n for n, v in constants.items() if isinstance(v, (ast.Constant, ast.JoinedStr)))
        raise ConfigError(f"`judge_prompts` {source!r} has no module-level constant {name!r} (its string constants: "
                          f"{strings}).")
    node = constants[name]
    if isinstance(node, ast.JoinedStr):
        raise ConfigError(f"`judge_prompts` {source!r}: {name!r} (line {node.lineno}) is an f-string, whose text "
                          "is only known when the module runs; it is never run here, so it cannot be used.")
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        raise ConfigError(f"`judge_prompts` {source!r}: {name!r} (line {node.lineno}) is not a string literal "
                          f"({type(node).__name__}); only plain string constants are read.")
    return node.value


# --- where the file comes from ----------------------------------------------------------------------------


def load_prompt_file(source: str, sha256: str = "", *, member: Optional[str] = None) -> PromptFile:
    """Read `source` (a file, a folder holding `member`, or an https URL) and check its sha256 against `sha256`
    (when given; required for a URL)."""
    source = source.strip()
    expected = sha256.strip().lower()
    if source.startswith(("http://", "https://")):
        if source.startswith("http://") and not _loopback(source):
            raise ConfigError(f"`judge_prompts` {source!r}: only https URLs are downloaded.")
        if not expected:
            raise ConfigError(f"`judge_prompts` is a URL ({source}) without `judge_prompts_sha256`: pin the file's "
                              "bytes (sha256 of the file at its commit), or give a local file.")
        data, path = _download(source, expected)
    else:
        local = Path(source).expanduser()
        if local.is_dir():
            if not member:
                raise ConfigError(f"`judge_prompts` {source!r} is a folder, and this protocol names no file in it.")
            local = local / member
        if not local.is_file():
            what = "is not a regular file (a folder, FIFO or device)" if local.exists() else "does not exist"
            raise ConfigError(f"`judge_prompts` {source!r}: {local} {what}.")
        if local.stat().st_size > MAX_BYTES:
            raise ConfigError(f"`judge_prompts` {source!r}: {local} is larger than {MAX_BYTES // 2**20} MiB, too large "
                              "for a prompt file.")
        data, path = local.read_bytes(), str(local)
    actual = sha256_bytes(data)
    if expected and actual != expected:
        raise ConfigError(f"`judge_prompts_sha256` does not match {source}: expected {expected}, got {actual} "
                          "(the file changed; check it and pin the new digest).")
    return PromptFile(source=source, path=path, sha256=actual, data=data)


def _loopback(url: str) -> bool:
    """A plain-http URL is accepted on this machine only (a file served for a test)."""
    from urllib.parse import urlparse

    try:
        return urlparse(url).hostname in ("127.0.0.1", "localhost", "::1")
    except ValueError:
        return False


def _allowed(url: str) -> bool:
    """The URLs downloaded: https, or plain http on this machine."""
    return url.startswith("https://") or (url.startswith("http://") and _loopback(url))


class _SameRulesRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL the same rules allow (https, or http on this machine)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not _allowed(newurl):
            raise ConfigError(f"`judge_prompts` {req.full_url}: redirected to {newurl}, which is not an https URL "
                              "(plain http is only read from this machine); give the final URL.")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _file_name(url: str) -> str:
    """The file a URL names (its path's last part), a plain .yaml/.yml/.py name: the cache entry's name."""
    from urllib.parse import urlparse

    name = urlparse(url).path.rsplit("/", 1)[-1]
    if name in ("", ".", "..") or "\\" in name or Path(name).suffix.lower() not in SUFFIXES:
        raise ConfigError(f"`judge_prompts` {url}: the URL must end in the prompt file's name (a .yaml/.yml/.py "
                          f"file), not {name!r}.")
    return name


def _download(url: str, sha256: str) -> tuple[bytes, str]:
    """The file's bytes, from the cache when it holds them (no network), else downloaded into it. A cache entry
    whose bytes don't have its digest (changed on disk) is discarded, with a warning, and downloaded again."""
    cached = cache_dir() / sha256 / _file_name(url)
    if cached.is_file():
        data = cached.read_bytes()
        if sha256_bytes(data) == sha256:
            return data, str(cached)
        import logging

        logging.getLogger(__name__).warning("prompt cache entry %s does not hold the bytes of its digest: discarded, "
                                            "downloading %s again", cached, url)
        cached.unlink()
    try:
        opener = urllib.request.build_opener(_SameRulesRedirects)
        with opener.open(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            data = response.read(MAX_BYTES + 1)
    except ConfigError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise ConfigError(f"`judge_prompts` {url}: cannot download it ({reason}) and the prompt cache "
                          f"({cache_dir()}) does not hold it: download it once with network, or give a local "
                          "file.") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(f"`judge_prompts` {url}: larger than {MAX_BYTES // 2**20} MiB, too large for a prompt "
                          "file.")
    actual = sha256_bytes(data)
    if actual != sha256:
        raise ConfigError(f"`judge_prompts_sha256` does not match {url}: expected {sha256}, got {actual} (the "
                          "file changed; check it and pin the new digest).")
    tmp = None
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cached.parent, prefix=".download-", delete=False) as tmp:
            tmp.write(data)
        os.replace(tmp.name, cached)
    except OSError as err:
        raise ConfigError(f"`judge_prompts` {url}: cannot keep the download in the prompt cache {cache_dir()} "
                          f"({err}).") from None
    finally:
        if tmp is not None and os.path.exists(tmp.name):
            os.unlink(tmp.name)
    return data, str(cached)
