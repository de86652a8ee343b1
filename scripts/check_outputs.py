"""Do two checkouts of the harness write the same outputs? The regression check of a change that should change
no result (a refactor), run before it lands.

    python scripts/check_outputs.py against REV [--keep DIR]   # REV (a git worktree in a temp folder) vs this checkout
    python scripts/check_outputs.py run OUT                    # this checkout's runs into OUT
    python scripts/check_outputs.py diff A B                   # two such folders

The runs use the tiny models (built per checkout in OUT/tiny-cache, so their build is compared too) and cover
the offline default (the tiny diffusers editor, both sanity baselines, logits mode), generate mode, a sweep of
two tiny LoRA adapters over a base, edits made elsewhere (`precomputed`), and each benchmark's format with its
protocol: RE-Edit (the demo file), RISEBench (`../shared/data/risebench`, when present), KRIS-Bench and
GEdit-Bench (look-alike files this script writes). Each run is a plain command line of the checkout under test.

`diff` compares every file each run wrote: PNGs by their pixels and text chunks, other images bitwise, JSON and
JSONL after dropping what says when or how fast (timings, dates, attempt stamps, the harness's commit, the command
line) and after replacing the output folder's and the checkout's paths with placeholders; Markdown and HTML the
same way, line by line, without the timing tables. Exit code 0 when everything matches, 1 with the differences
listed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RISEBENCH = ROOT.parent / "shared" / "data" / "risebench"
TINY_JUDGE = ["--judge_model", "tiny:qwen3-vl", "--judge_dtype", "float32", "--judge_min_digit_mass", "0"]
# Keys that say when, where from or how fast, at any depth of report.json, sweep.json and run.json.
# A local parquet/CSV/folder dataset's identity is its `datasets` fingerprint, which follows its files' paths and
# times: the two checkouts' look-alike files differ by path only.
VOLATILE_KEYS = {"timings", "stamp", "started", "ended", "history", "harness", "command", "attempt", "attempts",
                 "reused_edits", "reused_judgements", "versions", "packages", "devices", "elapsed",
                 "finished"}


# --- the runs -------------------------------------------------------------------------------------------


def _png(color: str, size=(48, 32)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def write_kris(root: Path) -> Path:
    """A folder laid out like KRIS-Bench's (task folders, annotation.json), with images drawn here."""
    from PIL import Image

    tasks = {
        "chemistry": {"1": {"ori_img": "1.jpg", "gt_img": "", "ins_en": "Pour acid on the chalk.",
                            "explain_en": "Acid on calcium carbonate releases gas."},
                      "2": {"ori_img": "2.jpg", "gt_img": "", "ins_en": "Heat the ice cube.", "explain_en": ""}},
        "viewpoint_change": {"1": {"ori_img": "1.jpg", "gt_img": "1_gt.jpg", "ins_en": "Show it from above.",
                                   "explain_en": ""}},
        "color_change": {"1": {"ori_img": "1.jpg", "gt_img": "", "ins_en": "Make the box blue.", "explain_en": ""}},
    }
    for task, entries in tasks.items():
        (root / task).mkdir(parents=True)
        (root / task / "annotation.json").write_text(json.dumps(entries))
        for n, entry in enumerate(entries.values()):
            for k, name in enumerate((entry["ori_img"], entry["gt_img"])):
                if name:
                    Image.new("RGB", (40 + 8 * n, 32), ("green", "orange")[k]).save(root / task / name)
    return root


def write_gedit(path: Path) -> Path:
    """A parquet file with GEdit-Bench's columns."""
    import datasets

    rows = [{"key": f"k{i}", "task_type": task, "instruction": f"edit number {i}", "instruction_language": lang,
             "input_image": {"bytes": _png(color), "path": None}, "Intersection_exist": i % 2 == 0}
            for i, (task, lang, color) in enumerate([("color_alter", "en", "red"), ("color_alter", "cn", "blue"),
                                                     ("subject-add", "en", "gray"), ("style_change", "en", "white")])]
    datasets.Dataset.from_list(rows).cast_column("input_image", datasets.Image()).to_parquet(str(path))
    return path


def runs(out: Path) -> list[tuple[str, list[str]]]:
    """(name, arguments of run_benchmark.py) of every run, in order (later runs may read earlier ones' files)."""
    data = out / "data"
    out_of = lambda name: ["--output_dir", str(out / "runs" / name)]  # noqa: E731
    listed = [
        ("smoke", ["--limit", "4", *out_of("smoke")]),
        ("generate", ["--editor", "identity", "--judge_mode", "generate", "--judge_max_new_tokens", "12",
                      "--limit", "3", "--baselines", "blank", *out_of("generate")]),
        ("sweep", ["--sweep", str(data / "ckpts"), "--limit", "2", "--baselines", "identity", *out_of("sweep")]),
        ("precomputed", ["--editor", "precomputed", "--edits_dir", str(out / "runs" / "smoke" / "edits"),
                         "--limit", "4", "--baselines", "", *out_of("precomputed")]),
        ("re_edit", ["--config", "configs/re_edit.yaml", "--dataset", "data/demo/re_edit.json", "--editor",
                     "identity", *TINY_JUDGE, "--judge_mode", "logits", "--limit", "5", *out_of("re_edit")]),
        ("re_edit-generate", ["--config", "configs/re_edit.yaml", "--dataset", "data/demo/re_edit.json", "--editor",
                              "identity", *TINY_JUDGE, "--judge_mode", "generate", "--judge_max_new_tokens", "12",
                              "--limit", "2", "--baselines", "", *out_of("re_edit-generate")]),
        ("kris", ["--config", "configs/kris.yaml", "--dataset", str(data / "KRIS_Bench"), "--editor", "identity",
                  *TINY_JUDGE, "--judge_mode", "logits", "--baselines", "blank", *out_of("kris")]),
        ("gedit", ["--config", "configs/gedit.yaml", "--dataset", str(data / "gedit.parquet"), "--editor", "identity",
                   *TINY_JUDGE, "--judge_mode", "logits", "--baselines", "", *out_of("gedit")]),
    ]
    if RISEBENCH.is_dir():
        listed.append(("risebench", ["--config", "configs/risebench.yaml", "--dataset",
                                     str(RISEBENCH / "data_total.json"), "--editor", "identity", *TINY_JUDGE,
                                     "--judge_mode", "logits", "--limit", "12", "--baselines", "",
                                     *out_of("risebench")]))
    return listed


def run_all(checkout: Path, out: Path) -> None:
    """Every run with the harness in `checkout` (its own run_benchmark.py and scripts), outputs under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    data.mkdir(exist_ok=True)
    env = {**os.environ, "BENCH_TINY_CACHE": str(out / "tiny-cache"), "PYTHONPATH": str(checkout),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("ACCELERATE_USE_CPU", None)
    write_kris(data / "KRIS_Bench")
    write_gedit(data / "gedit.parquet")
    for step, seed in (("step-100", 1), ("step-200", 2)):
        subprocess.run([sys.executable, "scripts/make_tiny_lora.py", str(data / "ckpts" / step), "--seed", str(seed)],
                       cwd=checkout, env=env, check=True, stdout=subprocess.DEVNULL)
    for name, args in runs(out):
        print(f"[{checkout.name}] {name}", flush=True)
        done = subprocess.run([sys.executable, "run_benchmark.py", *args], cwd=checkout, env=env,
                              capture_output=True, text=True)
        (out / "runs").mkdir(exist_ok=True)
        (out / "runs" / f"{name}.log").write_text(done.stdout + done.stderr)
        (out / "runs" / f"{name}.exit").write_text(f"{done.returncode}\n")


# --- the comparison -------------------------------------------------------------------------------------


def _scrub(value, roots: list[tuple[str, str]]):
    if isinstance(value, dict):
        return {k: "datasets:<by path and time>" if k == "dataset_content" and str(v).startswith("datasets:")
                else _scrub(v, roots) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_scrub(v, roots) for v in value]
    if isinstance(value, str):
        return _paths(value, roots)
    return value


def _paths(text: str, roots: list[tuple[str, str]]) -> str:
    for path, placeholder in roots:
        text = text.replace(path, placeholder)
    return text


_TIMING_LINE = re.compile(r"(\d+(\.\d+)? ?s\b|s/image|s/sample|samples/s|\d{4}-\d\d-\d\dT|judgements\)|attempt \d)")
_TIMING_TABLE = re.compile(r"^\| (stage|rank|variant) \|.*(wall time|s/image|\(s\))")
_COMMIT = re.compile(r"harness commit `[0-9a-f]{40}`( \(uncommitted changes\))?")


def _text_lines(text: str, roots) -> list[str]:
    """Markdown and HTML without timing sections and tables, dates, the harness's commit and paths."""
    lines, skipping, in_table = [], False, False
    for line in _COMMIT.sub("harness commit <COMMIT>", _paths(text, roots)).splitlines():
        if line.startswith("#"):
            skipping = "timing" in line.lower()
        if _TIMING_TABLE.match(line):
            in_table = True
        elif in_table and not line.startswith("|"):
            in_table = False
        if skipping or in_table or _TIMING_LINE.search(line):
            continue
        lines.append(line)
    return lines


def compare_file(a: Path, b: Path, roots_a, roots_b) -> str | None:
    """None when the two files match, else what differs."""
    if a.suffix == ".png":  # the image, not its encoding (zlib level and version change the bytes, not the pixels)
        from PIL import Image

        with Image.open(a) as x, Image.open(b) as y:
            same = (x.mode, x.size, x.text) == (y.mode, y.size, y.text) and x.tobytes() == y.tobytes()
        return None if same else "pixels or text chunks differ"
    if a.suffix in (".jpg", ".safetensors", ".exit"):
        return None if a.read_bytes() == b.read_bytes() else "bytes differ"
    if a.suffix == ".log":
        return None
    text_a, text_b = a.read_text(errors="replace"), b.read_text(errors="replace")
    if a.suffix == ".json":
        x, y = _scrub(json.loads(text_a), roots_a), _scrub(json.loads(text_b), roots_b)
        return None if x == y else first_difference(x, y)
    if a.suffix == ".jsonl":
        x = [_scrub(json.loads(line), roots_a) for line in text_a.splitlines() if line.strip()]
        y = [_scrub(json.loads(line), roots_b) for line in text_b.splitlines() if line.strip()]
        if a.parent.name == "records":  # per-rank append logs: compare as sets of records
            x, y = sorted(x, key=json.dumps), sorted(y, key=json.dumps)
        return None if x == y else first_difference(x, y)
    x, y = _text_lines(text_a, roots_a), _text_lines(text_b, roots_b)
    if x == y:
        return None
    for i, (p, q) in enumerate(zip(x, y)):
        if p != q:
            return f"line {i + 1}: {p[:160]!r} != {q[:160]!r}"
    return f"{len(x)} lines != {len(y)} lines"


def first_difference(x, y, where: str = "") -> str:
    if type(x) is not type(y):
        return f"{where or '.'}: {str(x)[:120]} != {str(y)[:120]}"
    if isinstance(x, dict):
        for key in sorted(set(x) | set(y)):
            if key not in x or key not in y:
                return f"{where}.{key}: only in {'B' if key not in x else 'A'}"
            if x[key] != y[key]:
                return first_difference(x[key], y[key], f"{where}.{key}")
    if isinstance(x, list):
        if len(x) != len(y):
            return f"{where}: {len(x)} items != {len(y)} items"
        for i, (p, q) in enumerate(zip(x, y)):
            if p != q:
                return first_difference(p, q, f"{where}[{i}]")
    return f"{where or '.'}: {str(x)[:120]} != {str(y)[:120]}"


def diff(a: Path, b: Path, *, checkout_a: Path = ROOT, checkout_b: Path = ROOT) -> list[str]:
    roots_a = [(str(a.resolve()), "<OUT>"), (str(checkout_a.resolve()), "<ROOT>")]
    roots_b = [(str(b.resolve()), "<OUT>"), (str(checkout_b.resolve()), "<ROOT>")]
    problems = []
    files_a = {p.relative_to(a) for p in (a / "runs").rglob("*") if p.is_file() and "records" not in p.parts
               and not p.name.startswith(".")}
    files_b = {p.relative_to(b) for p in (b / "runs").rglob("*") if p.is_file() and "records" not in p.parts
               and not p.name.startswith(".")}
    for missing in sorted(files_a ^ files_b):
        problems.append(f"{missing}: only in {'A' if missing in files_a else 'B'}")
    for rel in sorted(files_a & files_b):
        if rel.name == "run.json":  # the fingerprint decides whether an old folder resumes: it must not move
            x, y = (json.loads((root / rel).read_text()).get("fingerprint") for root in (a, b))
            found = None if _scrub(x, roots_a) == _scrub(y, roots_b) else first_difference(x, y, "fingerprint")
        else:
            found = compare_file(a / rel, b / rel, roots_a, roots_b)
        if found:
            problems.append(f"{rel}: {found}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="this checkout's runs into OUT")
    p.add_argument("out", type=Path)
    p = sub.add_parser("diff", help="compare two folders written by `run`")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p = sub.add_parser("against", help="a git revision's runs vs this checkout's")
    p.add_argument("rev")
    p.add_argument("--keep", type=Path, help="keep both output folders here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.command == "run":
        run_all(ROOT, args.out)
        return 0
    if args.command == "diff":
        problems = diff(args.a, args.b)
    else:
        work = args.keep or Path(tempfile.mkdtemp(prefix="check-outputs-"))
        other = work / "checkout"
        if other.exists():
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=ROOT, check=False)
        subprocess.run(["git", "worktree", "add", "--detach", str(other), args.rev], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        try:
            if RISEBENCH.is_dir() and not (other.parent / "shared").exists():
                (other.parent / "shared").symlink_to(RISEBENCH.parent.parent)
            run_all(other, work / "A")
            run_all(ROOT, work / "B")
            problems = diff(work / "A", work / "B", checkout_a=other, checkout_b=ROOT)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=ROOT, check=False)
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    for line in problems:
        print(line)
    print("outputs match" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
