"""A benchmark's prompt file read at run time (bench_lib.prompt_files): texts taken by name, byte-equal to what the
file's own reader (YAML, Python) makes of them; the file pinned by sha256; a download cached and used offline.
Every file here is written by the test with invented text in the structure of a benchmark's file."""

import hashlib
import http.server
import threading

import pytest
import yaml

from bench_lib.config import ConfigError
from bench_lib.prompt_files import CACHE_ENV, load_prompt_file, python_constant

YAML_FILE = """\
# a recipe-like file with a prompts section
data:
  path: "/somewhere"
prompts:
  tidy:
    system_prompt: |
      You grade tidiness.
        Indented line kept.

      Last line, then a blank one.

    user_prompt_template: |
      Scene: {scene}
      Output JSON format:
      {{
      "score" : "yes" or "no"
      }}
  folded: >
    one
    two
"""

PY_FILE = '''\
"""module docstring"""
import os

plain = "a plain string with \\t a tab and unicode \\u00e9"
joined = ("first part, "
          "second part "
          'third {x}')
triple = """Line one.
  Line two with "quotes" and {y}.
"""
raw = r"a \\d+ raw"
name = "x"
formatted = f"hello {name}"
computed = "a" + "b"
plain = "reassigned: the last assignment wins, as at import"
'''


def test_yaml_block_scalars_are_byte_equal_to_what_yaml_reads(tmp_path):
    path = tmp_path / "scoring.yaml"
    path.write_text(YAML_FILE, encoding="utf-8")
    file = load_prompt_file(str(path))
    parsed = yaml.safe_load(YAML_FILE)
    for name in ("prompts.tidy.system_prompt", "prompts.tidy.user_prompt_template", "prompts.folded"):
        keys = name.split(".")
        expected = parsed
        for key in keys:
            expected = expected[key]
        assert file.text(name) == expected
    assert file.text("prompts.tidy.system_prompt").endswith("then a blank one.\n")  # `|` clips to one newline
    assert "  Indented line kept." in file.text("prompts.tidy.system_prompt")
    assert file.sha256 == hashlib.sha256(YAML_FILE.encode()).hexdigest()
    with pytest.raises(ConfigError, match=r"no key 'prompts.messy.system_prompt' \('messy' is missing under "
                                          r"prompts; there: \['folded', 'tidy'\]\)"):
        file.text("prompts.messy.system_prompt")
    with pytest.raises(ConfigError, match="'prompts.tidy' is a dict, not a text"):
        file.text("prompts.tidy")


def test_python_constants_are_read_with_ast_never_executed(tmp_path):
    path = tmp_path / "prompts.py"
    path.write_text(PY_FILE + "raise SystemExit('this module must never run')\n", encoding="utf-8")
    file = load_prompt_file(str(path))
    module = {}
    exec(compile(PY_FILE, "prompts.py", "exec"), module)  # the test's own reference: what Python makes of them
    for name in ("plain", "joined", "triple", "raw"):
        assert file.text(name) == module[name], name
    assert file.text("joined") == "first part, second part third {x}"
    assert file.text("plain").startswith("reassigned")
    with pytest.raises(ConfigError, match=r"'formatted' \(line 13\) is an f-string.*cannot be used"):
        file.text("formatted")
    with pytest.raises(ConfigError, match=r"'computed' \(line 14\) is not a string literal \(BinOp\)"):
        file.text("computed")
    with pytest.raises(ConfigError, match=r"no module-level constant 'missing' \(its string constants: .*'triple'"):
        file.text("missing")
    with pytest.raises(ConfigError, match="not valid Python"):
        python_constant("x = (", "x", "broken.py")


def test_a_changed_file_is_refused_naming_the_pin_and_both_digests(tmp_path):
    path = tmp_path / "prompts.py"
    path.write_text(PY_FILE)
    good = hashlib.sha256(PY_FILE.encode()).hexdigest()
    assert load_prompt_file(str(path), good).sha256 == good
    path.write_text(PY_FILE + "\n")
    bad = hashlib.sha256((PY_FILE + "\n").encode()).hexdigest()
    with pytest.raises(ConfigError) as err:
        load_prompt_file(str(path), good)
    message = str(err.value)
    assert "`judge_prompts_sha256`" in message and f"expected {good}" in message and f"got {bad}" in message
    assert "\n" not in message


def test_a_folder_holds_the_protocols_file_and_missing_files_are_named(tmp_path):
    (tmp_path / "repo" / "utils").mkdir(parents=True)
    (tmp_path / "repo" / "utils" / "prompts.py").write_text(PY_FILE)
    assert load_prompt_file(str(tmp_path / "repo"), member="utils/prompts.py").text("triple").startswith("Line one")
    with pytest.raises(ConfigError, match="does not exist"):
        load_prompt_file(str(tmp_path / "repo"), member="utils/other.py")
    with pytest.raises(ConfigError, match="cannot read prompts from a .txt file"):
        (tmp_path / "p.txt").write_text("x")
        load_prompt_file(str(tmp_path / "p.txt")).text("x")


def test_a_prompt_file_that_is_a_fifo_is_named_as_one_not_as_missing(tmp_path):
    import os

    os.mkfifo(tmp_path / "prompts.py")
    with pytest.raises(ConfigError, match="prompts.py is not a regular file"):
        load_prompt_file(str(tmp_path / "prompts.py"))


class _Server:
    def __init__(self, body: bytes, *, redirect: str = ""):
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                if redirect:
                    self.send_response(302)
                    self.send_header("Location", redirect)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/abc123/utils.py"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_download_is_pinned_cached_and_then_read_offline(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    digest = hashlib.sha256(PY_FILE.encode()).hexdigest()
    server = _Server(PY_FILE.encode())
    try:
        with pytest.raises(ConfigError, match="without `judge_prompts_sha256`"):
            load_prompt_file(server.url)
        with pytest.raises(ConfigError, match=f"expected {'0' * 64}, got {digest}"):
            load_prompt_file(server.url, "0" * 64)
        assert not list((tmp_path / "cache").rglob("utils.py"))  # a wrong file never enters the cache
        file = load_prompt_file(server.url, digest)
        assert file.text("triple").startswith("Line one") and server.hits == 2
    finally:
        server.close()
    # the server is gone: the cache answers, without network
    again = load_prompt_file(server.url, digest)
    assert again.sha256 == digest and again.path == str(tmp_path / "cache" / digest / "utils.py")
    # nothing cached under another pin and no network: one line
    with pytest.raises(ConfigError, match=r"cannot download it .* does not hold it"):
        load_prompt_file(server.url, "1" * 64)


def test_a_pre_seeded_cache_serves_an_https_url_offline(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    digest = hashlib.sha256(YAML_FILE.encode()).hexdigest()
    seeded = tmp_path / "cache" / digest / "scoring_config.yaml"
    seeded.parent.mkdir(parents=True)
    seeded.write_text(YAML_FILE)
    url = "https://raw.githubusercontent.com/example/bench/0123456789abcdef/scoring_config.yaml"
    assert load_prompt_file(url, digest).text("prompts.folded") == "one two\n"
    with pytest.raises(ConfigError, match="only https URLs"):
        load_prompt_file("http://example.com/x.yaml", digest)


@pytest.mark.parametrize("name, content, words", [
    ("latin1.yaml", b"a: caf\xe9\n", "is not UTF-8 text"),
    ("latin1.py", b'A = "caf\xe9"\n', "is not UTF-8 text"),
    ("deep.yaml", b"a: " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "nests too deeply"),
    ("deep.py", b"A = " + b"-" * 200_000 + b"1\n", "nests too deeply"),
    ("nul.py", b'A = "x\x00"\n', "is not valid Python"),
])
def test_a_file_that_cannot_be_read_is_one_line(tmp_path, name, content, words):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=words) as err:
        load_prompt_file(str(path)).text("A")
    assert "\n" not in str(err.value)


def test_a_file_over_the_size_cap_is_refused(tmp_path, monkeypatch):
    from bench_lib import prompt_files

    path = tmp_path / "big.yaml"
    with open(path, "wb") as f:
        f.truncate(prompt_files.MAX_BYTES + 1)
    with pytest.raises(ConfigError, match="larger than 16 MiB"):
        load_prompt_file(str(path))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(prompt_files, "MAX_BYTES", 100)
    server = _Server(b"#" * 101)
    try:
        with pytest.raises(ConfigError, match="larger than"):
            load_prompt_file(server.url, hashlib.sha256(b"#" * 101).hexdigest())
    finally:
        server.close()
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_a_url_that_names_no_file_or_a_cache_that_cannot_keep_it_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    digest = hashlib.sha256(PY_FILE.encode()).hexdigest()
    server = _Server(PY_FILE.encode())
    try:
        for url in (server.url + "/..", server.url.rsplit("/", 1)[0] + "/"):
            with pytest.raises(ConfigError, match="must end in the prompt file's name"):
                load_prompt_file(url, digest)
        (tmp_path / "cache" / digest / "utils.py").mkdir(parents=True)  # the entry can't be written
        with pytest.raises(ConfigError, match="cannot keep the download in the prompt cache"):
            load_prompt_file(server.url, digest)
    finally:
        server.close()
    assert [p.name for p in (tmp_path / "cache").rglob("*")] == [digest, "utils.py"]  # no temporary file left


def test_a_redirect_off_the_allowed_hosts_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    away = _Server(b"", redirect="http://192.0.2.1/x.py")
    try:
        with pytest.raises(ConfigError, match=r"redirected to http://192\.0\.2\.1/x\.py, which is not an https"):
            load_prompt_file(away.url, "0" * 64)
        assert away.hits == 1
    finally:
        away.close()
    target = _Server(PY_FILE.encode())
    near = _Server(b"", redirect=target.url)  # loopback to loopback: the same rules hold
    try:
        assert load_prompt_file(near.url, hashlib.sha256(PY_FILE.encode()).hexdigest()).text("raw") == r"a \d+ raw"
    finally:
        near.close()
        target.close()


def test_a_cache_entry_with_other_bytes_is_discarded_and_downloaded_again(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    digest = hashlib.sha256(PY_FILE.encode()).hexdigest()
    server = _Server(PY_FILE.encode())
    try:
        cached = load_prompt_file(server.url, digest).path
        with open(cached, "w") as f:
            f.write('triple = "poisoned"\n')
        with caplog.at_level("WARNING", logger="bench_lib.prompt_files"):
            again = load_prompt_file(server.url, digest)
        assert again.text("triple").startswith("Line one") and server.hits == 2
        assert any("does not hold the bytes of its digest" in r.getMessage() for r in caplog.records)
        assert open(cached).read() == PY_FILE
    finally:
        server.close()
