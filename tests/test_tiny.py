"""The tiny models load through the normal entry points, run, and are reproducible.

The models are built once per session into the temporary cache that conftest's `tiny_cache` sets up.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from diffusers import DiffusionPipeline, QwenImageEditPipeline, QwenImageEditPlusPipeline
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen3VLForConditionalGeneration, Qwen3VLProcessor

from bench_lib import models
from bench_lib.demo import tiny

EDITORS = {"qwen-image-edit": QwenImageEditPipeline, "qwen-image-edit-plus": QwenImageEditPlusPipeline}


@pytest.fixture(scope="session", params=sorted(EDITORS))
def editor(request):
    pipeline = DiffusionPipeline.from_pretrained(models.resolve_model(f"tiny:{request.param}"), dtype=torch.float32)
    assert type(pipeline) is EDITORS[request.param]
    return pipeline


@pytest.fixture(scope="session")
def judge():
    path = models.resolve_model("tiny:qwen3-vl")
    return AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32), AutoProcessor.from_pretrained(path)


def test_editor_edits_reproducibly(editor):
    first, second = _edit(editor), _edit(editor)
    assert first.size == (64, 64)
    assert first.tobytes() == second.tobytes()


def test_editor_prompt_prefix_is_exactly_the_dropped_tokens(editor):
    prefix = editor.prompt_template_encode.split("<|im_start|>user\n")[0] + "<|im_start|>user\n"
    assert len(editor.tokenizer(prefix)["input_ids"]) == editor.prompt_template_encode_start_idx


def test_judge_scores_left_padded_batch_of_image_pairs(judge):
    model, processor = judge
    assert type(model) is Qwen3VLForConditionalGeneration
    assert type(processor) is Qwen3VLProcessor
    processor.tokenizer.padding_side = "left"
    conversations = [
        _conversation(Image.new("RGB", (80, 60), "red"), Image.new("RGB", (200, 150), "blue"), "Score 0-10."),
        _conversation(Image.new("RGB", (128, 128), "green"), Image.new("RGB", (40, 90), "white"), "Is it good?"),
    ]
    inputs = processor.apply_chat_template(
        conversations,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True},
    )
    assert "mm_token_type_ids" in inputs
    assert inputs["attention_mask"][:, -1].all() and not inputs["attention_mask"][:, 0].all()  # left-padded

    with torch.no_grad():
        logits = model(**inputs).logits

    assert torch.isfinite(logits).all()
    next_tokens = logits[:, -1].argmax(dim=-1)
    assert next_tokens[0] != next_tokens[1]


def test_judge_chat_template_renders_like_qwen3_vl(judge):
    _, processor = judge
    rendered = processor.apply_chat_template(
        [_conversation(Image.new("RGB", (64, 64)), Image.new("RGB", (64, 64)), "Rate it.")],
        add_generation_prompt=True,
        tokenize=False,
    )
    image = "<|vision_start|><|image_pad|><|vision_end|>"
    assert rendered == [f"<|im_start|>user\n{image}{image}Rate it.<|im_end|>\n<|im_start|>assistant\n"]


def test_model_vocab_sizes_are_padded(editor, judge):
    model, processor = judge
    for config, tokenizer in [(editor.text_encoder.config, editor.tokenizer), (model.config, processor.tokenizer)]:
        vocab_size = config.text_config.vocab_size
        assert vocab_size % tiny.VOCAB_MULTIPLE == 0 and vocab_size >= len(tokenizer)


def test_tokenizer_keeps_digits_and_special_tokens_whole():
    tokenizer = tiny.build_tokenizer()
    assert tokenizer.convert_ids_to_tokens(tokenizer("10")["input_ids"]) == ["1", "0"]
    for digit in "0123456789":
        assert len(tokenizer(digit)["input_ids"]) == 1
    for token in tiny.SPECIAL_TOKENS:
        assert tokenizer(token)["input_ids"] == [tokenizer.convert_tokens_to_ids(token)]
    text = "把天空变成红色 🔥, score 7/10"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


@pytest.mark.parametrize("name", sorted(models.TINY_MODELS))
def test_builders_are_deterministic(name, tmp_path):
    models.tiny_builder(name)(tmp_path / "a")
    models.tiny_builder(name)(tmp_path / "b")
    assert _file_hashes(tmp_path / "a") == _file_hashes(tmp_path / "b")


def test_resolve_model_passes_other_names_and_rejects_unknown_tiny_names():
    assert models.resolve_model("not-tiny/foo") == "not-tiny/foo"
    with pytest.raises(ValueError, match="tiny:qwen3-vl"):
        models.resolve_model("tiny:no-such-model")


def test_resolve_model_keeps_a_copy_finished_first_elsewhere(tmp_path, monkeypatch):
    target = tmp_path / f"fake-{models.TINY_BUILD_VERSION}"

    def build_while_another_process_finishes(path):
        path.mkdir()
        (path / "ours").touch()
        target.mkdir()
        (target / "theirs").touch()

    monkeypatch.setenv(models.TINY_CACHE_ENV, str(tmp_path))
    monkeypatch.setitem(models.TINY_MODELS, "fake", build_while_another_process_finishes)

    assert models.resolve_model("tiny:fake") == str(target)
    assert [p.name for p in target.iterdir()] == ["theirs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name, f"{target.name}.lock"]  # no leftovers


def _edit(editor, *, true_cfg_scale: float = 1.0, **kwargs) -> Image.Image:
    return editor(
        image=Image.new("RGB", (80, 60), (30, 140, 60)),
        prompt="make it red",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
        true_cfg_scale=true_cfg_scale,
        **kwargs,
    ).images[0]


def _conversation(source: Image.Image, edited: Image.Image, text: str) -> list[dict]:
    content = [{"type": "image", "image": source}, {"type": "image", "image": edited}, {"type": "text", "text": text}]
    return [{"role": "user", "content": content}]


def _file_hashes(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
