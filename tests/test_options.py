"""bench_lib.options: a key that picks a registered thing (editor, judge, protocol, dataset format, baselines) is
checked against its registry and its `--help` lists the registry's names; nothing lists them by hand."""

import dataclasses

import pytest
from test_backends import DEMO

from bench_lib.backends import Editor, EditResult, register_editor
from bench_lib.config import ConfigError
from bench_lib.options import build_arg_parser, config_fields, config_from_dict, help_text, parse_config, registry_of
from bench_lib.registry import BASELINES, EDITORS, FORMATS, JUDGES, PROTOCOLS


def test_keys_that_pick_a_registered_thing_name_their_registry():
    picks = {name: registry_of(key.field) for name, key in config_fields().items() if registry_of(key.field)}
    assert picks == {"dataset_format": FORMATS, "editor": EDITORS, "baselines": BASELINES, "judge": JUDGES,
                     "protocol": PROTOCOLS}
    for name, registry in picks.items():
        text = help_text(config_fields()[name].field)
        for entry in registry.names():
            assert f"{entry} ({registry.description(entry).rstrip('.')})" in text, (name, entry)


@pytest.mark.parametrize("key, value, fragments", [
    ("protocol", "viescor", ["`protocol`: unknown protocol 'viescor' (did you mean 'viescore'?)", "'re_edit'"]),
    ("dataset_format", "manifst", ["unknown format 'manifst' (did you mean 'manifest'?)", "['auto', 'manifest'"]),
    ("baselines", "identity, blnk", ["`baselines`: unknown baseline 'blnk' (did you mean 'blank'?)"]),
    ("judge", "qwen-vl", ["unknown judge 'qwen-vl' (did you mean 'qwen_vl'?); known: ['qwen_vl', 'openai']"]),
])
def test_a_name_that_is_not_registered_is_a_config_error_with_the_nearest(key, value, fragments):
    with pytest.raises(ConfigError) as err:
        config_from_dict({**DEMO, key: value})
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)


def test_a_newly_registered_editor_is_a_choice_at_once():
    @dataclasses.dataclass
    class NoKeys:
        pass

    class Grey(Editor):
        """Turns every source grey."""

        Config = NoKeys
        needs_model = False

        def edit(self, sample, source, *, seed):
            return EditResult(source.convert("L").convert("RGB"))

    with pytest.raises(ConfigError, match="unknown editor 'test-grey'"):
        config_from_dict({**DEMO, "editor": "test-grey"})
    register_editor("test-grey")(Grey)
    try:
        assert config_from_dict({**DEMO, "editor": "test-grey", "dataset_format": "auto"}).editor.editor == "test-grey"
        help_page = " ".join(build_arg_parser().format_help().split())
        assert "{diffusers,precomputed,identity,blank,test-grey}" in help_page
        assert "test-grey (Turns every source grey)" in help_page
    finally:
        EDITORS.pop("test-grey")


def test_kebab_case_flags_are_the_same_keys(tmp_path):
    cfg = parse_config(["--output-dir", str(tmp_path), "--judge-batch-size", "3", "--edit_batch_size", "2"])
    assert cfg.run.output_dir == str(tmp_path) and cfg.judge.judge_batch_size == 3 and cfg.editor.edit_batch_size == 2


def test_speed_options_on_the_command_line():
    cfg = parse_config(["--attention_backend", "native", "--compile", "regional",
                        "--cache", '{"type": "TaylorSeerCache", "cache_interval": 2}', "--lora_scale", "0.5"])
    assert cfg.editor_backend.attention_backend == "native" and cfg.editor_backend.compile == "regional"
    assert cfg.editor_backend.cache == {"type": "TaylorSeerCache", "cache_interval": 2}
    assert cfg.editor_backend.lora_scale == 0.5
    with pytest.raises(ConfigError, match="compile.*'none', 'regional', 'full'"):
        parse_config(["--compile", "fast"])
