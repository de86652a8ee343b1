"""The Python API (bench_lib.api): `evaluate` with the caller's pipeline in memory, the judge kept between calls,
the caller's training state handed back unchanged, a typed result, and a typed error when nothing is scored."""

import json

import pytest

import bench_lib

FAST = {"limit": 1, "baselines": "", "gallery": False,
        "editor_kwargs": {"num_inference_steps": 2, "height": 32, "width": 32}}


def training_pipeline():
    """The tiny editor as a training script holds it: a LoRA on its transformer, the transformer in train mode,
    only the adapter's parameters trainable."""
    import torch
    from diffusers import QwenImageEditPipeline
    from peft import LoraConfig

    from bench_lib.models import resolve_model

    pipe = QwenImageEditPipeline.from_pretrained(resolve_model("tiny:qwen-image-edit"), dtype=torch.float32)
    pipe.transformer.requires_grad_(False)
    torch.manual_seed(0)
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                            target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    pipe.transformer.train()
    pipe.text_encoder.train()  # a module in train mode that has no trainable parameter
    return pipe


def training_state(pipe) -> dict:
    state = {}
    for name, component in pipe.components.items():
        if hasattr(component, "named_parameters"):
            # (forward hooks are left out: transformers installs its output-recording hooks on a model's first
            # forward, whoever calls it; the harness's own hook on the text encoder is a pre-hook)
            state[name] = ([(n, m.training, len(m._forward_pre_hooks)) for n, m in component.named_modules()],
                           [(n, p.requires_grad, p.device, p.dtype, p.data_ptr()) for n, p in
                            component.named_parameters()])
    state["progress_bar"] = dict(getattr(pipe, "_progress_bar_config", {"unset": True}))
    return state


@pytest.fixture(scope="module")
def two_calls(tmp_path_factory):
    """Two evaluations of the caller's pipeline with keep_judge=True, as a training loop makes them."""
    import torch

    out = tmp_path_factory.mktemp("api")
    pipe = training_pipeline()
    before = training_state(pipe)
    weights = {n: p.detach().clone() for n, p in pipe.transformer.named_parameters()}
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    results = [bench_lib.evaluate("configs/smoke.yaml", pipeline=pipe, keep_judge=True, step=step,
                                  output_dir=str(out / f"step-{step}"), **FAST) for step in (10, 20)]
    rng_after = torch.get_rng_state()
    after = training_state(pipe)
    same_weights = all(torch.equal(weights[n], p) for n, p in pipe.transformer.named_parameters())
    yield {"results": results, "before": before, "after": after, "same_weights": same_weights,
           "rng_same": torch.equal(rng_before, rng_after), "pipe": pipe}
    bench_lib.release_judge()


def test_the_callers_training_state_is_unchanged(two_calls):
    assert two_calls["before"] == two_calls["after"]  # modes, requires_grad, device, dtype, storage of every tensor
    modes = two_calls["after"]["transformer"][0]
    assert any(training for _, training, _ in modes), "the fixture's transformer was in train mode"
    assert two_calls["same_weights"]
    assert two_calls["rng_same"], "evaluate must leave the caller's torch RNG as it was"


def test_the_judge_is_loaded_once_over_two_calls(two_calls):
    first, second = two_calls["results"]
    assert (first.judge_loads, second.judge_loads) == (1, 0)
    from bench_lib.api import _KEPT

    assert _KEPT.judge is not None  # kept until release_judge()


def test_the_result_is_the_report(two_calls):
    result = two_calls["results"][0]
    report = json.loads(result.report_json.read_text())
    assert result.output_dir.name == "step-10" and result.step == 10
    assert result.primary == "score"
    assert result.score.mean == report["overall"]["metrics"]["score"]["mean"] is not None
    assert result.score.ci95 is None and report["overall"]["metrics"]["score"]["ci95"] is None  # one score
    assert result.scored == 1 and result.failed == 0
    assert set(result.categories) == set(report["categories"])
    assert result.report_md.is_file() and result.results_jsonl.is_file() and result.gallery_html is None
    run = json.loads((result.output_dir / "run.json").read_text())
    assert "in memory QwenImageEditPipeline" in json.dumps(run)  # recorded as the caller's object


def test_a_folder_evaluated_from_memory_is_not_resumed(two_calls, tmp_path):
    folder = two_calls["results"][0].output_dir
    with pytest.raises(bench_lib.ConfigError, match="different settings"):
        bench_lib.evaluate("configs/smoke.yaml", pipeline=two_calls["pipe"], output_dir=str(folder), **FAST)


def test_nothing_scored_raises_after_writing(tmp_path):
    pipe = training_pipeline()
    before = training_state(pipe)
    # every source image is over max_image_pixels: every sample is invalid_input, the run finishes unscored
    with pytest.raises(bench_lib.NothingScored, match="nothing was scored"):
        bench_lib.evaluate("configs/smoke.yaml", pipeline=pipe, output_dir=str(tmp_path / "out"),
                           **{**FAST, "max_image_pixels": 1})
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["overall"]["failed"] == 1
    assert training_state(pipe) == before


def test_settings_that_would_change_the_pipeline_are_refused(tmp_path):
    with pytest.raises(bench_lib.ConfigError, match="would change the pipeline"):
        bench_lib.evaluate("configs/smoke.yaml", pipeline=training_pipeline(), output_dir=str(tmp_path / "o"),
                           editor_scheduler={"shift": 2.0}, **FAST)


def test_a_kept_judge_starts_each_call_afresh(tmp_path, monkeypatch):
    """A kept server judge forgets what an earlier call met: a failure of the first call is not raised again
    without a request (the server recovered), and each call's requests, budget and usage are its own."""
    from test_openai_judge import HOSTILE_KEY_ENV, server_run, serving

    monkeypatch.setenv(HOSTILE_KEY_ENV, "k")
    same = {"judge_batch_size": 1, "judge_max_requests": 2}  # the budget is each call's own: 2 samples, 1 request each
    with serving("flaky") as server:
        try:
            with pytest.raises(bench_lib.RunFailed):  # every judgement gets a 500
                bench_lib.evaluate(server_run(server.url, tmp_path / "a", **same), keep_judge=True)
            server.fail, posts = False, server.posts
            result = bench_lib.evaluate(server_run(server.url, tmp_path / "b", **same), keep_judge=True)
            assert (result.scored, result.failed, result.judge_loads) == (2, 0, 0)
            assert server.posts - posts == 2
            usage = result.report["judge_usage"]
            assert (usage["requests"], usage["failed_requests"], usage["prompt_tokens"]) == (2, 0, 20), usage
            again = bench_lib.evaluate(server_run(server.url, tmp_path / "c", **same), keep_judge=True)
            assert again.scored == 2 and again.report["judge_usage"]["requests"] == 2
            assert server.posts - posts == 4
        finally:
            bench_lib.release_judge()


@pytest.mark.parametrize("arguments", [{"step": "x"}, {"step": -1}, {"step": 1.5}, {"step": True},
                                       {"output_dir": 123}, {"output_dir": ["runs", "a"]}])
def test_a_step_or_output_dir_of_the_wrong_type_is_a_config_error(arguments, tmp_path):
    arguments = {"output_dir": str(tmp_path / "out"), **arguments}
    with pytest.raises(bench_lib.ConfigError, match="`step`|`output_dir`"):
        bench_lib.evaluate("configs/smoke.yaml", **FAST, **arguments)
    assert not (tmp_path / "out").exists() and not (tmp_path / "123").exists()


def test_a_sweep_is_refused_before_anything_runs(tmp_path):
    """A sweep writes one folder per variant and a sweep report, no report.json where evaluate() reads its result:
    it would run every variant, then fail reading a file that is not there."""
    with pytest.raises(bench_lib.ConfigError, match="`sweep` is not for evaluate"):
        bench_lib.evaluate("configs/smoke.yaml", output_dir=str(tmp_path / "out"), sweep="a=none,b=none", **FAST)
    assert not (tmp_path / "out").exists()
