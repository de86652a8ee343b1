"""Progress bars (bench_lib.progress): they count samples, and the libraries' own bars stay hidden."""

from conftest import DEMO, identity_run


def test_progress_counts_samples_and_hides_the_libraries_bars(tmp_path, capfd):
    assert identity_run(DEMO / "manifest.jsonl", tmp_path / "out", "--limit", "4", "--baselines", "identity") == 0
    err = capfd.readouterr().err.replace("\r", "\n")
    assert "edit: 100%" in err and "4/4" in err  # samples, not batches
    assert "judge (editor, identity): 100%" in err and "8/8" in err  # the editor's 4 and the baseline's 4
    assert "Loading" not in err and "Generating" not in err  # no loader bars without --verbose
