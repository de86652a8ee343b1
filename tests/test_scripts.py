"""Every benchmark script in scripts/ runs at tiny settings (so none can rot unnoticed between the GPU runs it is
written for), and writes each measurement to `--output` as soon as it has it: a crash later loses nothing measured.

Each script runs in this process (its `main(argv)`), with one of its own steps spied on to read the output file
while the script is still running."""

import importlib.util
import json
import sys

from launch import ROOT


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read(path):
    return json.loads(path.read_text()) if path.exists() else None


def test_bench_edit(tmp_path, monkeypatch):
    bench_edit = load_script("bench_edit")
    out = tmp_path / "edit.json"
    real_judge, seen = bench_edit.QwenVLJudge, []

    def judge(*args, **kwargs):  # the switch comes after every edit measurement
        seen.append(read(out))
        return real_judge(*args, **kwargs)

    monkeypatch.setattr(bench_edit, "QwenVLJudge", judge)
    # The tiny FLUX.1 Kontext editor at the source's size (a tiny Qwen-Image-Edit edit VAE-encodes ~1 Mpx: ~6 CPU-s);
    # the script's flow is the same for every editor.
    assert bench_edit.main(["--editor_model", "tiny:flux-kontext", "--device", "cpu", "--dtype", "float32",
                            "--samples", "1", "--steps", "1", "--height", "32", "--width", "32", "--image_side", "32",
                            "--kwargs", '{"max_area": 1024, "_auto_resize": false}',
                            "--options", "attention_backend=native", "--output", str(out)]) == 0
    (before_switch,) = seen
    assert before_switch["direct_s_per_image"] > 0 and before_switch["harness"]["ok"] == 1
    assert [o["option"] for o in before_switch["options"]] == ["attention_backend=native"]
    assert "switch_s" not in before_switch
    summary = read(out)
    assert summary["switch_s"] > 0 and summary["harness"]["max_pixel_difference"] == 0
    assert summary["options"][0]["max_pixel_difference"] == 0  # `native` is the default attention: same pixels
    assert summary["barrier_wait_s_per_rank"] and summary["world_size"] == 1


def test_bench_judge(tmp_path, monkeypatch):
    bench_judge = load_script("bench_judge")
    out = tmp_path / "judge.json"
    real_run_mode, seen = bench_judge.run_mode, []

    def run_mode(judge, mode, args):
        seen.append(read(out))
        return real_run_mode(judge, mode, args)

    monkeypatch.setattr(bench_judge, "run_mode", run_mode)
    assert bench_judge.main(["--device", "cpu", "--dtype", "float32", "--batch_size", "2", "--num_samples", "2",
                             "--single_samples", "1", "--new_tokens", "2", "--image_side", "64",
                             "--modes", "logits,generate1", "--output", str(out)]) == 0
    assert seen[0]["results"] == [] and seen[0]["prompt_tokens"] > 0
    assert [r["mode"] for r in seen[1]["results"]] == ["logits"]  # written before the next mode began
    assert [(r["mode"], r["batch_size"]) for r in read(out)["results"]] == [("logits", 2), ("generate", 1)]
    assert all(r["s_per_sample"] > 0 for r in read(out)["results"])


def test_bench_sweep(tmp_path, monkeypatch):
    bench_sweep = load_script("bench_sweep")
    out = tmp_path / "sweep.json"
    real_timed, seen = bench_sweep.timed, []

    def timed(command, env):
        seen.append(read(out))
        return real_timed(command, env)

    monkeypatch.setattr(bench_sweep, "timed", timed)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # the Kontext recipe: the tiny adapters are built for its editor (an edit costs a 60th of Qwen-Image-Edit's)
    assert bench_sweep.main(["--limit", "1", "--adapters", "1", "--config", str(ROOT / "configs" /
                             "smoke_flux_kontext.yaml"), "--output", str(out)]) == 0
    assert seen[0] is None or seen[0]["sweep_s"] is None
    assert seen[1]["sweep_s"] > 0 and seen[1]["single_s"] == {}  # the sweep's time, before the single runs
    summary = read(out)
    assert set(summary["single_s"]) == {"base", "step-100"} and summary["sweep_editor_loads_per_rank"] == [1]
    assert summary["saved_editor_loads_s"] >= 0 and summary["adapter_swap_s"]["step-100"] >= 0


def test_bench_cli(tmp_path, monkeypatch):
    bench_cli = load_script("bench_cli")
    out = tmp_path / "cli.json"
    real_run, seen = bench_cli.subprocess.run, []

    def run(*args, **kwargs):
        seen.append(read(out))
        return real_run(*args, **kwargs)

    monkeypatch.setattr(bench_cli.subprocess, "run", run)
    assert bench_cli.main(["--repeat", "1", "--output", str(out)]) == 0
    assert [len(s["cases"]) if s else 0 for s in seen] == [0, 1, 2, 3, 4]  # each case written as it finished
    cases = read(out)["cases"]
    assert [c["exit_codes"] for c in cases] == [[0], [2], [2], [2], [2]]
    assert all(c["median_s"] > 0 for c in cases) and read(out)["python"] == sys.executable


def test_every_benchmark_script_has_a_smoke_test():
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    untested = [p.name for p in (ROOT / "scripts").glob("bench_*.py") if f"def test_{p.stem}(" not in tests]
    assert not untested, f"benchmark scripts without a smoke test (def test_<script>): {untested}"
