"""The results' declared schema (bench_lib.results): every row has every key, typed as report.json declares."""

import json

from conftest import copy_demo, identity_run


def test_results_have_one_declared_schema(tmp_path):
    import datasets

    folder = tmp_path / "bench"
    rows = copy_demo(folder, 3)
    for i, row in enumerate(rows):
        row["id"] = str(i)  # ids that look like numbers stay strings
    rows[1]["source_image"] = "images/missing.png"  # one invalid_input row: its scores are null, typed
    (folder / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert identity_run(folder / "m.jsonl", tmp_path / "out") == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    features = datasets.Features.from_dict(report["results_features"])
    loaded = datasets.load_dataset("json", data_files=str(tmp_path / "out" / "results.jsonl"), features=features,
                                   split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.features == features and loaded["id"] == ["0", "1", "2"]
    assert features["score"] == datasets.Value("float64") and features["seed"] == datasets.Value("int64")
    assert features["human_score"] == datasets.Value("float64")  # null on every row, still a float column
    frame = loaded.to_pandas()
    assert frame["id"].tolist() == ["0", "1", "2"] and frame["score"].dtype == "float64"
    assert frame["status"].tolist() == ["ok", "invalid_input", "ok"]
    # pandas on the file itself, told not to guess types, gives the same strings and floats
    import pandas as pd

    raw = pd.read_json(tmp_path / "out" / "results.jsonl", lines=True, dtype=False)
    assert raw["id"].tolist() == ["0", "1", "2"]
    results = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert all(set(r) == set(features) for r in results)  # every key on every row
    assert all(isinstance(v, float) for r in results if r["metrics"] for v in r["metrics"].values())
