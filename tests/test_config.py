import pytest
from launch import ROOT

from bench_lib.config import ConfigError
from bench_lib.options import parse_config


def write(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


BASE = "dataset: d.jsonl\neditor_model: e\njudge_model: j\n"


def test_yaml_then_cli_overrides(tmp_path):
    recipe = write(tmp_path, BASE + "seed: 3\nedit_batch_size: 2\neditor_kwargs: {num_inference_steps: 50}\n")
    cfg = parse_config(["--config", recipe, "--seed", "7", "--columns", "id=index,source_image=image"])
    assert cfg.run.seed == 7
    assert cfg.editor.edit_batch_size == 2
    assert cfg.editor_backend.editor_kwargs == {"num_inference_steps": 50}
    assert cfg.data.columns == {"id": "index", "source_image": "image"}


def test_mapping_values_from_cli_are_typed(tmp_path):
    cfg = parse_config(["--config", write(tmp_path, BASE), "--editor_kwargs",
                        "num_inference_steps=4, true_cfg_scale=4.0,guidance=1e-3,flag=true,negative_prompt= "])
    assert cfg.editor_backend.editor_kwargs == {"num_inference_steps": 4, "true_cfg_scale": 4.0, "guidance": 0.001,
                                        "flag": True, "negative_prompt": " "}  # text kept exactly: one space
    cfg = parse_config(["--config", write(tmp_path, BASE), "--editor_kwargs", "negative_prompt=no"])
    assert cfg.editor_backend.editor_kwargs == {"negative_prompt": "no"}  # not YAML's boolean
    cfg = parse_config(["--config", write(tmp_path, BASE), "--editor_kwargs", '{"negative_prompt": " "}'])
    assert cfg.editor_backend.editor_kwargs == {"negative_prompt": " "}


@pytest.mark.parametrize("argv, message", [
    (["--no_such_key", "1"], "no_such_key"),
    (["--seed", "abc"], "seed"),
    (["--edit_batch_size", "0"], "edit_batch_size"),
    (["--editor_dtype", "float64"], "editor_dtype"),
    (["--columns", "identifier=index"], "identifier"),
    (["--editor_kwargs", "generator=1"], "generator"),
    (["--editor_kwargs", "output_type=np"], "output_type"),
    (["--editor_kwargs", "negative_prompt=blurry, lowres"], "JSON"),
    (["--judge_mode", "sample"], "judge_mode"),
    (["--judge_max_new_tokens", "0"], "judge_max_new_tokens"),
    (["--score_formula", "median"], "score_formula"),
    (["--score_weights", "overall=1"], "score_weights"),
    (["--score_weights", "instruction=-1"], "score_weights"),
    (["--score_weights", "instruction=0,consistency=0,quality=0"], "score_weights"),
])
def test_bad_cli_values_name_the_key(tmp_path, argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(["--config", write(tmp_path, BASE), *argv])


def test_unknown_yaml_key(tmp_path):
    with pytest.raises(ConfigError, match="edit_batchsize"):
        parse_config(["--config", write(tmp_path, BASE + "edit_batchsize: 2\n")])


def test_missing_recipe_and_required_keys(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        parse_config(["--config", str(tmp_path / "nope.yaml")])
    with pytest.raises(ConfigError, match="dataset"):
        parse_config(["--config", write(tmp_path, "editor_model: e\njudge_model: j\n")])


@pytest.mark.parametrize("recipe", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_recipe_parses(recipe):
    """Each recipe in configs/ is valid as shipped (a renamed key or a bad value would be a ConfigError)."""
    cfg = parse_config(["--config", f"configs/{recipe}", "--dataset", "org/bench"])
    assert cfg.recipe.endswith(recipe)


def test_cli_mapping_updates_the_recipe_mapping(tmp_path):
    recipe = write(tmp_path, BASE + "editor_kwargs: {num_inference_steps: 50, true_cfg_scale: 4.0}\n")
    cfg = parse_config(["--config", recipe, "--editor_kwargs", "num_inference_steps=2,true_cfg_scale=null"])
    assert cfg.editor_backend.editor_kwargs == {"num_inference_steps": 2}


def test_null_removes_a_mapping_key_even_without_a_recipe_mapping(tmp_path):
    cfg = parse_config(["--config", write(tmp_path, BASE), "--columns", "id=index,reference_image=null"])
    assert cfg.data.columns == {"id": "index"}


def test_real_models_need_a_recipe():
    with pytest.raises(ConfigError, match="--config configs/qwen_image_edit.yaml"):
        parse_config(["--dataset", "d.jsonl", "--editor_model", "Qwen/Qwen-Image-Edit"])
    assert parse_config(["--dataset", "d.jsonl"]).data.dataset == "d.jsonl"  # tiny models: fine


def test_boolean_flags(tmp_path):
    assert parse_config(["--config", write(tmp_path, BASE), "--overwrite"]).run.overwrite is True
    assert parse_config(["--config", write(tmp_path, BASE), "--overwrite", "false"]).run.overwrite is False
    assert parse_config(["--config", write(tmp_path, BASE)]).run.trust_remote_code is False
    with pytest.raises(ConfigError, match="overwrite"):
        parse_config(["--config", write(tmp_path, BASE), "--overwrite", "maybe"])


def test_score_weights_not_named_weigh_one_and_baselines_are_a_list(tmp_path):
    cfg = parse_config(["--config", write(tmp_path, BASE), "--score_weights", "quality=3",
                        "--baselines", " blank, identity,blank"])
    assert cfg.judge.score_weights == {"instruction": 1.0, "consistency": 1.0, "quality": 3.0}
    assert cfg.editor.baseline_names() == ["blank", "identity"]


def test_two_recipes_are_refused(tmp_path):
    """Two `--config` flags: refused in one line, never the last one silently."""
    other = tmp_path / "other.yaml"
    other.write_text(BASE.replace("e\n", "e2\n"))
    for argv in (["--config", write(tmp_path, BASE), "--config", str(other)],
                 [f"--config={other}", "--seed", "1", "--config", write(tmp_path, BASE)]):
        with pytest.raises(ConfigError, match="--config given 2 times.*one recipe"):
            parse_config(argv)
