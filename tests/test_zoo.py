"""The editor zoo on tiny real-class models: FLUX.1 Kontext, FLUX.2, LoRA adapters, scheduler overrides,
diffusers' speed options, and edits made elsewhere (precomputed)."""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from launch import accelerate_launch
from PIL import Image
from test_backends import fingerprint_of
from test_multiprocess import make_manifest

import bench_lib.runner as runner
import run_benchmark
from bench_lib import config_from_dict, parse_config
from bench_lib.config import ConfigError
from bench_lib.demo.tiny import build_lora
from bench_lib.editors.diffusers_pipeline import DiffusersConfig, DiffusersEditor
from bench_lib.store import read_results, read_run, safe_stem

JUDGE = {"judge_model": "tiny:qwen3-vl", "judge_dtype": "float32", "judge_min_digit_mass": 0.0}
QWEN = {"num_inference_steps": 2, "height": 32, "width": 32, "true_cfg_scale": 1.0}
KONTEXT = {"num_inference_steps": 2, "height": 64, "width": 64, "max_area": 4096, "_auto_resize": False,
           "guidance_scale": 2.5}
FLUX2 = {"num_inference_steps": 2, "height": 64, "width": 64, "max_sequence_length": 48,
         "text_encoder_out_layers": [1, 2, 3], "guidance_scale": 4.0}


def sample(text="make it red", id="s"):
    return SimpleNamespace(id=id, instruction=text)


def pixels(image):
    return np.asarray(image, dtype=np.float64)


def edit(cfg, source, *, seed=0, text="make it red"):
    editor = DiffusersEditor(cfg, device=torch.device("cpu"))
    try:
        return editor.edit(sample(text), source, seed=seed).image
    finally:
        editor.close()


@pytest.mark.parametrize("model, kwargs, pipeline", [("tiny:flux-kontext", KONTEXT, "FluxKontextPipeline"),
                                                     ("tiny:flux2", FLUX2, "Flux2Pipeline")])
def test_flux_pipelines_edit_reproducibly(model, kwargs, pipeline):
    cfg = DiffusersConfig(editor_model=model, editor_dtype="float32", editor_kwargs=kwargs)
    DiffusersEditor.check(cfg, None)
    source = Image.new("RGB", (96, 128), (20, 120, 200))
    editor = DiffusersEditor(cfg, device=torch.device("cpu"))
    assert type(editor.pipe).__name__ == pipeline
    first = editor.edit(sample(), source, seed=3).image
    again = editor.edit(sample(), source, seed=3).image
    other = editor.edit(sample(), source, seed=4).image
    editor.close()
    assert first.size == (64, 64) and first.tobytes() == again.tobytes() and first.tobytes() != other.tobytes()


def test_match_source_size_keeps_the_source_aspect_ratio():
    cfg = DiffusersConfig(editor_model="tiny:flux-kontext", editor_dtype="float32", match_source_size=True,
                          editor_kwargs={k: v for k, v in KONTEXT.items() if k not in ("height", "width")})
    # the pipeline's own arithmetic: w = round(sqrt(4096 * 2)) = 91, h = round(sqrt(4096 / 2)) = 45, each floored
    # to a multiple of 16: 80 x 32, a 2.5:1 wide image rather than a square
    assert edit(cfg, Image.new("RGB", (128, 64), "white")).size == (80, 32)
    without = DiffusersConfig(editor_model="tiny:flux-kontext", editor_dtype="float32",
                              editor_kwargs={k: v for k, v in KONTEXT.items() if k not in ("height", "width")})
    assert edit(without, Image.new("RGB", (128, 64), "white")).size == (64, 64)  # the pipeline's square default
    with pytest.raises(ConfigError, match="match_source_size"):
        DiffusersConfig(editor_model="tiny:flux-kontext", match_source_size=True, editor_kwargs=KONTEXT)


# --- LoRA ---------------------------------------------------------------------------------------------


def test_a_lora_changes_the_edit_and_its_hash_the_fingerprint(tmp_path):
    build_lora(tmp_path / "adapter", seed=1)
    source = Image.new("RGB", (48, 40), (200, 40, 40))
    base = DiffusersConfig(editor_model="tiny:qwen-image-edit", editor_dtype="float32", editor_kwargs=QWEN)
    with_lora = DiffusersConfig(**{**base.__dict__, "lora": str(tmp_path / "adapter")})
    DiffusersEditor.check(with_lora, None)
    plain, adapted = edit(base, source), edit(with_lora, source)
    assert plain.tobytes() != adapted.tobytes()
    assert edit(DiffusersConfig(**{**with_lora.__dict__, "lora_scale": 0.0}), source).tobytes() == plain.tobytes()

    cfg = config_from_dict({"dataset": "data/demo/manifest.jsonl", **JUDGE, "editor_model": "tiny:qwen-image-edit",
                            "lora": str(tmp_path / "adapter")})
    before = fingerprint_of(cfg, "x")
    build_lora(tmp_path / "adapter", seed=2)  # retrained, saved in the same place
    after = fingerprint_of(cfg, "x")
    assert before["editor"]["diffusers"]["lora_sha256"] != after["editor"]["diffusers"]["lora_sha256"]
    assert "lora" not in after["editor"]["diffusers"]  # by content, not by where it lies
    provenance = DiffusersEditor.provenance(cfg.editor_backend)["lora"]
    assert provenance["sha256"] == after["editor"]["diffusers"]["lora_sha256"] and provenance["scale"] == 1.0


def test_a_missing_or_incompatible_adapter_is_exit_2_before_the_edit_stage(tmp_path, capsys):
    build_lora(tmp_path / "kontext-adapter", seed=1, base="flux-kontext")
    (tmp_path / "not-a-lora").mkdir()
    torch.manual_seed(0)
    from safetensors.torch import save_file

    save_file({"transformer.proj_out.weight": torch.zeros(2, 2)}, tmp_path / "not-a-lora" / "w.safetensors")
    for lora, message in [(tmp_path / "nothing-here", "no such file or folder"),
                          (tmp_path / "kontext-adapter", "does not fit"),
                          (tmp_path / "not-a-lora", "not a LoRA adapter")]:
        out = tmp_path / "out"
        assert run_benchmark.main(["--lora", str(lora), "--output_dir", str(out), "--limit", "1"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not list(out.glob("edits/*"))


# --- scheduler overrides and speed options ------------------------------------------------------------


def test_scheduler_overrides_are_applied_and_checked():
    cfg = DiffusersConfig(editor_model="tiny:qwen-image-edit", editor_dtype="float32", editor_kwargs=QWEN,
                          editor_scheduler={"shift": 3.0, "use_dynamic_shifting": False})
    DiffusersEditor.check(cfg, None)
    editor = DiffusersEditor(cfg, device=torch.device("cpu"))
    assert editor.pipe.scheduler.config.shift == 3.0 and editor.pipe.scheduler.config.use_dynamic_shifting is False
    editor.close()
    with pytest.raises(ConfigError, match="not settings of FlowMatchEulerDiscreteScheduler"):
        DiffusersEditor.check(DiffusersConfig(editor_model="tiny:qwen-image-edit", editor_scheduler={"shfit": 3.0}),
                              None)


def test_speed_options_are_applied_recorded_and_leave_results_independent_of_order():
    source_a, source_b = Image.new("RGB", (40, 40), "white"), Image.new("RGB", (48, 40), "blue")
    options = {"attention_backend": "native", "cache": {"type": "FirstBlockCache", "threshold": 0.2},
               "compile": "regional"}
    cfg = DiffusersConfig(editor_model="tiny:qwen-image-edit", editor_dtype="float32",
                          editor_kwargs={**QWEN, "num_inference_steps": 4}, **options)
    DiffusersEditor.check(cfg, None)
    editor = DiffusersEditor(cfg, device=torch.device("cpu"))
    transformer = editor.pipe.transformer
    assert transformer.is_cache_enabled and type(transformer._cache_config).__name__ == "FirstBlockCacheConfig"
    backends = {getattr(m.processor, "_attention_backend", None) for m in transformer.modules()
                if hasattr(m, "processor")}
    assert {getattr(b, "value", b) for b in backends} == {"native"}
    blocks = [m for m in transformer.modules() if type(m).__name__ == "QwenImageTransformerBlock"]
    assert blocks and all(m._compiled_call_impl is not None for m in blocks)  # compiled on first call
    editor.close()
    # Cached steps must not leak from one sample into the next (results would depend on sharding and order).
    cfg = DiffusersConfig(**{**cfg.__dict__, "compile": "none"})
    editor = DiffusersEditor(cfg, device=torch.device("cpu"))
    editor.edit(sample("add a cat"), source_a, seed=1)
    after = editor.edit(sample("make it snow"), source_b, seed=2).image
    editor.close()
    assert edit(cfg, source_b, seed=2, text="make it snow").tobytes() == after.tobytes()
    # recorded: in the fingerprint and in provenance
    prov = DiffusersEditor.provenance(cfg)["speed_options"]
    assert prov == {"attention_backend": "native", "compile": "none", "cache": options["cache"]}
    fingerprint = DiffusersEditor.fingerprint(cfg, None)
    assert fingerprint["cache"] == options["cache"] and fingerprint["attention_backend"] == "native"
    for bad, message in [({"attention_backend": "warp"}, "not a diffusers attention backend"),
                         ({"cache": {"type": "FirstBlockCache", "treshold": 1}}, "not parameters of FirstBlockCache"),
                         ({"cache": {"type": "NoCache"}}, "type")]:
        with pytest.raises(ConfigError, match=message):
            DiffusersEditor.check(DiffusersConfig(editor_model="tiny:qwen-image-edit", **bad), None)


def test_speed_options_on_the_command_line():
    cfg = parse_config(["--attention_backend", "native", "--compile", "regional",
                        "--cache", '{"type": "TaylorSeerCache", "cache_interval": 2}', "--lora_scale", "0.5"])
    assert cfg.editor_backend.attention_backend == "native" and cfg.editor_backend.compile == "regional"
    assert cfg.editor_backend.cache == {"type": "TaylorSeerCache", "cache_interval": 2}
    assert cfg.editor_backend.lora_scale == 0.5
    with pytest.raises(ConfigError, match="compile.*'none', 'regional', 'full'"):
        parse_config(["--compile", "fast"])


# --- edits made elsewhere -----------------------------------------------------------------------------


def source_copies(tmp_path, manifest, *, skip=()):
    """A folder holding each sample's source image under the sample's own name: the edits of an editor that
    changes nothing."""
    folder = tmp_path / "edits-elsewhere"
    folder.mkdir()
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        if row["id"] not in skip:
            suffix = row["source_image"].rsplit(".", 1)[1]
            shutil.copy(manifest.parent / row["source_image"], folder / f"{safe_stem(row['id'])}.{suffix}")
    return folder


def test_precomputed_edits_of_the_sources_score_exactly_as_the_identity_baseline(tmp_path):
    manifest = make_manifest(tmp_path, 5)
    ids = [json.loads(line)["id"] for line in manifest.read_text().splitlines()]
    edits = source_copies(tmp_path, manifest, skip={ids[1]})
    out = tmp_path / "pre"
    runner.run(config_from_dict({"dataset": str(manifest), **JUDGE, "editor": "precomputed", "edits_dir": str(edits),
                                 "baselines": "identity", "output_dir": str(out), "judge_batch_size": 1}))
    run = read_run(out)
    rows, identity = run["rows"], run["baselines"]["identity"]
    assert [r["status"] for r in rows] == ["ok", "edit_failed", "ok", "ok", "ok"]
    assert str(edits / ids[1]) in rows[1]["error"] and rows[1]["edited_image"] is None
    for row, base in zip(rows, identity):
        if row["status"] == "ok":
            assert row["score"] == base["score"] and row["subscores"] == base["subscores"]
    edits_used = run["report"]["provenance"]["edits"]
    assert edits_used["count"] == 4 and len(edits_used["sha256"]) == 64
    # from a dataset column instead of a folder: the same edits, the same scores
    files = {p.stem: p.name for p in edits.iterdir()}
    rows_with_column = [dict(row, edit=f"{edits.name}/{files[safe_stem(row['id'])]}" if row["id"] != ids[1] else None)
                        for row in map(json.loads, manifest.read_text().splitlines())]
    (tmp_path / "with_edits.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows_with_column))
    out2 = tmp_path / "pre-column"
    runner.run(config_from_dict({"dataset": str(tmp_path / "with_edits.jsonl"), **JUDGE, "editor": "precomputed",
                                 "columns": {"edited_image": "edit"}, "output_dir": str(out2),
                                 "judge_batch_size": 1}))
    column_rows = read_run(out2)["rows"]
    assert [r["status"] for r in column_rows] == [r["status"] for r in rows]
    assert [r["score"] for r in column_rows] == [r["score"] for r in rows]
    with pytest.raises(ConfigError, match="--edits_dir DIR"):
        runner.check_models(config_from_dict({"dataset": str(manifest), **JUDGE, "editor": "precomputed"}))


def test_precomputed_on_two_processes(tmp_path):
    manifest = make_manifest(tmp_path, 4)
    edits = source_copies(tmp_path, manifest)
    (edits / f"{json.loads(manifest.read_text().splitlines()[0])['id']}.jpg").write_bytes(b"a second edit")
    out = tmp_path / "pre2"
    accelerate_launch(2, ["--dataset", str(manifest), "--editor", "precomputed", "--edits_dir", str(edits),
                          "--output_dir", str(out)], timeout=300)
    rows = read_results(out / "results.jsonl")
    assert [r["status"] for r in rows] == ["edit_failed", "ok", "ok", "ok"]  # two edits for one sample: ambiguous
    assert "several edits" in rows[0]["error"]
    assert sorted(json.loads(p.read_text())["rank"] for p in out.glob("worker-*.json")) == [0, 1]
