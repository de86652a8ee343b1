"""Tiny, randomly initialised models of the real classes, for the offline default recipe and the tests.

The harness must run end to end with no network and no GPU: `configs/smoke.yaml` and the test suite name
`tiny:<name>` instead of a hub id. `bench_lib.models.resolve_model` builds such a model once into a local
cache folder (with the builder its `TINY_MODELS` table names: this package is imported only then) and returns
its path, and production code then loads it through the normal `from_pretrained(path)`. Because the
classes are the real ones (`QwenImageEditPipeline`, `Qwen2_5_VLForConditionalGeneration`,
`Qwen3VLForConditionalGeneration`, their processors and a real `Qwen2Tokenizer`), the tests exercise the same
code paths as a real run; only the widths are tiny and the weights random (so the outputs are noise).

There is no hub to fetch a tokenizer from, so `build_tokenizer` trains a small byte-level BPE with Qwen2's
pre-tokenizer (numbers split into single digits, as in the real one) and adds the real Qwen special tokens.

Names: the editors `tiny:qwen-image-edit`, `tiny:qwen-image-edit-plus` (~4 MB), `tiny:flux-kontext` and
`tiny:flux2` (< 1 MB, built in bench_lib/demo/tiny_flux.py), and the judges (~1 MB) `tiny:qwen3-vl` (the
default), `tiny:qwen3-vl-moe` and `tiny:qwen2.5-vl`.
Cache (bench_lib.models): `$BENCH_TINY_CACHE`, else `~/.cache/bench_lib/tiny`, with one
`<name>-<TINY_BUILD_VERSION>/` folder per model. Builders are deterministic: the same call saves
bitwise-identical files.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImageEditPipeline,
    QwenImageEditPlusPipeline,
    QwenImageTransformer2DModel,
)
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import (
    GenerationConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMoeConfig,
    Qwen3VLMoeForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)

from ..models import build_tiny

SEED = 0
NUM_MERGES = 1000
VOCAB_MULTIPLE = 64

# Copied from transformers' `models/qwen2/tokenization_qwen2.py`. `\p{N}` matches one digit at a time,
# so "10" pre-tokenizes to "1", "0" and no merge can join digits.
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# The special tokens of the real Qwen2.5-VL / Qwen3-VL tokenizers, in their real id order
# (151643 ... 151656 there; right after the BPE vocabulary here).
PAD_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = (
    PAD_TOKEN,
    "<|im_start|>",
    EOS_TOKEN,
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Training text for the BPE: words that appear in edit instructions, judge rubrics and chat prompts.
TOKENIZER_CORPUS = (
    "Make the sky red. Turn the car blue and keep everything else unchanged.",
    "Remove the second cup from the left. Add a small dog next to the bench.",
    "Replace the apple with an orange. Change the color of the wall to green.",
    "Show what happens after the ice cube sits in the sun for one hour.",
    "Melt the chocolate bar. Light the candle. Drop the glass onto the stone floor.",
    "Make it winter: snow on the roof, bare trees, cold light and long shadows.",
    "Turn day into night, with street lamps on and stars in the sky.",
    "The man is greeting his teacher in Japan; show a polite bow.",
    "Show the effect of the storm, not the storm itself: fallen branches and puddles.",
    "Change only the third book on the shelf; nothing else may change.",
    # Qwen-Image-Edit's system prompt, verbatim: it then tokenizes, chat framing included, to 64 tokens as
    # with the real tokenizer, so the pipelines' `prompt_template_encode_start_idx = 64` drops exactly it.
    "system\nDescribe the key features of the input image (color, shape, size, texture, objects, background),"
    " then explain how the user's text instruction should alter or modify the image. Generate a new image that"
    " meets the user's requirements while maintaining consistency with the original input where appropriate.",
    "user\nassistant\n",
    "You are a strict judge of image edits. Look at the source image and the edited image.",
    "Rate how well the edit follows the instruction on a scale from 0 to 10.",
    "Score 0 if the edit is wrong or missing, 5 if partly correct, 10 if perfect.",
    "Consider physics: gravity, heat, melting, burning, reflection, refraction, friction and balance.",
    "Consider the environment: weather, season, time of day, climate, lighting and shadows.",
    "Consider social conventions, culture, human behaviour, gestures and facial expression.",
    "Consider cause and effect: the image should show the result of the stated cause.",
    "Consider references: exactly the referred object changes, the rest is preserved.",
    "Answer with a single number. Score: 7. Score: 3. Score: 10. The answer is 8/10.",
    "Is the result realistic, consistent and of high visual quality? Yes or no.",
    "The system sets the rules, the user asks and the assistant answers in a short reply.",
    "Picture 1: the source. Picture 2: the edited result. Picture 3: the reference.",
    "把天空变成红色。把汽车变成蓝色，其他保持不变。",
    "删除左边第二个杯子。在长椅旁边加一只小狗。",
    "把冰块放在太阳下一个小时后会发生什么？融化的巧克力，点燃的蜡烛。",
    "把白天变成夜晚，路灯亮着，天上有星星。冬天的屋顶上有雪。",
    "请根据指令评价编辑后的图像，给出0到10的分数。只回答一个数字。",
    "物理、环境、社会、因果、指代。图像质量高，结果真实，一致。",
    "描述输入图像的关键特征（颜色、形状、大小、纹理、物体、背景）。",
    "Emoji: 🔥 ❄️ 🌧️ ☀️ 🌙 ⭐ 🐶 🐱 🍎 🍊 🚗 🏠 🌳 ☕ 🕯️ 🎉 👍 👎 ✅ ❌ 😀 😢 🙇",
    "Numbers and symbols: 0 1 2 3 4 5 6 7 8 9 10 100 3.5 50% #1 (a) [b] {c} <d> - + = * / , ; : ! ?",
)

# Qwen3-VL's chat template, cut down to what the judge sends: no default system prompt, content is a
# string or a list of {"type": "image"[, "image": ...]} / {"type": "text", "text": ...} items.
JUDGE_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for item in message['content'] %}"
    "{%- if item['type'] == 'image' %}{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif item['type'] == 'text' %}{{- item['text'] }}"
    "{%- endif %}{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Qwen2.5-VL's template differs in one way that matters: a default system prompt when there is none.
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}" + JUDGE_CHAT_TEMPLATE
)


def build_tokenizer() -> Qwen2Tokenizer:
    """A byte-level BPE trained on `TOKENIZER_CORPUS`, wrapped as the real `Qwen2Tokenizer`."""
    bpe = Tokenizer(BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=256 + NUM_MERGES,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(TOKENIZER_CORPUS, trainer)
    trained = json.loads(bpe.to_str())["model"]  # the Python API exposes the learned merges only here
    vocab = trained["vocab"]
    for token in SPECIAL_TOKENS:  # appended here so that their ids follow the real order
        vocab[token] = len(vocab)
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=[tuple(merge) for merge in trained["merges"]],
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=list(SPECIAL_TOKENS[1:]),  # as in the real tokenizer_config.json
    )


def build_editor(path: Path, *, pipeline_cls: type = QwenImageEditPipeline) -> None:
    """Save a tiny Qwen-Image-Edit pipeline (of `pipeline_cls`) to `path`.

    Transformer: diffusers' own test config. VAE: the real topology (8x spatial downsampling) with tiny
    widths (base 4 channels); diffusers' 4x test VAE makes one CPU edit take 30-70 s, because the edit
    pipelines always encode the source at ~1 Mpx.
    """
    tokenizer = build_tokenizer()
    with seeded():
        transformer = QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=16,
            out_channels=4,
            num_layers=2,
            attention_head_dim=16,
            num_attention_heads=3,
            joint_attention_dim=16,
            axes_dims_rope=(8, 4, 4),
        )
    with seeded():
        vae = AutoencoderKLQwenImage(
            base_dim=4,  # the edit pipelines encode every source at ~1 Mpx: width 4 costs ~2.3 s/edit on CPU, 8 ~4 s
            z_dim=4,
            dim_mult=[1, 2, 4, 4],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
            latents_mean=[0.0] * 4,
            latents_std=[1.0] * 4,
        )
    with seeded():
        text_encoder = Qwen2_5_VLForConditionalGeneration(_editor_text_encoder_config(tokenizer))
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),  # transformers >= 5.4 expects one in every Qwen-VL processor
    )
    pipeline = pipeline_cls(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        processor=processor,
        transformer=transformer,
    )
    pipeline.save_pretrained(path)


def _editor_text_encoder_config(tokenizer: Qwen2Tokenizer) -> Qwen2_5_VLConfig:
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": padded_vocab_size(tokenizer),
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "rope_parameters": {"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 1e6},
            "bos_token_id": tokenizer.pad_token_id,  # Qwen's bos is <|endoftext|>, its pad token
            "eos_token_id": tokenizer.eos_token_id,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": 16,
            "patch_size": 14,
            "spatial_merge_size": 2,
        },
        **_vision_token_ids(tokenizer),
    )


def build_judge(path: Path, *, moe: bool = False) -> None:
    """Save a tiny Qwen3-VL judge (dense, or MoE with `moe=True`; model, processor, generation config).

    `initializer_range=0.2` instead of the default 0.02: with small weights the random judge emits the same
    token for every input, which would make tests that compare outputs across inputs vacuous.
    """
    tokenizer = build_tokenizer()
    with seeded():
        if moe:
            model = Qwen3VLMoeForConditionalGeneration(_judge_config(tokenizer, moe=True))
        else:
            model = Qwen3VLForConditionalGeneration(_judge_config(tokenizer))
    model.generation_config = _judge_generation_config(tokenizer)
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            patch_size=16,
            min_pixels=64 * 64,
            max_pixels=128 * 128,
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        ),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(),  # transformers >= 5.4 expects one in every Qwen-VL processor
        chat_template=JUDGE_CHAT_TEMPLATE,
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)


def build_qwen2_5_vl_judge(path: Path) -> None:
    """Save a tiny Qwen2.5-VL judge: the previous generation's class, processor (patch 14) and chat template."""
    tokenizer = build_tokenizer()
    config = _editor_text_encoder_config(tokenizer)
    config.text_config.hidden_size = 64
    config.text_config.intermediate_size = 128
    config.text_config.num_attention_heads = 4
    config.text_config.num_key_value_heads = 2
    config.text_config.rope_parameters = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e6}
    config.text_config.initializer_range = 0.2
    config.vision_config.out_hidden_size = 64
    config.vision_config.initializer_range = 0.2
    config.initializer_range = 0.2
    with seeded():
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = _judge_generation_config(tokenizer)
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)


def _judge_generation_config(tokenizer: Qwen2Tokenizer) -> GenerationConfig:
    return GenerationConfig(
        bos_token_id=tokenizer.pad_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id],
    )


def _judge_config(tokenizer: Qwen2Tokenizer, *, moe: bool = False) -> Qwen3VLConfig | Qwen3VLMoeConfig:
    text = {
        "vocab_size": padded_vocab_size(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "rope_parameters": {
            "rope_type": "default",
            "mrope_section": [4, 2, 2],
            "mrope_interleaved": True,
            "rope_theta": 5e6,
        },
        "initializer_range": 0.2,
    }
    if moe:  # 4 experts, 2 per token, every layer sparse
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1)
    return (Qwen3VLMoeConfig if moe else Qwen3VLConfig)(
        text_config=text,
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "out_hidden_size": 64,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0, 1],
            "initializer_range": 0.2,
        },
        tie_word_embeddings=True,
        **_vision_token_ids(tokenizer),
    )


def _vision_token_ids(tokenizer: Qwen2Tokenizer) -> dict[str, int]:
    ids = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
    }


def padded_vocab_size(tokenizer: Qwen2Tokenizer) -> int:
    return math.ceil(len(tokenizer) / VOCAB_MULTIPLE) * VOCAB_MULTIPLE


@contextmanager
def seeded():
    """A fixed torch seed for reproducible weights, without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        yield


def build_editor_plus(path: Path) -> None:
    build_editor(path, pipeline_cls=QwenImageEditPlusPipeline)


def build_moe_judge(path: Path) -> None:
    build_judge(path, moe=True)


def build_lora(path: Path, *, seed: int, base: str = "qwen-image-edit", rank: int = 4,
               strength: float = 1.0) -> Path:
    """Save a LoRA adapter for tiny model `base` (its transformer's attention projections) in diffusers' own
    LoRA format (`<path>/pytorch_lora_weights.safetensors`), with random weights drawn from `seed`: a
    stand-in for a fine-tuning checkpoint, loaded by `load_lora_weights` like a real one. Deterministic.
    `strength` scales the adapter's effect (its B matrices): at 1 the random adapter barely moves an edit's pixels;
    the demo sweeps use 30, which changes edits visibly, and 1e30, which overflows float32 (a diverged checkpoint:
    every edit non-finite)."""
    import diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    if not math.isfinite(strength):
        raise ValueError(f"strength must be a finite number, got {strength}")
    folder = Path(build_tiny(base))
    pipeline_cls = getattr(diffusers, json.loads((folder / "model_index.json").read_text())["_class_name"])
    transformer_cls = getattr(diffusers,
                              json.loads((folder / "transformer" / "config.json").read_text())["_class_name"])
    transformer = transformer_cls.from_pretrained(folder, subfolder="transformer")
    # Both LoRA matrices random (peft's default makes B zero: an adapter that changes nothing).
    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                        target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer.add_adapter(config)
    layers = get_peft_model_state_dict(transformer)
    if strength != 1.0:
        layers = {k: v * strength if ".lora_B." in k else v for k, v in layers.items()}
    path.mkdir(parents=True, exist_ok=True)
    pipeline_cls.save_lora_weights(path, transformer_lora_layers=layers)
    return path / "pytorch_lora_weights.safetensors"
