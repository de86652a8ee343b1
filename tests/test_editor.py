import gc
import hashlib
import weakref
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from PIL import Image
from test_backends import fingerprint_of

from bench_lib import config_from_dict
from bench_lib.config import ConfigError
from bench_lib.data import DataConfig, load_samples
from bench_lib.demo.tiny import build_lora
from bench_lib.editors.diffusers_pipeline import DiffusersConfig, DiffusersEditor, add_multimodal_positions
from bench_lib.failures import RunFailed
from bench_lib.models import resolve_model
from bench_lib.store import sample_seed

KWARGS = {"num_inference_steps": 2, "height": 32, "width": 32, "true_cfg_scale": 4.0, "negative_prompt": " "}


def editor_config(model="tiny:qwen-image-edit", **kwargs):
    return DiffusersConfig(editor_model=model, editor_dtype="float32", editor_kwargs={**KWARGS, **kwargs})


# Where the subject is the harness's handling of a pipeline (freeing it, flags, caches, compile, adapters) and not
# Qwen-Image-Edit itself, the tiny FLUX.1 Kontext editor: a tiny Qwen-Image-Edit edit costs ~6 CPU-s here (its
# pipeline VAE-encodes every source at ~1 Mpx), a Kontext edit at the source's size ~0.1 s.
CHEAP_KWARGS = {"num_inference_steps": 2, "height": 32, "width": 32, "max_area": 1024, "_auto_resize": False,
                "guidance_scale": 2.5}


def cheap_config(**kwargs) -> DiffusersConfig:
    return DiffusersConfig(editor_model="tiny:flux-kontext", editor_dtype="float32",
                           editor_kwargs={**CHEAP_KWARGS, **kwargs.pop("editor_kwargs", {})}, **kwargs)


def request(instruction: str):
    """What an editor sees of a sample: its id and fields."""
    from types import SimpleNamespace

    return SimpleNamespace(id="s", instruction=instruction)


def load_pipe(name="tiny:qwen-image-edit"):
    pipe = DiffusionPipeline.from_pretrained(resolve_model(name), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def reference_prompt_embeds(pipe, prompt: str, image: Image.Image) -> torch.Tensor:
    """What the text encoder gives for the pipeline's own prompt when it sees the processor's FULL output."""
    inputs = pipe.processor(text=[pipe.prompt_template_encode.format(prompt)], images=image, padding=True,
                            return_tensors="pt")
    assert "mm_token_type_ids" in inputs
    hidden = pipe.text_encoder(**inputs, output_hidden_states=True).hidden_states[-1]
    return hidden[0][inputs["attention_mask"][0].bool()][pipe.prompt_template_encode_start_idx:]


@torch.inference_mode()
def test_text_encoder_sees_multimodal_positions():
    pipe = load_pipe()
    image = Image.new("RGB", (56, 84), (200, 30, 30))
    prompt = "Make the second cup from the left red."
    expected = reference_prompt_embeds(pipe, prompt, image)

    unfixed, _ = pipe.encode_prompt(prompt, image=image)
    # The bug this guards against: without the fix the pipeline's embeddings differ (1-D positions).
    assert not torch.allclose(unfixed[0], expected, atol=1e-5)

    remove = add_multimodal_positions(pipe)
    fixed, _ = pipe.encode_prompt(prompt, image=image)
    assert fixed.shape[1] == expected.shape[0]
    torch.testing.assert_close(fixed[0], expected, rtol=0, atol=1e-6)
    remove()
    again, _ = pipe.encode_prompt(prompt, image=image)
    torch.testing.assert_close(again, unfixed)


@torch.inference_mode()
def test_harness_edit_is_bitwise_the_direct_pipeline_call():
    sample = load_samples(DataConfig(dataset="data/demo/manifest.jsonl"))[0]
    seed = sample_seed(0, sample.id)
    source = sample.source_image.load()
    editor = DiffusersEditor(editor_config(), device=torch.device("cpu"))
    result = editor.edit(sample, source, seed=seed)
    editor.close()
    ours = result.image
    assert result.flags == []

    pipe = load_pipe()
    add_multimodal_positions(pipe)
    direct = pipe(image=source, prompt=sample.instruction, generator=torch.Generator().manual_seed(seed),
                  **KWARGS).images[0]
    assert ours.size == (32, 32)
    assert ours.tobytes() == direct.tobytes()
    other = pipe(image=source, prompt=sample.instruction, generator=torch.Generator().manual_seed(seed + 1),
                 **KWARGS).images[0]
    assert other.tobytes() != direct.tobytes()  # the seed matters, so equality above is not vacuous


@torch.inference_mode()
def test_edit_plus_pipeline_works_and_gets_token_types():
    editor = DiffusersEditor(editor_config("tiny:qwen-image-edit-plus"), device=torch.device("cpu"))
    assert type(editor.pipe).__name__ == "QwenImageEditPlusPipeline"
    seen = []
    editor.pipe.text_encoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("mm_token_type_ids")), with_kwargs=True)
    out = editor.edit(request("make it red"), Image.new("RGB", (60, 40), "blue"), seed=1).image
    assert out.size == (32, 32)
    assert seen and all(t is not None and (t == 1).any() for t in seen)  # image tokens are marked
    editor.close()


def test_close_frees_the_pipeline():
    editor = DiffusersEditor(cheap_config(), device=torch.device("cpu"))
    editor.edit(request("add a cat"), Image.new("RGB", (40, 40), "white"), seed=0)
    pipe_ref = weakref.ref(editor.pipe)
    transformer_ref = weakref.ref(editor.pipe.transformer)
    editor.close()
    del editor
    gc.collect()
    assert pipe_ref() is None and transformer_ref() is None


def test_non_finite_output_is_flagged(monkeypatch):
    import numpy as np

    editor = DiffusersEditor(cheap_config(), device=torch.device("cpu"))
    real_call = type(editor.pipe).__call__

    def nan_call(pipe, *args, **kwargs):
        out = real_call(pipe, *args, **kwargs)
        assert kwargs["output_type"] == "np"
        out.images[0, :2] = np.nan
        return out

    monkeypatch.setattr(type(editor.pipe), "__call__", nan_call)
    result = editor.edit(request("add a cat"), Image.new("RGB", (40, 40), "white"), seed=0)
    assert result.flags == ["non_finite"] and result.image.size == (32, 32)
    editor.close()


# --- diffusers' caches and torch.compile ---------------------------------------------------------------

FIRST_BLOCK_CACHE = {"type": "FirstBlockCache", "threshold": 0.2}


def fail_once_at_call(module, k: int):
    """Make `module`'s k-th forward (1-based) raise a CUDA out-of-memory error, once: a call that dies mid-way."""
    calls = []

    def hook(module, args, output):
        calls.append(1)
        if len(calls) == k:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    return module.register_forward_hook(hook).remove


@torch.inference_mode()
def test_a_call_that_fails_mid_way_leaves_no_cache_state_behind():
    """diffusers resets a cache's state at the end of a successful call only: after a call that failed mid-way
    (an OOM at its second step), every later call of the rank would start from the dead call's cached residuals."""
    cfg = DiffusersConfig(editor_model="tiny:qwen-image-edit", editor_dtype="float32",
                          editor_kwargs={**KWARGS, "num_inference_steps": 3, "true_cfg_scale": 1.0},
                          cache=FIRST_BLOCK_CACHE)
    editor = DiffusersEditor(cfg, device=torch.device("cpu"))
    samples = [(request("make it snow"), Image.new("RGB", (48, 40), "blue"), 2)]
    clean = [editor.edit(s, image, seed=seed).image.tobytes() for s, image, seed in samples]
    remove = fail_once_at_call(editor.pipe.transformer, 2)
    try:
        editor.edit(request("add a cat"), Image.new("RGB", (40, 40), "white"), seed=1)
    except torch.OutOfMemoryError:
        pass  # the harness records this sample as edit_failed; what matters is the samples after it
    else:
        raise AssertionError("the injected failure did not happen")
    remove()
    after = [editor.edit(s, image, seed=seed).image.tobytes() for s, image, seed in samples]
    editor.close()
    assert after == clean


@pytest.mark.parametrize("model", ["tiny:flux-kontext", "tiny:flux2"])
def test_a_cache_on_a_pipeline_that_cannot_hold_one_is_refused_before_loading(model):
    """diffusers' cache hooks need the pipeline to run its transformer inside `cache_context`; FLUX.1 Kontext's and
    FLUX.2's pipelines do not, so every edit would fail ("No cache context is set"): refused at the check."""
    cfg = DiffusersConfig(editor_model=model, editor_dtype="float32", cache=FIRST_BLOCK_CACHE)
    with pytest.raises(ConfigError, match="cache_context") as refused:
        DiffusersEditor.check(cfg, None)
    pipeline = {"tiny:flux-kontext": "FluxKontextPipeline", "tiny:flux2": "Flux2Pipeline"}[model]
    assert "\n" not in str(refused.value) and pipeline in str(refused.value)
    DiffusersEditor.check(DiffusersConfig(editor_model="tiny:qwen-image-edit", cache=FIRST_BLOCK_CACHE), None)


@pytest.mark.parametrize("compile_mode, cache", [("regional", FIRST_BLOCK_CACHE),
                                                 ("full", {"type": "TaylorSeerCache", "cache_interval": 2})])
def test_compile_with_a_cache_edits(compile_mode, cache, monkeypatch):
    """A cache's hooks call functions diffusers marks torch.compiler.disable: a full-graph compile refuses them, so
    every edit failed. Dynamo traces the same way whatever the backend; the "eager" backend skips inductor's code
    generation (a minute per compile on this CPU), so the test stays cheap. (`full` with TaylorSeerCache and
    inductor was checked by hand: it edits.)"""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda *args, **kwargs: real_compile(*args, **{**kwargs, "backend": "eager"}))
    kwargs = {**KWARGS, "num_inference_steps": 3, "true_cfg_scale": 1.0}
    cfg = DiffusersConfig(editor_model="tiny:qwen-image-edit", editor_dtype="float32", editor_kwargs=kwargs,
                          cache=cache, compile=compile_mode)
    DiffusersEditor.check(cfg, None)
    source = Image.new("RGB", (40, 40), "white")
    editor = DiffusersEditor(cfg, device=torch.device("cpu"))
    compiled = editor.edit(request("add a cat"), source, seed=1).image
    editor.close()
    assert compiled.size == (32, 32)
    if compile_mode == "full":
        return  # one comparison with the uncompiled edit is enough (each costs an editor load)
    editor = DiffusersEditor(DiffusersConfig(**{**cfg.__dict__, "compile": "none"}), device=torch.device("cpu"))
    plain = editor.edit(request("add a cat"), source, seed=1).image
    editor.close()
    difference = np.abs(np.asarray(compiled, dtype=int) - np.asarray(plain, dtype=int)).max()
    assert difference <= 1


# --- LoRA adapters: what is loaded is what the run recorded ---------------------------------------------


def test_an_adapter_overwritten_after_planning_is_never_edited_with(tmp_path, monkeypatch):
    """A training job saves a new checkpoint in place while a sweep runs: the run recorded (fingerprint, provenance)
    the adapter's sha256 when it was planned, so editing with the new weights would put them under the old hash.
    The variant's samples are edit_failed, naming the adapter and both digests; the other variants are unharmed."""
    import bench_lib.edit_stage as edit_stage
    import bench_lib.runner as runner
    from bench_lib import config_from_dict
    from bench_lib.demo.tiny import build_lora
    from bench_lib.store import read_run

    adapters = tmp_path / "ckpts"
    for step in (100, 200):
        build_lora(adapters / f"step-{step}", seed=step, base="flux-kontext")
    step_100 = adapters / "step-100" / "pytorch_lora_weights.safetensors"
    planned = hashlib.sha256(step_100.read_bytes()).hexdigest()
    real_load = edit_stage.load_editor

    def load_after_a_save(*args, **kwargs):  # the trainer saves step-100 again just before the editor loads it
        build_lora(adapters / "step-100", seed=7, base="flux-kontext")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(edit_stage, "load_editor", load_after_a_save)
    out = tmp_path / "sweep"
    with pytest.raises(RunFailed, match="step-100: none of the 1 samples is ok"):  # a variant scored nothing
        runner.run(config_from_dict({
            "dataset": "data/demo/manifest.jsonl", "limit": 1, "baselines": "", "editor_model": "tiny:flux-kontext",
            "editor_dtype": "float32", "editor_kwargs": CHEAP_KWARGS, "judge_model": "tiny:qwen3-vl",
            "judge_dtype": "float32", "judge_min_digit_mass": 0.0, "sweep": str(adapters), "sweep_base": False,
            "output_dir": str(out)}))
    saved = hashlib.sha256(step_100.read_bytes()).hexdigest()
    assert saved != planned
    changed, other = read_run(out / "step-100"), read_run(out / "step-200")
    assert changed["fingerprint"]["editor"]["diffusers"]["lora_sha256"] == planned
    assert [r["status"] for r in changed["rows"]] == ["edit_failed"]
    error = changed["rows"][0]["error"]
    assert str(adapters / "step-100") in error and planned in error and saved in error
    assert not list((out / "step-100" / "edits").glob("*.png"))  # nothing was edited with the new weights
    assert [r["status"] for r in other["rows"]] == ["ok"]  # the next adapter switched in and edited


def test_an_adapter_saved_while_it_loads_is_caught(tmp_path):
    """The file is hashed just before and just after loading: a save in between (the weights loaded are then
    neither version for sure) is a mismatch even if the planned hash is the "before" one."""
    from bench_lib.demo.tiny import build_lora

    file = build_lora(tmp_path / "adapter", seed=1, base="flux-kontext")
    planned = hashlib.sha256(file.read_bytes()).hexdigest()
    editor = DiffusersEditor(cheap_config(), device=torch.device("cpu"))
    assert editor.loaded_problem({}) is None  # no adapter: nothing to compare
    cfg = DiffusersConfig(**{**editor.cfg.__dict__, "lora": str(tmp_path / "adapter")})
    real_load = editor.pipe.load_lora_weights

    def load_then_save(*args, **kwargs):
        real_load(*args, **kwargs)
        build_lora(tmp_path / "adapter", seed=2, base="flux-kontext")

    editor.pipe.load_lora_weights = load_then_save
    assert editor.switch(cfg)
    problem = editor.loaded_problem({"lora_sha256": planned})
    assert "changed while loading" in problem and planned in problem
    editor.pipe.load_lora_weights = real_load
    editor.switch(DiffusersConfig(**{**cfg.__dict__, "lora": None}))
    assert editor.switch(cfg)  # loaded again, unchanged since: the current file's hash is what was loaded
    now = hashlib.sha256(file.read_bytes()).hexdigest()
    assert editor.loaded_problem({"lora_sha256": now}) is None
    assert planned in editor.loaded_problem({"lora_sha256": planned}) and "the file loaded has" in \
        editor.loaded_problem({"lora_sha256": planned})
    editor.close()


# --- the other pipelines (FLUX.1 Kontext, FLUX.2), LoRA adapters, scheduler overrides, speed options -------


TINY_JUDGE = {"judge_model": "tiny:qwen3-vl", "judge_dtype": "float32", "judge_min_digit_mass": 0.0}

QWEN = {"num_inference_steps": 2, "height": 32, "width": 32, "true_cfg_scale": 1.0}

KONTEXT = {"num_inference_steps": 2, "height": 64, "width": 64, "max_area": 4096, "_auto_resize": False,
           "guidance_scale": 2.5}

FLUX2 = {"num_inference_steps": 2, "height": 64, "width": 64, "max_sequence_length": 48,
         "text_encoder_out_layers": [1, 2, 3], "guidance_scale": 4.0}


def sample(text="make it red", id="s"):
    return SimpleNamespace(id=id, instruction=text)


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


def test_a_lora_changes_the_edit_and_its_hash_the_fingerprint(tmp_path):
    build_lora(tmp_path / "adapter", seed=1, base="flux-kontext")
    source = Image.new("RGB", (48, 40), (200, 40, 40))
    base = cheap_config()
    with_lora = DiffusersConfig(**{**base.__dict__, "lora": str(tmp_path / "adapter")})
    DiffusersEditor.check(with_lora, None)
    plain, adapted = edit(base, source), edit(with_lora, source)
    assert plain.tobytes() != adapted.tobytes()
    assert edit(DiffusersConfig(**{**with_lora.__dict__, "lora_scale": 0.0}), source).tobytes() == plain.tobytes()

    cfg = config_from_dict({"dataset": "data/demo/manifest.jsonl", **TINY_JUDGE, "editor_model": "tiny:flux-kontext",
                            "lora": str(tmp_path / "adapter")})
    before = fingerprint_of(cfg, "x")
    build_lora(tmp_path / "adapter", seed=2, base="flux-kontext")  # retrained, saved in the same place
    after = fingerprint_of(cfg, "x")
    assert before["editor"]["diffusers"]["lora_sha256"] != after["editor"]["diffusers"]["lora_sha256"]
    assert "lora" not in after["editor"]["diffusers"]  # by content, not by where it lies
    provenance = DiffusersEditor.provenance(cfg.editor_backend)["lora"]
    assert provenance["sha256"] == after["editor"]["diffusers"]["lora_sha256"] and provenance["scale"] == 1.0


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
