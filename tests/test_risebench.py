"""Real benchmark data (RISEBench, 32 samples as its authors publish them) through the normal loading path."""

import json

import pytest

from conftest import RISEBENCH
from launch import TINY_ARGS, accelerate_launch

COLUMNS = "id=index,source_image=image,reference_text=reference|reference_txt,reference_image=reference_img"


@pytest.mark.skipif(not RISEBENCH.is_dir(), reason="../shared/data/risebench is not present in this clone")
def test_risebench_end_to_end_on_two_processes(tmp_path):
    out = tmp_path / "rise"
    accelerate_launch(2, ["--dataset", str(RISEBENCH / "data_total.json"), "--columns", COLUMNS,
                          "--output_dir", str(out), *TINY_ARGS, "--editor_kwargs", "num_inference_steps=1"],
                      timeout=400)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    source = json.loads((RISEBENCH / "data_total.json").read_text())
    assert [r["id"] for r in rows] == [s["index"] for s in source]
    assert all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"]
    assert all(r["rubric"] == "default" for r in rows)  # RISEBench's categories have no rubric of their own
    report = json.loads((out / "report.json").read_text())
    assert set(report["categories"]) == {"temporal_reasoning", "causal_reasoning", "spatial_reasoning",
                                         "logical_reasoning"}
    assert all(c["count"] == 8 for c in report["categories"].values())
