import io
import json
import shutil
import struct
import zlib

import numpy as np
import pytest
from conftest import HEAVY, RISEBENCH, assert_one_line, copy_demo, probe
from PIL import Image

from bench_lib.config import ConfigError, DataConfig
from bench_lib.data import ImageRef, load_samples, to_rgb


def make_rows(tmp_path, n=3):
    (tmp_path / "img").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        Image.new("RGB", (20 + i, 10), (i * 40, 0, 0)).save(tmp_path / "img" / f"{i}.png")
        rows.append({"uid": f"s{i}", "category": "physics", "instruction": f"melt {i}",
                     "image": f"img/{i}.png", "reference": f"puddle {i}" if i else None})
    return rows


def check(samples, n=3):
    assert [s.id for s in samples] == [f"s{i}" for i in range(n)]
    assert [s.index for s in samples] == list(range(n))
    assert samples[1].reference_text == "puddle 1" and samples[0].reference_text is None
    assert all(isinstance(s.source_image, ImageRef) for s in samples)  # nothing decoded yet
    image = samples[2].source_image.load()
    assert image.mode == "RGB" and image.size == (22, 10) and image.getpixel((0, 0)) == (80, 0, 0)


COLUMNS = {"id": "uid", "source_image": "image", "reference_text": "reference"}


def test_jsonl_and_json_manifests_resolve_paths_relative_to_the_manifest(tmp_path, monkeypatch):
    rows = make_rows(tmp_path)
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "m.json").write_text(json.dumps(rows))
    monkeypatch.chdir("/")
    for name in ("m.jsonl", "m.json"):
        check(load_samples(DataConfig(dataset=str(tmp_path / name), columns=COLUMNS)))


def test_save_to_disk_folder(tmp_path):
    import datasets

    rows = make_rows(tmp_path)
    for r in rows:
        r["image"] = str(tmp_path / r["image"])
    ds = datasets.Dataset.from_list(rows).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "saved"))
    check(load_samples(DataConfig(dataset=str(tmp_path / "saved"), columns=COLUMNS)))
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "saved_dict"))
    check(load_samples(DataConfig(dataset=str(tmp_path / "saved_dict"), dataset_split="test", columns=COLUMNS)))
    with pytest.raises(ConfigError, match="split 'train'"):
        load_samples(DataConfig(dataset=str(tmp_path / "saved_dict"), columns=COLUMNS))


def test_imagefolder_with_metadata(tmp_path):
    rows = make_rows(tmp_path)
    folder = tmp_path / "img"
    with open(folder / "metadata.jsonl", "w") as f:
        for r in rows:
            file_name = r.pop("image").split("/")[1]
            f.write(json.dumps({**r, "file_name": file_name}) + "\n")
    cfg = DataConfig(dataset=str(folder), columns={**COLUMNS, "source_image": "image"})
    check(load_samples(cfg))


def test_parquet_folder(tmp_path):
    import datasets

    rows = make_rows(tmp_path)
    for r in rows:  # as on the hub: image bytes embedded in the parquet file
        r["image"] = {"bytes": (tmp_path / r["image"]).read_bytes(), "path": None}
    ds = datasets.Dataset.from_list(rows).cast_column("image", datasets.Image())
    (tmp_path / "pq").mkdir()
    ds.to_parquet(str(tmp_path / "pq" / "train-00000.parquet"))
    check(load_samples(DataConfig(dataset=str(tmp_path / "pq"), columns=COLUMNS)))


def test_dataset_image_paths_outside_the_dataset_are_not_opened(tmp_path):
    import datasets

    rows = make_rows(tmp_path)
    for r in rows:  # path-only image values pointing outside the dataset's folder
        r["image"] = {"bytes": None, "path": str(tmp_path / r["image"])}
    ds = datasets.Dataset.from_list(rows).cast_column("image", datasets.Image())
    (tmp_path / "pq").mkdir()
    ds.to_parquet(str(tmp_path / "pq" / "train-00000.parquet"))
    # Found when the dataset is read, before any model: every sample is unusable, so the run stops (exit 2).
    with pytest.raises(ConfigError, match="none of the .* samples is usable.*outside the dataset's folder"):
        load_samples(DataConfig(dataset=str(tmp_path / "pq"), columns=COLUMNS))


@pytest.mark.skipif(not RISEBENCH.is_dir(), reason="../shared/data/risebench is not present in this clone")
def test_risebench_loads_with_only_a_column_mapping():
    cfg = DataConfig(dataset=str(RISEBENCH / "data_total.json"), columns={
        "id": "index", "source_image": "image", "reference_text": "reference|reference_txt",
        "reference_image": "reference_img"})
    samples = load_samples(cfg)
    assert len(samples) == 32 and len({s.id for s in samples}) == 32
    assert samples[0].id == "temporal_reasoning_1"
    by_id = {s.id: s for s in samples}
    assert by_id["logical_reasoning_7"].reference_text.startswith("The first question mark")  # reference_txt
    assert (by_id["logical_reasoning_6"].reference_image is not None
            and by_id["logical_reasoning_6"].reference_text is None)
    assert all(s.problem is None for s in samples)
    for s in samples:
        assert s.source_image.load().mode == "RGB"


def test_rgba_composited_on_white_not_black():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    out = to_rgb(rgba)
    assert out.mode == "RGB" and out.getpixel((1, 1)) == (255, 255, 255) and out.getpixel((0, 0)) == (255, 0, 0)
    la = Image.new("LA", (2, 2), (0, 0))
    assert to_rgb(la).getpixel((0, 0)) == (255, 255, 255)
    p = Image.new("P", (2, 2), 0)
    p.putpalette([0, 0, 0] * 256)
    p.info["transparency"] = 0
    assert to_rgb(p).getpixel((0, 0)) == (255, 255, 255)


def manifest(tmp_path, rows):
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_dataset_level_errors(tmp_path):
    rows = make_rows(tmp_path)
    with pytest.raises(ConfigError, match="id"):  # uid is not mapped
        load_samples(DataConfig(dataset=manifest(tmp_path, rows), columns={"source_image": "image"}))
    with pytest.raises(ConfigError, match="reference_text -> nope"):
        load_samples(DataConfig(dataset=manifest(tmp_path, rows), columns={**COLUMNS, "reference_text": "nope"}))
    with pytest.raises(ConfigError, match="duplicate id.*'s1'"):
        load_samples(DataConfig(dataset=manifest(tmp_path, rows + [rows[1]]), columns=COLUMNS))
    with pytest.raises(ConfigError, match="no samples"):
        load_samples(DataConfig(dataset=manifest(tmp_path, []), columns=COLUMNS))
    with pytest.raises(ConfigError, match="no such file or folder"):
        load_samples(DataConfig(dataset=str(tmp_path / "missing.jsonl")))


def test_row_level_problems_become_invalid_input_not_errors(tmp_path):
    rows = make_rows(tmp_path)
    rows[0]["instruction"] = "  "
    rows[1]["category"] = 5
    samples = load_samples(DataConfig(dataset=manifest(tmp_path, rows), columns=COLUMNS))
    assert len(samples) == 3
    assert samples[0].problem == "instruction is empty"
    assert "category is not text" in samples[1].problem
    assert samples[2].problem is None
    assert len(load_samples(DataConfig(dataset=manifest(tmp_path, rows), columns=COLUMNS, limit=3))) == 3


def test_missing_image_files_and_bad_values_are_row_problems(tmp_path):
    rows = make_rows(tmp_path)
    rows[0]["image"] = "img/nope.png"
    rows[1]["image"] = 5
    samples = load_samples(DataConfig(dataset=manifest(tmp_path, rows), columns=COLUMNS))
    assert "source_image file not found" in samples[0].problem
    assert "not a path" in samples[1].problem
    assert samples[2].problem is None


def test_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": 1}\n\n{"id": 2\n')
    with pytest.raises(ConfigError, match="line 3"):
        load_samples(DataConfig(dataset=str(path)))


def test_class_label_categories_become_names(tmp_path):
    import datasets

    rows = make_rows(tmp_path)
    for r in rows:
        r["image"] = str(tmp_path / r["image"])
    ds = datasets.Dataset.from_list(rows).cast_column("image", datasets.Image())
    ds = ds.cast_column("category", datasets.ClassLabel(names=["causal", "physics"]))
    ds.save_to_disk(str(tmp_path / "saved"))
    samples = load_samples(DataConfig(dataset=str(tmp_path / "saved"), columns=COLUMNS))
    assert [s.category for s in samples] == ["physics"] * 3 and all(s.problem is None for s in samples)


def test_human_scores_are_numbers_or_empty(tmp_path):
    rows = make_rows(tmp_path, n=4)
    rows += make_rows(tmp_path, n=5)[4:]
    rows[4]["uid"] = "s4"
    for row, rating in zip(rows, [4, "3.5", None, "", float("nan")]):
        row["rating"] = rating
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = load_samples(DataConfig(dataset=str(tmp_path / "m.jsonl"), columns={**COLUMNS, "human_score": "rating"}))
    assert [s.human_score for s in samples] == [4.0, 3.5, None, None, None]  # NaN: pandas' "missing"
    assert load_samples(DataConfig(dataset=str(tmp_path / "m.jsonl"), columns=COLUMNS))[0].human_score is None
    for bad in ("good", True, float("inf"), "nan", {"a": 1}):
        rows[1]["rating"] = bad
        (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        with pytest.raises(ConfigError, match="row 1: human_score"):
            load_samples(DataConfig(dataset=str(tmp_path / "m.jsonl"), columns={**COLUMNS, "human_score": "rating"}))


def test_image_size_is_read_from_the_header(tmp_path):
    Image.new("RGB", (30, 12)).save(tmp_path / "a.png")
    assert ImageRef(path=tmp_path / "a.png").size() == (30, 12)
    assert ImageRef(data=(tmp_path / "a.png").read_bytes()).size() == (30, 12)


# --- files that are not files: a FIFO waits forever for a writer, a device never ends ----------------


def finishes(call, *, unblock=(), timeout=30.0):
    """Run `call` in a thread; fail (never hang) when it is still running after `timeout` s. A FIFO in `unblock`
    is then opened for writing and closed, so a reader stuck on it gets EOF and the thread ends."""
    import os
    import threading

    outcome = {}

    def target():
        try:
            outcome["value"] = call()
        except BaseException as err:  # handed to the test, which asserts on it
            outcome["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    hung = thread.is_alive()
    for fifo in unblock if hung else ():
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass  # no reader waits on this one
    thread.join(5)
    assert not hung, f"{call} blocked on a file that is not a regular file"
    return outcome


def test_a_fifo_a_device_or_a_socket_is_refused_at_once_never_waited_on(tmp_path):
    import os
    import socket

    fifo = tmp_path / "a.png"
    os.mkfifo(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "b.png"))
    try:
        for path, kind in ((fifo, "FIFO"), (tmp_path / "b.png", "socket"), ("/dev/zero", "character device")):
            ref = ImageRef(path=path)
            for method in (ref.load, ref.size, ref.read_bytes):
                outcome = finishes(method, unblock=[fifo])
                assert isinstance(outcome.get("error"), ValueError) and kind in str(outcome["error"]), outcome
    finally:
        sock.close()


def test_a_fifo_as_a_source_or_reference_is_that_sample_invalid_input(tmp_path):
    import os

    rows = make_rows(tmp_path)
    os.mkfifo(tmp_path / "img" / "pipe.png")
    rows[0]["image"] = "img/pipe.png"
    rows[1]["reference_image"] = "img/pipe.png"
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    outcome = finishes(lambda: load_samples(DataConfig(dataset=str(tmp_path / "m.jsonl"), columns=COLUMNS)),
                       unblock=[tmp_path / "img" / "pipe.png"])
    samples = outcome["value"]
    assert samples[0].problem == f"source_image file {tmp_path / 'img' / 'pipe.png'} is a FIFO (named pipe), not an " \
                                 "image file"
    assert "reference_image file" in samples[1].problem and "FIFO" in samples[1].problem
    assert samples[2].problem is None
    for name in ("d.parquet", "d.jsonl"):  # the dataset itself
        os.mkfifo(tmp_path / name)
        outcome = finishes(lambda n=name: load_samples(DataConfig(dataset=str(tmp_path / n))),
                           unblock=[tmp_path / name])
        assert isinstance(outcome.get("error"), ConfigError), outcome
        assert "is a FIFO (named pipe), not a file or folder" in str(outcome["error"])


def test_float_images_are_read_by_their_range_or_refused(tmp_path):
    Image.fromarray(np.full((16, 16), 0.8, dtype=np.float32), mode="F").save(tmp_path / "f.tiff")
    Image.fromarray(np.full((16, 16), 200.0, dtype=np.float32), mode="F").save(tmp_path / "big.tiff")
    rows = [{"id": name, "category": "c", "instruction": "x", "source_image": f"{name}.tiff"} for name in ("f", "big")]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = load_samples(DataConfig(dataset=str(tmp_path / "m.jsonl")))
    assert samples[0].source_image.load().getpixel((0, 0)) == (204, 204, 204)  # 0.8 of white, not black
    with pytest.raises(ValueError, match="only 0..1 float images"):
        samples[1].source_image.load()


# --- hostile input: recorded per sample or refused for the whole dataset, never a crash -------------


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


def test_dataset_names_that_cannot_work_are_one_line_before_torch(tmp_path):
    # A missing local path is never sent to the hub, however it is written.
    for name in ("data/nope", str(tmp_path / "nope"), "./nope", "nope.parquet"):
        result, imported, errors = probe("--dataset", name, "--output_dir", str(tmp_path / "out"))
        assert_one_line(result, errors, repr(name), "no such file or folder")
        assert not set(imported) & set(HEAVY)
    # A hub id with offline mode on and nothing cached: which variable, which download.
    empty_home = str(tmp_path / "hf")
    result, imported, errors = probe("--dataset", "someorg/somebench", "--output_dir", str(tmp_path / "out"),
                                     HF_HUB_OFFLINE="1", HF_HOME=empty_home)
    assert_one_line(result, errors, "offline mode is on", "HF_HUB_OFFLINE",
                    "hf download --repo-type dataset someorg/somebench")
    assert not set(imported) & set(HEAVY)
    # An unreachable hub: one attempt (no retries), then the message.
    result, imported, errors = probe("--dataset", "someorg/somebench", "--output_dir", str(tmp_path / "out"),
                                     HF_HOME=empty_home, HF_ENDPOINT="http://127.0.0.1:9")
    assert_one_line(result, errors, "cannot be reached", "someorg/somebench")
    assert not set(imported) & set(HEAVY)


def test_all_invalid_samples_exit_2_before_any_model_loads(tmp_path, monkeypatch):
    import datasets

    folder = tmp_path / "bench"
    rows = copy_demo(folder, 3)
    rows[2]["source_image"] = "../outside.png"
    (tmp_path / "outside.png").write_bytes((folder / "images" / "physics_01.png").read_bytes())
    monkeypatch.chdir(folder)
    datasets.Dataset.from_list(rows).cast_column("source_image", datasets.Image()).to_parquet("images.parquet")
    shutil.rmtree(folder / "images")  # the parquet's image files are gone
    result, imported, errors = probe("--dataset", str(folder / "images.parquet"), "--output_dir",
                                     str(tmp_path / "out"), cwd=tmp_path)
    assert_one_line(result, errors, "none of the 3 samples is usable", "physics_01: source_image file not found",
                    "outside the dataset's folder")
    assert not set(imported) & set(HEAVY)  # found before torch, so before any model
