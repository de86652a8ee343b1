"""Real benchmark data (RISEBench, 32 samples as its authors publish them) through the normal loading path: as a
plain manifest with a column mapping (its format is also recognised without one: tests/test_formats.py). In this
process: sharding over processes is tests/test_multiprocess.py's subject, with the demo data."""

import json

import pytest
from conftest import RISEBENCH

import bench_lib.cli as cli

COLUMNS = "id=index,source_image=image,reference_text=reference|reference_txt,reference_image=reference_img"


@pytest.mark.skipif(not RISEBENCH.is_dir(), reason="../shared/data/risebench is not present in this clone")
def test_risebench_end_to_end_as_a_manifest_with_a_column_mapping(tmp_path):
    out = tmp_path / "rise"
    assert cli.main(["--dataset", str(RISEBENCH / "data_total.json"), "--dataset_format", "manifest",
                     "--columns", COLUMNS, "--output_dir", str(out), "--editor", "identity", "--baselines", "",
                     "--config", "configs/smoke_flux_kontext.yaml", "--judge_batch_size", "16",
                     "--judge_max_pixels", str(128 * 128)]) == 0  # what is tested here is the data's path
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    source = json.loads((RISEBENCH / "data_total.json").read_text())
    assert [r["id"] for r in rows] == [s["index"] for s in source]
    assert all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"]
    # RISEBench's causal category is mapped to the causal rubric; the others have no rubric of their own
    assert {r["category"]: r["rubric"] for r in rows} == {"causal_reasoning": "causal", "temporal_reasoning": "default",
                                                           "spatial_reasoning": "default",
                                                           "logical_reasoning": "default"}
    report = json.loads((out / "report.json").read_text())
    assert set(report["categories"]) == {"temporal_reasoning", "causal_reasoning", "spatial_reasoning",
                                         "logical_reasoning"}
    assert all(c["count"] == 8 for c in report["categories"].values())
