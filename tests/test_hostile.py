"""Hostile input: every case is recorded per sample (or refused for the whole dataset), nothing crashes."""

import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import bench_lib.runner as runner
from bench_lib import config_from_dict
from bench_lib.config import ConfigError, DataConfig
from bench_lib.data import ImageRef, load_samples
from bench_lib.store import read_results

WHITE = (255, 255, 255)


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (PIL refuses to write a 0x0 image itself)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def write_images(folder):
    """name -> (file name, expected top-left RGB pixel after loading, or None if the image must be refused)."""
    folder.mkdir(exist_ok=True)
    cases = {}

    def save(name, image, expected, fmt="PNG", suffix="png", **kwargs):
        image.save(folder / f"{name}.{suffix}", format=fmt, **kwargs)
        cases[name] = (f"{name}.{suffix}", expected)

    save("rgba", Image.new("RGBA", (32, 24), (255, 0, 0, 0)), WHITE)
    save("la", Image.new("LA", (32, 24), (0, 0)), WHITE)
    palette = Image.new("P", (32, 24), 3)
    palette.putpalette([10, 20, 30] * 256)
    save("p_transparent", palette, WHITE, transparency=3)
    save("cmyk", Image.new("CMYK", (32, 24), (0, 255, 255, 0)), (255, 0, 0), fmt="JPEG", suffix="jpg")
    grey16 = np.full((24, 32), 65535, dtype=np.uint16)
    save("grey16", Image.fromarray(grey16), WHITE)
    save("grey", Image.new("L", (32, 24), 128), (128, 128, 128))
    save("tiny_1x1", Image.new("RGB", (1, 1), "red"), None)
    save("bomb", Image.new("L", (400, 300), 0), None)  # over the test's max_image_pixels of 100_000
    (folder / "zero.png").write_bytes(png_with_size(0, 0))
    cases["zero"] = ("zero.png", None)
    good = io.BytesIO()
    Image.new("RGB", (64, 64), "blue").save(good, format="PNG")
    (folder / "truncated.png").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    cases["truncated"] = ("truncated.png", None)
    (folder / "garbage.png").write_bytes(b"this is not an image" * 10)
    cases["garbage"] = ("garbage.png", None)
    return cases


def test_image_decoding_matrix(tmp_path):
    cases = write_images(tmp_path / "img")
    rows = [{"id": name, "category": "physics", "instruction": "x", "source_image": f"img/{file}"}
            for name, (file, _) in cases.items()]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = {s.id: s for s in load_samples(DataConfig(dataset=str(tmp_path / "m.jsonl"), max_image_pixels=100_000))}
    for name, (_, expected) in cases.items():
        if expected is None:
            with pytest.raises((ValueError, OSError, SyntaxError)):
                samples[name].source_image.load()
        else:
            image = samples[name].source_image.load()
            assert image.mode == "RGB" and image.getpixel((0, 0)) == expected, name


def test_bomb_is_never_decoded(tmp_path, monkeypatch):
    Image.new("L", (400, 300)).save(tmp_path / "bomb.png")
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self) or None)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", lambda self: decoded.append(self) or None)
    with pytest.raises(ValueError, match="over max_image_pixels"):
        ImageRef(path=tmp_path / "bomb.png", max_pixels=100_000).load()
    assert decoded == []


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "img/../../secret.png", "a\x00b.png"])
def test_manifest_paths_that_escape_are_refused_unopened(tmp_path, path, monkeypatch):
    opened = []
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a))
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "category": "c", "instruction": "x",
                                                  "source_image": path}) + "\n" +
                                      json.dumps({"id": "b", "category": "c", "instruction": "x",
                                                  "source_image": "ok.png"}) + "\n")
    (tmp_path / "ok.png").write_bytes(b"")  # exists; Image.open is patched out anyway
    samples = load_samples(DataConfig(dataset=str(tmp_path / "m.jsonl")))
    assert samples[0].source_image.path is None
    assert "absolute or leaves the dataset's folder" in samples[0].problem
    assert opened == []


def test_duplicate_ids_are_listed(tmp_path):
    rows = [{"id": i, "category": "c", "instruction": "x", "source_image": "a.png"} for i in ("x", "y", "x", "y", "z")]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ConfigError, match="2 duplicate id.*'x', 'y'"):
        load_samples(DataConfig(dataset=str(tmp_path / "m.jsonl")))


HOSTILE_IDS = ["../../escape", "a/b", "a_b", "back\\slash", "nul\x00byte", "x" * 300,
               "猫が溶ける", "🧊🔥", "Cup", "cup"]


def test_hostile_ids_and_fields_end_to_end(tmp_path):
    cases = write_images(tmp_path / "img")
    rows = [{"id": name, "category": "physics", "instruction": "melt it", "source_image": f"img/{file}"}
            for name, (file, _) in cases.items()]
    rows += [{"id": i, "category": "causal", "instruction": "melt it", "source_image": "img/grey.png"}
             for i in HOSTILE_IDS]
    rows += [{"id": "no_instruction", "category": "physics", "source_image": "img/grey.png"},
             {"id": "number_instruction", "category": "physics", "instruction": 7, "source_image": "img/grey.png"},
             {"id": "escape_path", "category": "physics", "instruction": "x", "source_image": "../../etc/passwd"},
             {"id": "new_category", "category": "astronomy", "instruction": "melt it", "source_image": "img/grey.png"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    runner.run(config_from_dict({
        "dataset": str(tmp_path / "m.jsonl"), "output_dir": str(out), "max_image_pixels": 100_000,
        "editor": "identity", "judge_model": "tiny:qwen3-vl", "judge_dtype": "float32", "judge_min_digit_mass": 0.0}))

    results = {r["id"]: r for r in read_results(out / "results.jsonl")}
    assert list(results) == [r["id"] for r in rows]  # every sample once, in dataset order
    for name, (_, expected) in cases.items():
        assert results[name]["status"] == ("invalid_input" if expected is None else "ok"), results[name]
    for i in HOSTILE_IDS + ["new_category"]:
        assert results[i]["status"] == "ok", results[i]
    assert results["new_category"]["rubric"] == "default"
    for i in ("no_instruction", "number_instruction", "escape_path"):
        assert results[i]["status"] == "invalid_input" and results[i]["error"]
    edits = [results[i]["edited_image"] for i in results if results[i]["edited_image"]]
    assert len({e.casefold() for e in edits}) == len(edits)  # unique file names, even case-insensitively
    for edit in edits:
        path = (out / edit).resolve()
        assert path.parent == (out / "edits").resolve() and path.is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["overall"]["failed_by_status"] == {"invalid_input": 8}


def test_an_id_shaped_like_a_hashed_name_gets_its_own_hash():
    from bench_lib.store import safe_stem

    hashed = safe_stem("Cup")
    assert safe_stem(hashed) != hashed  # so the literal id can't take the file of "Cup"


def test_lone_surrogates(tmp_path):
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    (tmp_path / "m.json").write_text('[{"id": "ok", "category": "c", "instruction": "x", "source_image": "a.png"},'
                                     ' {"id": "bad_text", "category": "c", "instruction": "\\ud800", '
                                     '"source_image": "a.png"}]')
    samples = load_samples(DataConfig(dataset=str(tmp_path / "m.json")))
    assert samples[0].problem is None and "not valid Unicode" in samples[1].problem
    (tmp_path / "m2.json").write_text('[{"id": "\\ud800", "category": "c", "instruction": "x", '
                                      '"source_image": "a.png"}]')
    with pytest.raises(ConfigError, match="no usable id"):
        load_samples(DataConfig(dataset=str(tmp_path / "m2.json")))


def test_a_symlink_out_of_the_dataset_folder_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (16, 16)).save(outside / "secret.png")
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (16, 16)).save(data / "ok.png")
    (data / "link").symlink_to(outside)
    rows = [{"id": "a", "category": "c", "instruction": "x", "source_image": "link/secret.png"},
            {"id": "b", "category": "c", "instruction": "x", "source_image": "ok.png"}]
    (data / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = load_samples(DataConfig(dataset=str(data / "m.jsonl")))
    assert "leaves the dataset's folder" in samples[0].problem and samples[0].source_image.path is None
    assert samples[1].problem is None
