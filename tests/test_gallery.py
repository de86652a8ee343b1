"""gallery.html, rendered for real in headless Chromium (Debian's `chromium`; `.ci/run` installs it)."""

import html
import json
import re
import shutil
import subprocess

import pytest
from PIL import Image

from bench_lib import config_from_dict
from bench_lib.gallery import render_gallery
from bench_lib.runner import run
from bench_lib.store import read_results

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None,
                                    reason="headless Chromium is not installed (apt install chromium)")


def _chromium(*args: str, profile: str) -> str:
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def cards(dom: str) -> list[tuple[str, str, str]]:
    """(category, status, id) of every rendered card, in page order."""
    found = re.findall(r'<div class="card" data-category="([^"]*)" data-status="([^"]*)" data-id="([^"]*)"', dom)
    return [tuple(html.unescape(v) for v in card) for card in found]


@pytest.fixture(scope="module")
def gallery_run(tmp_path_factory):
    """Four demo samples edited by the identity baseline, plus one with a missing image (invalid_input)."""
    folder = tmp_path_factory.mktemp("gallery")
    demo = [json.loads(line) for line in open("data/demo/manifest.jsonl")][:4]
    for row in demo:
        for key in ("source_image", "reference_image"):
            if row.get(key):
                (folder / row[key]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f"data/demo/{row[key]}", folder / row[key])
    demo.append({"id": "broken</script><b>x", "category": "physics", "instruction": "melt </script> it",
                 "source_image": "images/missing.png"})
    (folder / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in demo))
    out = folder / "out"
    run(config_from_dict({"dataset": str(folder / "m.jsonl"), "output_dir": str(out), "editor": "identity",
                          "judge_model": "tiny:qwen3-vl", "judge_dtype": "float32", "judge_min_digit_mass": 0.0}))
    return out


@needs_chromium
def test_gallery_renders_every_sample_and_filters_in_chromium(gallery_run, tmp_path):
    def chromium(*args):
        return _chromium(*args, profile=str(tmp_path / "profile"))

    rows = read_results(gallery_run / "results.jsonl")
    page = (gallery_run / "gallery.html").as_uri()
    everything = chromium("--dump-dom", page)
    assert sorted(c[2] for c in cards(everything)) == sorted(r["id"] for r in rows)  # every row, one card
    assert re.search(r'<span id="shown">5</span>', everything)
    assert "<b>x" not in everything  # the id's markup stayed text
    ok = cards(chromium("--dump-dom", page + "#status=ok"))
    assert {c[1] for c in ok} == {"ok"} and len(ok) == sum(r["status"] == "ok" for r in rows) == 4
    invalid = cards(chromium("--dump-dom", page + "#status=invalid_input"))
    assert [c[2] for c in invalid] == ["broken</script><b>x"]  # rendered as text (no <b> element appeared)
    physics = cards(chromium("--dump-dom", page + "#category=physics&sort=score-desc"))
    expected = sorted((r for r in rows if r["category"] == "physics"),
                      key=lambda r: (r["score"] is None, -(r["score"] or 0.0)))  # unscored last
    assert [c[2] for c in physics] == [r["id"] for r in expected]
    shot = gallery_run / "gallery.png"
    chromium(f"--screenshot={shot}", "--window-size=1100,900", page)
    with Image.open(shot) as image:
        assert image.size == (1100, 900) and len(image.convert("RGB").getcolors(1 << 20) or []) > 50


def test_gallery_is_self_contained_and_escapes_its_data(gallery_run):
    text = (gallery_run / "gallery.html").read_text(encoding="utf-8")
    assert text.count("<script") == 2 and "</script><b>" not in text  # the id's markup can't end the data block
    assert not re.search(r'(src|href)="(https?:)?//', text)  # no network: no CDN, no remote image
    assert text.count("data:image/jpeg;base64,") >= 4 + 4 + 1  # sources, edits, the one reference image
    report = json.loads((gallery_run / "report.json").read_text())
    assert "melt \\u003c/script> it" in render_gallery([{"instruction": "melt </script> it"}], report)
    report["meta"]["dataset"] = "weird {{data}} name"  # a placeholder in a value is not substituted again
    page = render_gallery([{"instruction": "x"}], report)
    assert "weird {{data}} name" in page and page.count('"instruction": "x"') == 1
