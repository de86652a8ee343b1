"""The backend contract: a backend is one registered class that owns its config section, its checks, its
provenance and its display name; every config field says whether it changes results, and the run's
fingerprint is built from that."""

import dataclasses
import json
from dataclasses import dataclass

import pytest
from PIL import Image, ImageOps

import bench_lib.runner as runner
from bench_lib import config_from_dict
from bench_lib.backends import EDITORS, Editor, EditResult, register_editor
from bench_lib.config import CORE_SECTIONS, ConfigError, option, result_fields, section_fingerprint
from bench_lib.options import all_keys
from bench_lib.protocols import make_protocol
from bench_lib.registry import JUDGES
from bench_lib.store import read_run

JUDGE = {"judge_model": "tiny:qwen3-vl", "judge_dtype": "float32", "judge_min_digit_mass": 0.0}
DEMO = {"dataset": "data/demo/manifest.jsonl", "limit": 3, **JUDGE}


def fingerprint_of(cfg, identity):
    rubrics = runner.Rubrics(cfg.judge.prompts_dir)
    return runner.run_fingerprint(cfg, identity, rubrics, make_protocol(cfg.judge, rubrics))


def all_sections():
    return {**CORE_SECTIONS, **{f"{registry.kind}:{name}": cls.Config for registry in (EDITORS, JUDGES)
                                for name, cls in registry.items()}}


def test_every_config_field_says_whether_it_changes_results():
    for section, cls in all_sections().items():
        for f in dataclasses.fields(cls):
            assert isinstance(f.metadata.get("result"), bool), f"{section}.{f.name} is unclassified"
            assert f.metadata.get("help"), f"{section}.{f.name} has no help"
    with pytest.raises(TypeError):
        option(1, help="a key that does not say")  # `result` is required

    @dataclass
    class Unclassified:
        strength: float = 1.0

    class Bad(Editor):
        Config = Unclassified

        def edit(self, sample, source, *, seed):
            return EditResult(source)

    with pytest.raises(TypeError, match="strength"):
        register_editor("unclassified")(Bad)
    assert "unclassified" not in EDITORS


# The fields a section's own fingerprint() replaces by something better than their value, or drops where they
# cannot matter: the data is identified by content (dataset_content, added by the runner); the judge's answer
# length only matters in generate mode (this config is logits mode); a full fine-tune's transformer folder is
# fingerprinted by content (`editor_transformer_sha256`) and only when set, so runs without one keep their
# fingerprint (tests/test_training_sweep.py checks it is there when set).
TRANSFORMED = {"data": {"dataset"}, "judge:qwen_vl": {"judge_max_new_tokens"},
               "editor:diffusers": {"editor_transformer"}}


def test_the_fingerprint_is_built_from_the_classification():
    cfg = config_from_dict({**DEMO, "editor": "diffusers", "editor_model": "tiny:qwen-image-edit"})
    fingerprint = fingerprint_of(cfg, "sha256:x")
    for name, section in cfg.sections().items():
        declared = set(result_fields(section)) - TRANSFORMED.get(name, set())
        role, _, backend = name.partition(":")
        if role not in fingerprint:  # `sweep`: a sweep's variants are runs fingerprinted by their own settings
            assert not declared, f"{name} changes results but is not in the fingerprint"
            continue
        got = fingerprint[role][backend] if backend else fingerprint[role]
        assert declared <= set(got), f"{name}: {declared - set(got)} missing from the fingerprint"
        not_result = {f.name for f in dataclasses.fields(section) if not f.metadata["result"]}
        assert not (not_result & set(got)), f"{name}: {not_result & set(got)} should not be in the fingerprint"
    # spot checks of what that means for a resume
    other = config_from_dict({**DEMO, "editor": "diffusers", "editor_model": "tiny:qwen-image-edit", "seed": 1,
                              "limit": 5, "judge_batch_size": 3, "edit_batch_size": 4})
    changed = fingerprint_of(other, "sha256:x")
    assert changed["run"] == {"seed": 1} and changed["editor"] == fingerprint["editor"]
    assert changed["data"] == fingerprint["data"] and changed["judge"] == fingerprint["judge"]
    generate = config_from_dict({**DEMO, "editor": "identity", "judge_mode": "generate"})
    assert "judge_max_new_tokens" in fingerprint_of(generate, "x")[
        "judge"]["qwen_vl"]
    assert "judge_max_new_tokens" not in fingerprint["judge"]["qwen_vl"]  # logits mode: it changes nothing


@dataclass
class NegativeConfig:
    negative_strength: float = option(1.0, result=True, help="How far towards the colour negative (0..1).")


class NegativeEditor(Editor):
    """A test double registered from this module, exactly as a new backend would register itself."""

    Config = NegativeConfig
    needs_model = False
    loaded = 0

    @classmethod
    def check(cls, cfg, bench):
        if not 0 <= cfg.negative_strength <= 1:
            raise ConfigError(f"`negative_strength` must be in [0, 1], got {cfg.negative_strength}")

    @classmethod
    def display_name(cls, cfg):
        return f"negative({cfg.negative_strength:g})"

    @classmethod
    def provenance(cls, cfg):
        return {"id": cls.display_name(cfg), "source": "test module"}

    def __init__(self, cfg, **kwargs):
        super().__init__(cfg, **kwargs)
        type(self).loaded += 1

    def edit(self, sample, source, *, seed):
        return EditResult(Image.blend(source, ImageOps.invert(source), self.cfg.negative_strength),
                          info={"edited_by": sample.id})


@pytest.fixture
def negative_editor():
    register_editor("test-negative")(NegativeEditor)
    NegativeEditor.loaded = 0
    yield NegativeEditor
    EDITORS.pop("test-negative")


def test_a_backend_registered_by_a_test_module_runs_end_to_end(negative_editor, tmp_path):
    out = tmp_path / "neg"
    cfg = config_from_dict({**DEMO, "editor": "test-negative", "negative_strength": 0.75, "output_dir": str(out)})
    runner.run(cfg)
    run = read_run(out)
    assert [r["status"] for r in run["rows"]] == ["ok"] * 3
    assert run["report"]["meta"]["editor_model"] == "negative(0.75)"
    assert run["fingerprint"]["editor"] == {"editor": "test-negative", "test-negative": {"negative_strength": 0.75}}
    assert run["report"]["provenance"]["models"]["editor"] == {"backend": "test-negative", "id": "negative(0.75)",
                                                               "source": "test module"}
    records = [json.loads(line) for p in (out / "records").glob("*.edit.*") for line in p.read_text().splitlines()]
    assert sorted(r["edited_by"] for r in records) == sorted(r["id"] for r in run["rows"])  # EditResult.info kept
    assert negative_editor.loaded == 1
    with pytest.raises(ConfigError, match="negative_strength"):  # its own check, before anything loads
        runner.check_models(config_from_dict({**DEMO, "editor": "test-negative", "negative_strength": 2}))
    with pytest.raises(ConfigError, match="different settings.*negative_strength"):
        runner.run(config_from_dict({**DEMO, "editor": "test-negative", "negative_strength": 0.5,
                                     "output_dir": str(out)}))


def test_backend_names_and_keys_of_other_backends():
    with pytest.raises(ConfigError, match="did you mean 'diffusers'"):
        config_from_dict({**DEMO, "editor": "diffuser", "editor_model": "tiny:qwen-image-edit"})
    cfg = config_from_dict({**DEMO, "editor": "precomputed", "edits_dir": "x", "editor_model": "tiny:qwen-image-edit",
                            "editor_kwargs": {"num_inference_steps": 2}})
    assert cfg.ignored == ("editor_kwargs", "editor_model")  # logged when the run starts
    assert type(cfg.editor_backend).__name__ == "PrecomputedConfig" and cfg.editor_backend.edits_dir == "x"
    with pytest.raises(ConfigError, match="did you mean 'edits_dir'"):
        config_from_dict({**DEMO, "editor": "precomputed", "edit_dir": "x"})
    keys = all_keys()
    assert [k.section for k in keys["edits_dir"]] == ["editor:precomputed"]
    assert [k.section for k in keys["judge_model"]] == ["judge:openai", "judge:qwen_vl"]  # one key, two backends


def test_fingerprint_sections_are_plain_json():
    cfg = config_from_dict({**DEMO, "editor": "identity"})
    for section in cfg.sections().values():
        json.dumps(section_fingerprint(section))
