import gc
import weakref

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from bench_lib.data import DataConfig, load_samples
from bench_lib.editors.diffusers_pipeline import DiffusersConfig, DiffusersEditor, add_multimodal_positions
from bench_lib.models import resolve_model
from bench_lib.store import sample_seed

KWARGS = {"num_inference_steps": 2, "height": 32, "width": 32, "true_cfg_scale": 4.0, "negative_prompt": " "}


def editor_config(model="tiny:qwen-image-edit", **kwargs):
    return DiffusersConfig(editor_model=model, editor_dtype="float32", editor_kwargs={**KWARGS, **kwargs})


def request(instruction: str):
    """What an editor sees of a sample: its id and fields."""
    from types import SimpleNamespace

    return SimpleNamespace(id="s", instruction=instruction)


def load_pipe(name="tiny:qwen-image-edit"):
    pipe = DiffusionPipeline.from_pretrained(resolve_model(name), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def reference_prompt_embeds(pipe, prompt: str, image: Image.Image) -> torch.Tensor:
    """What the text encoder gives for the pipeline's own prompt when it sees the processor's FULL output."""
    inputs = pipe.processor(text=[pipe.prompt_template_encode.format(prompt)], images=image, padding=True,
                            return_tensors="pt")
    assert "mm_token_type_ids" in inputs
    hidden = pipe.text_encoder(**inputs, output_hidden_states=True).hidden_states[-1]
    return hidden[0][inputs["attention_mask"][0].bool()][pipe.prompt_template_encode_start_idx:]


@torch.inference_mode()
def test_text_encoder_sees_multimodal_positions():
    pipe = load_pipe()
    image = Image.new("RGB", (56, 84), (200, 30, 30))
    prompt = "Make the second cup from the left red."
    expected = reference_prompt_embeds(pipe, prompt, image)

    unfixed, _ = pipe.encode_prompt(prompt, image=image)
    # The bug this guards against: without the fix the pipeline's embeddings differ (1-D positions).
    assert not torch.allclose(unfixed[0], expected, atol=1e-5)

    remove = add_multimodal_positions(pipe)
    fixed, _ = pipe.encode_prompt(prompt, image=image)
    assert fixed.shape[1] == expected.shape[0]
    torch.testing.assert_close(fixed[0], expected, rtol=0, atol=1e-6)
    remove()
    again, _ = pipe.encode_prompt(prompt, image=image)
    torch.testing.assert_close(again, unfixed)


@torch.inference_mode()
def test_harness_edit_is_bitwise_the_direct_pipeline_call():
    sample = load_samples(DataConfig(dataset="data/demo/manifest.jsonl"))[0]
    seed = sample_seed(0, sample.id)
    source = sample.source_image.load()
    editor = DiffusersEditor(editor_config(), device=torch.device("cpu"))
    result = editor.edit(sample, source, seed=seed)
    editor.close()
    ours = result.image
    assert result.flags == []

    pipe = load_pipe()
    add_multimodal_positions(pipe)
    direct = pipe(image=source, prompt=sample.instruction, generator=torch.Generator().manual_seed(seed),
                  **KWARGS).images[0]
    assert ours.size == (32, 32)
    assert ours.tobytes() == direct.tobytes()
    other = pipe(image=source, prompt=sample.instruction, generator=torch.Generator().manual_seed(seed + 1),
                 **KWARGS).images[0]
    assert other.tobytes() != direct.tobytes()  # the seed matters, so equality above is not vacuous


@torch.inference_mode()
def test_edit_plus_pipeline_works_and_gets_token_types():
    editor = DiffusersEditor(editor_config("tiny:qwen-image-edit-plus"), device=torch.device("cpu"))
    assert type(editor.pipe).__name__ == "QwenImageEditPlusPipeline"
    seen = []
    editor.pipe.text_encoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("mm_token_type_ids")), with_kwargs=True)
    out = editor.edit(request("make it red"), Image.new("RGB", (60, 40), "blue"), seed=1).image
    assert out.size == (32, 32)
    assert seen and all(t is not None and (t == 1).any() for t in seen)  # image tokens are marked
    editor.close()


def test_close_frees_the_pipeline():
    editor = DiffusersEditor(editor_config(), device=torch.device("cpu"))
    editor.edit(request("add a cat"), Image.new("RGB", (40, 40), "white"), seed=0)
    pipe_ref = weakref.ref(editor.pipe)
    transformer_ref = weakref.ref(editor.pipe.transformer)
    editor.close()
    del editor
    gc.collect()
    assert pipe_ref() is None and transformer_ref() is None


def test_non_finite_output_is_flagged(monkeypatch):
    import numpy as np

    editor = DiffusersEditor(editor_config(), device=torch.device("cpu"))
    real_call = type(editor.pipe).__call__

    def nan_call(pipe, *args, **kwargs):
        out = real_call(pipe, *args, **kwargs)
        assert kwargs["output_type"] == "np"
        out.images[0, :2] = np.nan
        return out

    monkeypatch.setattr(type(editor.pipe), "__call__", nan_call)
    result = editor.edit(request("add a cat"), Image.new("RGB", (40, 40), "white"), seed=0)
    assert result.flags == ["non_finite"] and result.image.size == (32, 32)
    editor.close()
