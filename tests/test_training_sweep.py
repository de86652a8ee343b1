"""`--sweep` over a training job's output folder: diffusers' LoRA checkpoints, PEFT adapters and full fine-tunes'
transformers are variants named after their folders, in step order; logs/ and runs/ are named once and skipped,
files beside the checkpoints ignored; --sweep_glob / --sweep_every / --sweep_last select; an error names the
variant; and PEFT adapters and transformer folders load as what they are."""

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from launch import TINY_ARGS

from bench_lib.config import ConfigError
from bench_lib.options import parse_config
from bench_lib.sweep import checkpoint_step, expand


def touch(path: Path, content: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def training_folder(root: Path) -> Path:
    """The shapes a training job leaves (expand reads no weights): diffusers' LoRA checkpoints beside the
    optimizer's state (one saved by accelerate with the model too), a PEFT one, a full fine-tune's, logs/ and runs/,
    and the final weights and a model card beside the checkpoints."""
    for step in (90, 500):
        touch(root / f"checkpoint-{step}" / "pytorch_lora_weights.safetensors")
        touch(root / f"checkpoint-{step}" / "optimizer.bin")
        touch(root / f"checkpoint-{step}" / "random_states_0.pkl")
    touch(root / "checkpoint-500" / "model.safetensors")  # two weight files: the LoRA one is named
    touch(root / "checkpoint-1000" / "adapter_model.safetensors")
    touch(root / "checkpoint-1000" / "adapter_config.json", b"{}")
    touch(root / "checkpoint-1500" / "transformer" / "config.json", b"{}")
    touch(root / "checkpoint-1500" / "transformer" / "diffusion_pytorch_model.safetensors")
    touch(root / "logs" / "my-lora" / "events.out.tfevents.1")
    (root / "runs").mkdir()
    touch(root / "pytorch_lora_weights.safetensors")
    touch(root / "README.md", b"a model card")
    return root


def sweep_config(folder: Path, tmp_path: Path, *extra: str):
    return parse_config(["--sweep", str(folder), "--output_dir", str(tmp_path / "out"), *extra])


def test_a_training_folder_gives_one_variant_per_checkpoint_in_step_order(tmp_path, caplog):
    root = training_folder(tmp_path / "train")
    caplog.set_level(logging.INFO, logger="bench_lib.sweep")
    variants = expand(sweep_config(root, tmp_path), announce=True)
    assert [v.name for v in variants] == ["base", "checkpoint-90", "checkpoint-500", "checkpoint-1000",
                                          "checkpoint-1500"]  # by step, not by text
    backend = {v.name: v.cfg.editor_backend for v in variants}
    assert (backend["checkpoint-90"].lora, backend["checkpoint-90"].lora_weight_name) == (
        str((root / "checkpoint-90").resolve()), None)
    assert (backend["checkpoint-500"].lora, backend["checkpoint-500"].lora_weight_name) == (
        str((root / "checkpoint-500").resolve()), "pytorch_lora_weights.safetensors")
    assert backend["checkpoint-1000"].lora == str((root / "checkpoint-1000").resolve())
    assert backend["checkpoint-1500"].lora is None
    assert backend["checkpoint-1500"].editor_transformer == str((root / "checkpoint-1500" / "transformer").resolve())
    assert backend["base"].lora is None and backend["base"].editor_transformer is None
    assert [v.step for v in variants] == [None, 90, 500, 1000, 1500]
    messages = [r.getMessage() for r in caplog.records]
    skipped = [m for m in messages if "not variants (no adapter or model" in m]
    assert len(skipped) == 1 and skipped[0].endswith("logs/, runs/")
    beside = [m for m in messages if "beside its checkpoints" in m]
    assert len(beside) == 1 and "pytorch_lora_weights.safetensors" in beside[0] and "README" not in beside[0]


def test_checkpoint_step_reads_only_checkpoint_names():
    assert checkpoint_step("checkpoint-500") == 500 and checkpoint_step("checkpoint-0") == 0
    assert checkpoint_step("base") is None and checkpoint_step("step-500") is None
    assert checkpoint_step("checkpoint-500-ema") is None


def test_glob_every_and_last_select_checkpoints(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="bench_lib.sweep")
    root = tmp_path / "train"
    for step in (250, 500, 750, 1000, 1250, 1500, 2000):
        touch(root / f"checkpoint-{step}" / "pytorch_lora_weights.safetensors")

    def names(*options):
        return [v.name for v in expand(sweep_config(root, tmp_path, *options), announce=True)]

    assert names("--sweep_every", "500") == ["base", "checkpoint-500", "checkpoint-1000", "checkpoint-1500",
                                             "checkpoint-2000"]
    assert names("--sweep_last", "2") == ["base", "checkpoint-1500", "checkpoint-2000"]
    assert names("--sweep_every", "500", "--sweep_last", "3") == ["base", "checkpoint-1000", "checkpoint-1500",
                                                                  "checkpoint-2000"]
    assert names("--sweep_glob", "checkpoint-*50") == ["base", "checkpoint-250", "checkpoint-750", "checkpoint-1250"]
    assert names("--sweep_glob", "checkpoint-1*", "--sweep_base", "false") == [
        "checkpoint-1000", "checkpoint-1250", "checkpoint-1500"]
    assert any(r.getMessage().endswith("2 of 7 checkpoints kept by --sweep_last 2: checkpoint-1500, checkpoint-2000")
               for r in caplog.records)
    with pytest.raises(ConfigError, match="none of its 7 checkpoints .* kept by --sweep_glob nope"):
        names("--sweep_glob", "nope")
    with pytest.raises(ConfigError, match="`sweep_every` must be an integer >= 1"):
        names("--sweep_every", "0")
    with pytest.raises(ConfigError, match="--sweep_last 1 select"):
        expand(parse_config(["--sweep", "a=x,b=y", "--sweep_last", "1", "--output_dir", str(tmp_path)]))


def test_an_error_names_the_variant(tmp_path):
    from bench_lib.preflight import preflight
    from bench_lib.runner import check_models

    root = tmp_path / "train"
    touch(root / "checkpoint-200" / "a.safetensors")  # two files, neither a known adapter name
    touch(root / "checkpoint-200" / "b.safetensors")
    cfg = sweep_config(root, tmp_path, "--dataset", "data/demo/manifest.jsonl")
    with pytest.raises(ConfigError, match="sweep variant 'checkpoint-200': `lora` .* holds 2 .safetensors files"):
        check_models(cfg, [v.cfg for v in expand(cfg)])
    root = tmp_path / "train2"
    touch(root / "checkpoint-400" / "transformer" / "config.json", b"{}")
    touch(root / "checkpoint-400" / "transformer" / "diffusion_pytorch_model.safetensors")
    cfg = sweep_config(root, tmp_path, "--dataset", "data/demo/manifest.jsonl")
    with pytest.raises(ConfigError, match="sweep variant 'checkpoint-400': `editor_transformer` .* names no "
                                          "diffusers model class"):
        check_models(cfg, [v.cfg for v in expand(cfg)])
    preflight(cfg)  # the folder's shapes are fine before any model library is asked


# --- what each layout loads ------------------------------------------------------------------------------------

KWARGS = {"num_inference_steps": 2, "height": 32, "width": 32}


def peft_copy(diffusers_file: Path, folder: Path, *, alpha_over_rank: float = 2.0) -> Path:
    """The same adapter in PEFT's `save_pretrained` layout: tensors named `base_model.model.<module>...`, the
    scale in adapter_config.json (lora_alpha = 2 r here, the B matrices halved: the same effect, if the loader
    reads the config)."""
    from peft import LoraConfig
    from safetensors.torch import load_file, save_file

    tensors = load_file(diffusers_file)
    rank = next(t.shape[0] for k, t in tensors.items() if ".lora_A." in k)
    targets = sorted({k.split(".attn.")[1].split(".lora_")[0] for k in tensors})
    folder.mkdir(parents=True)
    save_file({"base_model.model." + k.removeprefix("transformer."): (t / alpha_over_rank if ".lora_B." in k else t)
               for k, t in tensors.items()}, folder / "adapter_model.safetensors")
    LoraConfig(r=rank, lora_alpha=int(rank * alpha_over_rank), target_modules=targets).save_pretrained(folder)
    assert (folder / "adapter_config.json").is_file()
    return folder


@torch.inference_mode()
def test_peft_adapters_and_transformer_folders_load_as_what_they_are(tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    from bench_lib.demo.tiny import build_lora
    from bench_lib.editors.diffusers_pipeline import DiffusersConfig, DiffusersEditor
    from bench_lib.models import resolve_model

    source = Image.open(sorted(Path("data/demo/images").iterdir())[0]).convert("RGB")
    request = SimpleNamespace(id="s", instruction="make the sky red")
    diffusers_lora = build_lora(tmp_path / "checkpoint-100", seed=3, strength=30)
    peft = peft_copy(diffusers_lora, tmp_path / "checkpoint-200")
    base_cfg = DiffusersConfig(editor_model="tiny:qwen-image-edit", editor_dtype="float32", editor_kwargs=KWARGS)

    def pixels(editor):
        return np.asarray(editor.edit(request, source, seed=5).image).astype(int)

    editor = DiffusersEditor(base_cfg, device=torch.device("cpu"))
    base = pixels(editor)
    assert editor.switch(DiffusersConfig(**{**base_cfg.__dict__, "lora": str(diffusers_lora.parent)}))
    with_lora = pixels(editor)
    peft_cfg = DiffusersConfig(**{**base_cfg.__dict__, "lora": str(peft)})
    assert editor.switch(peft_cfg)
    with_peft = pixels(editor)
    assert np.abs(with_lora - base).mean() > 1  # the adapter changes the edit ...
    assert np.abs(with_peft - with_lora).max() <= 1  # ... and PEFT's copy, its scale read, changes it the same
    recorded = DiffusersEditor.fingerprint(peft_cfg, None)
    assert editor.loaded_problem(recorded) is None
    config = json.loads((peft / "adapter_config.json").read_text())
    (peft / "adapter_config.json").write_text(json.dumps({**config, "lora_alpha": config["r"]}))
    assert DiffusersEditor.fingerprint(peft_cfg, None) != recorded  # its scale is part of what it is
    editor.close()

    # a full fine-tune's transformer folder: the tiny editor's own transformer saved gives the base's edits
    # bitwise, and its hash is recorded and checked at load time
    import diffusers

    transformer = diffusers.QwenImageTransformer2DModel.from_pretrained(resolve_model("tiny:qwen-image-edit"),
                                                                        subfolder="transformer")
    folder = tmp_path / "checkpoint-300" / "transformer"
    transformer.save_pretrained(folder)
    cfg = DiffusersConfig(**{**base_cfg.__dict__, "editor_transformer": str(folder)})
    DiffusersEditor.check(cfg, None)
    recorded = DiffusersEditor.fingerprint(cfg, None)
    assert "editor_transformer" not in recorded and len(recorded["editor_transformer_sha256"]) == 64
    editor = DiffusersEditor(cfg, device=torch.device("cpu"))
    assert editor.loaded_problem(recorded) is None
    assert np.array_equal(pixels(editor), base)
    assert "changed after this run was planned" in editor.loaded_problem(
        {**recorded, "editor_transformer_sha256": "0" * 64})
    editor.close()
    with torch.no_grad():
        next(transformer.parameters()).mul_(1.5)
    transformer.save_pretrained(folder)
    assert DiffusersEditor.fingerprint(cfg, None) != recorded


# --- the acceptance run: a diffusers LoRA training output, no option but --sweep --------------------------------


def test_a_diffusers_lora_training_output_sweeps_with_no_other_option(tmp_path, caplog):
    from bench_lib import cli
    from bench_lib.demo.tiny import build_lora
    from bench_lib.store import read_results

    root = tmp_path / "my-lora"  # as diffusers' train_dreambooth_lora_* scripts leave it
    for step in (1000, 500):
        build_lora(root / f"checkpoint-{step}", seed=step, strength=30, base="flux-kontext")  # TINY_ARGS's editor
        touch(root / f"checkpoint-{step}" / "optimizer.bin", b"x")
        touch(root / f"checkpoint-{step}" / "scheduler.bin", b"x")
        touch(root / f"checkpoint-{step}" / "random_states_0.pkl", b"x")
    touch(root / "logs" / "dreambooth-lora" / "events.out.tfevents.1", b"x")
    (root / "pytorch_lora_weights.safetensors").write_bytes(
        (root / "checkpoint-1000" / "pytorch_lora_weights.safetensors").read_bytes())
    out = tmp_path / "sweep"
    caplog.set_level(logging.INFO, logger="bench_lib.sweep")
    # the other options only make it cheap (2 samples, small edits, no baselines); none names the layout
    assert cli.main(["--sweep", str(root), "--output_dir", str(out), "--dataset", "data/demo/manifest.jsonl",
                     "--limit", "2", "--baselines", "", "--gallery", "false", *TINY_ARGS]) == 0
    report = json.loads((out / "sweep.json").read_text())
    assert [(v["name"], v["step"]) for v in report["variants"]] == [
        ("base", None), ("checkpoint-500", 500), ("checkpoint-1000", 1000)]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["base", "checkpoint-1000", "checkpoint-500"]
    skipped = [r.getMessage() for r in caplog.records if "not variants (no adapter" in r.getMessage()]
    assert len(skipped) == 1 and skipped[0].endswith("logs/")
    edits = {}
    for name in ("base", "checkpoint-500", "checkpoint-1000"):
        rows = read_results(out / name / "results.jsonl")
        assert [r["status"] for r in rows] == ["ok", "ok"]
        edits[name] = [(out / name / r["edited_image"]).read_bytes() for r in rows]
        recorded = json.loads((out / name / "run.json").read_text())["fingerprint"]["editor"]["diffusers"]
        if name != "base":  # the adapter loaded is the checkpoint's file, by content
            file = root / name / "pytorch_lora_weights.safetensors"
            assert recorded["lora_sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
        else:
            assert "lora_sha256" not in recorded
        assert "editor_transformer" not in recorded  # a run without one keeps the fingerprint it always had
    assert edits["base"] != edits["checkpoint-500"] != edits["checkpoint-1000"]


# --- the sweep table says which differences from the reference are significant ----------------------------------


def test_the_sweep_table_marks_each_significant_difference_from_the_reference():
    from test_sweep import loaded_run

    from bench_lib.config import JudgeConfig
    from bench_lib.judges.rubrics import Rubrics
    from bench_lib.protocols import make_protocol
    from bench_lib.sweep import Variant, render_sweep, summarise

    cfg = JudgeConfig()
    protocol = make_protocol(cfg, Rubrics(cfg.prompts_dir))
    base = [3.0, 4.0, 5.0, 6.0, 3.5, 4.5, 5.5, 6.5, 4.0, 5.0]
    runs = [loaded_run(protocol, "base", base),
            loaded_run(protocol, "checkpoint-500", [v + 2 for v in base]),  # better on every sample
            loaded_run(protocol, "checkpoint-1000", [v - 1.5 for v in base]),  # worse on every sample
            loaded_run(protocol, "checkpoint-1500", [v + (0.5 if i % 2 else -0.5) for i, v in enumerate(base)])]
    names = ["base", "checkpoint-500", "checkpoint-1000", "checkpoint-1500"]
    report = summarise([Variant(n, {}, None) for n in names], runs)
    verdicts = [(r["vs_reference"] or {}).get("score") for r in report["variants"]]
    assert verdicts[0] is None
    assert [(v["significant"], v["direction"]) for v in verdicts[1:]] == [(True, "better"), (True, "worse"),
                                                                          (False, None)]
    md = render_sweep(report, chart=None)
    assert "| variant | step | score | Δ score vs base | p | significant |" in md
    lines = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| checkpoint-")}
    assert "| **yes, better** |" in lines["checkpoint-500"] and "| **yes, worse** |" in lines["checkpoint-1000"]
    assert "| no |" in lines["checkpoint-1500"]


def test_a_variants_step_is_its_checkpoint_n_name_only_everywhere(tmp_path):
    root = tmp_path / "train"
    for name in ("checkpoint-500", "checkpoint-1e3", "ckpt-1000", "checkpoint-1500"):
        touch(root / name / "pytorch_lora_weights.safetensors")
    variants = expand(sweep_config(root, tmp_path))
    steps = {v.name: v.step for v in variants}
    assert steps == {"base": None, "checkpoint-500": 500, "checkpoint-1500": 1500, "checkpoint-1e3": None,
                     "ckpt-1000": None}  # what the trackers log at (checkpoint_step), not the name's last number
    assert [v.name for v in variants] == ["base", "checkpoint-500", "checkpoint-1500", "checkpoint-1e3", "ckpt-1000"]
    kept = [v.name for v in expand(sweep_config(root, tmp_path, "--sweep_every", "500"))]
    assert kept == ["base", "checkpoint-500", "checkpoint-1500"]  # ckpt-1000 has no step: not kept


def test_two_checkpoints_with_the_same_step_are_refused(tmp_path):
    root = tmp_path / "train"
    for name in ("checkpoint-100", "checkpoint-00100", "checkpoint-200"):
        touch(root / name / "pytorch_lora_weights.safetensors")
    with pytest.raises(ConfigError, match=r"sweep variants checkpoint-00100, checkpoint-100 have the same step 100"):
        expand(sweep_config(root, tmp_path))
    assert [v.step for v in expand(sweep_config(root, tmp_path, "--sweep_glob", "checkpoint-?00"))] == [None, 100,
                                                                                                       200]


def test_a_step_no_tracker_can_log_is_one_line_and_exit_2(tmp_path, capsys):
    from bench_lib import cli

    root = tmp_path / "train"
    touch(root / "checkpoint-99999999999999999999999" / "pytorch_lora_weights.safetensors")
    touch(root / f"checkpoint-{2**63 - 1}" / "pytorch_lora_weights.safetensors")
    with pytest.raises(ConfigError, match=r"its step 99999999999999999999999 is above 9223372036854775807"):
        expand(sweep_config(root, tmp_path))
    assert cli.main(["--editor", "identity", "--sweep", str(root), "--baselines", "", "--limit", "2",
                     "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2**63-1" in err[0]
    assert not (tmp_path / "out").exists()
    (root / "checkpoint-99999999999999999999999" / "pytorch_lora_weights.safetensors").unlink()
    (root / "checkpoint-99999999999999999999999").rmdir()
    assert [v.step for v in expand(sweep_config(root, tmp_path))] == [None, 2**63 - 1]


def test_a_broken_link_in_a_sweep_folder_is_named(tmp_path, caplog):
    root = tmp_path / "train"
    touch(root / "checkpoint-100" / "pytorch_lora_weights.safetensors")
    (root / "checkpoint-200").symlink_to(tmp_path / "gone")
    caplog.set_level(logging.INFO, logger="bench_lib.sweep")
    assert [v.name for v in expand(sweep_config(root, tmp_path), announce=True)] == ["base", "checkpoint-100"]
    assert any("checkpoint-200" in r.getMessage() and "links to nothing" in r.getMessage() for r in caplog.records)


# --- the README's offline sweep example, as written ------------------------------------------------------------


def readme_sweep_example() -> tuple[list[list[str]], dict[str, dict[str, str]]]:
    """The commands of the README's offline sweep example (the bash block after `<!-- offline-sweep -->`) and the
    table pasted after them, as {variant: {column: cell}}."""
    import re
    import shlex

    from launch import ROOT

    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- offline-sweep -->\s*```bash\n(.+?)\n```", text, re.S)
    assert match, "README has no command block after <!-- offline-sweep -->"
    commands = [shlex.split(line) for line in match.group(1).splitlines() if line.strip()]
    after = text[match.end(1):]
    return commands, sweep_table(after)


def sweep_table(md: str) -> dict[str, dict[str, str]]:
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| variant | step |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("| "):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def test_the_readme_offline_sweep_runs_as_written_and_shows_a_significant_and_a_plain_difference(tmp_path):
    """The README's offline sweep commands, run in this process on 2 samples (the adapters and the outputs in a
    temporary folder instead of ckpts/ and outputs/sweep; the pasted table is the run on all 10): the variants and
    steps are the pasted table's, checkpoint-100's adapter changes the edits, and checkpoint-200's (the diverged
    checkpoint) makes every edit non-finite, saved black and flagged so, scored below base as the table says; and the
    pasted table marks one difference significant and the other not."""
    import importlib.util

    import numpy as np
    from launch import ROOT
    from PIL import Image

    from bench_lib import cli
    from bench_lib.store import read_results

    commands, shown = readme_sweep_example()
    assert [c[:2] for c in commands] == [["python", "scripts/make_tiny_lora.py"]] * (len(commands) - 1) + [
        ["python", "run_benchmark.py"]]
    verdicts = {name: row["significant"] for name, row in shown.items() if name != "base"}
    assert verdicts == {"checkpoint-100": "no", "checkpoint-200": "**yes, worse**"}
    assert all(row["scored"] == "10" for row in shown.values())  # the pasted run: every demo sample

    def here(arg: str) -> str:  # the example's own relative folders, moved under tmp_path
        return str(tmp_path / arg) if arg.split("/")[0] in ("ckpts", "outputs") else arg

    spec = importlib.util.spec_from_file_location("make_tiny_lora", ROOT / "scripts" / "make_tiny_lora.py")
    make_tiny_lora = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_tiny_lora)
    for command in commands[:-1]:
        assert make_tiny_lora.main([here(a) for a in command[2:]]) == 0
    args = [here(a) for a in commands[-1][2:]]
    # cheaper than the pasted run: 2 samples, no baselines, no gallery (the options after the example's win)
    assert cli.main([*args, "--limit", "2", "--baselines", "", "--gallery", "false"]) == 0
    out = Path(args[args.index("--output_dir") + 1])
    got = sweep_table((out / "sweep.md").read_text())
    assert [(name, row["step"]) for name, row in got.items()] == [(name, row["step"]) for name, row in shown.items()]

    def edits(name):
        rows = read_results(out / name / "results.jsonl")
        assert [r["status"] for r in rows] == ["ok", "ok"]
        return rows, [np.asarray(Image.open(out / name / r["edited_image"]).convert("RGB"), dtype=int) for r in rows]

    base_rows, base = edits("base")
    _, tuned = edits("checkpoint-100")
    assert all(np.abs(a - b).mean() > 1 for a, b in zip(tuned, base))  # the adapter changes every edit
    diverged_rows, diverged = edits("checkpoint-200")
    assert all(r["flags"] == ["non_finite", "constant_image"] for r in diverged_rows)
    assert all((e == 0).all() for e in diverged)  # NaN saved as black
    assert all(d["score"] < b["score"] for d, b in zip(diverged_rows, base_rows))  # below base, as in the table
    assert shown["checkpoint-200"]["Δ score vs base"].startswith("-")
