"""Tiny, randomly initialised FLUX.1 Kontext and FLUX.2 [dev] pipelines of the real classes (offline builders).

Same conventions as `bench_lib.demo.tiny`: every tokenizer is trained here with `tokenizers` (there is no hub) and
wrapped in the real transformers class, weights are drawn under `seeded()`, and the pipeline is written with
`save_pretrained`, so that `DiffusionPipeline.from_pretrained(path)` resolves the real pipeline class.
The same call saves bitwise-identical files.

- `build_flux_kontext`: `FluxKontextPipeline` = `FluxTransformer2DModel` + `AutoencoderKL` (the real 8x
  spatial downsampling, widths 4/8, 4 latent channels) + `CLIPTextModel`/`CLIPTokenizer` (byte-level BPE with
  `</w>` word ends, as CLIP's) + `T5EncoderModel`/`T5Tokenizer` (a Unigram model, as T5's SentencePiece, with
  the 100 `<extra_id_*>` sentinels) + `FlowMatchEulerDiscreteScheduler`. About 0.9 MB.
- `build_flux2`: `Flux2Pipeline` = `Flux2Transformer2DModel` + `AutoencoderKLFlux2` (8x, widths 4/8, 4 latent
  channels, 16 after the 2x2 patchify) + `Mistral3ForConditionalGeneration` (Mistral text model with 3 layers,
  Pixtral vision tower) + `PixtralProcessor` as "tokenizer" (the class of FLUX.2-dev's `tokenizer/` folder)
  around a Tekken-like byte-level BPE with Mistral's special tokens in their real id order and a cut-down
  Mistral-Small-3.1 chat template. About 0.65 MB.

Call kwargs that keep a CPU call cheap (and are needed for the tiny text encoders):
- Kontext: `height`/`width`/`max_area` small (e.g. 64, 64, 64*64) and `_auto_resize=False` (otherwise the source is
  resized to a ~1 Mpx Kontext resolution); `max_sequence_length` <= 512 (T5 pads to it; default 512 works).
- FLUX.2: `text_encoder_out_layers=(1, 2, 3)` (the default (10, 20, 30) indexes hidden states the 3-layer text
  encoder does not have, and the transformer's `joint_attention_dim` is 3 x 16 = 48), and a `max_sequence_length`
  of at least ~48: the chat framing and the pipeline's system prompt take 31 tokens here ("make it red[/INST]" 4
  more), and the prompt is truncated from the right, so a shorter length cuts the user's prompt (at 31 or less
  every prompt gives the same embedding). The default 512 works too.
"""

from __future__ import annotations

import math
from collections import Counter
from itertools import pairwise
from pathlib import Path

from diffusers import (
    AutoencoderKL,
    AutoencoderKLFlux2,
    FlowMatchEulerDiscreteScheduler,
    Flux2Pipeline,
    Flux2Transformer2DModel,
    FluxKontextPipeline,
    FluxTransformer2DModel,
)
from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE as FLUX2_SYSTEM_MESSAGE
from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers.models import BPE
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    Mistral3Config,
    Mistral3ForConditionalGeneration,
    PixtralImageProcessor,
    PixtralProcessor,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
    TokenizersBackend,
)

from .tiny import padded_vocab_size, seeded

# Training text for the tokenizers below: edit instructions, and FLUX.2's system prompt verbatim, so that it
# tokenizes compactly and a small `max_sequence_length` still reaches the user's prompt.
FLUX_CORPUS = (
    "Make the sky red. Make it red. Turn the car blue and keep everything else unchanged.",
    "make it red. make the sky red. turn the car blue. make it winter. remove the cup.",
    "Remove the second cup from the left. Add a small dog next to the bench.",
    "Replace the apple with an orange. Change the color of the wall to green.",
    "Show what happens after the ice cube sits in the sun for one hour.",
    "Melt the chocolate bar. Light the candle. Drop the glass onto the stone floor.",
    "Make it winter: snow on the roof, bare trees, cold light and long shadows.",
    "Turn day into night, with street lamps on and stars in the sky.",
    "A painting of a squirrel eating a burger. A photo of a cat on a sofa, high quality.",
    "Change only the third book on the shelf; nothing else may change.",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG.",
    "Numbers and symbols: 0 1 2 3 4 5 6 7 8 9 10 100 3.5 50% #1 (a) [b] {c} <d> - + = * / , ; : ! ?",
    "把天空变成红色。",
    FLUX2_SYSTEM_MESSAGE,
)


# ---------------------------------------------------------------------------------------------- FLUX.1 Kontext

CLIP_MERGES = 500
CLIP_MAX_LENGTH = 77  # CLIP's context; the Flux pipelines pad the CLIP prompt to `tokenizer.model_max_length`
# CLIP's pre-tokenizer split (from transformers' CLIPTokenizer): the two specials, contractions, letter runs,
# single digits, punctuation runs; whitespace is dropped.
CLIP_SPLIT_REGEX = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"

T5_VOCAB_SIZE = 600  # pieces before the sentinels, specials included
T5_MAX_PIECE = 8  # longest piece, in characters
T5_EXTRA_IDS = 100


def build_clip_tokenizer() -> CLIPTokenizer:
    """A byte-level BPE with CLIP's normalizer, pre-tokenizer and `</w>` word ends, as the real `CLIPTokenizer`.

    Vocabulary in CLIP's layout: the 256 byte symbols, the same with `</w>`, one token per merge, then
    `<|startoftext|>` and `<|endoftext|>` (pad and unk are `<|endoftext|>` too, as in openai/clip-vit-large-patch14).
    The merges are learned by `_train_bpe` (`tokenizers`' trainer breaks ties differently from run to run once
    `end_of_word_suffix` is set, so its files would not be reproducible).
    """
    splitter = Tokenizer(BPE())
    splitter.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    splitter.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT_REGEX), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    words = Counter(
        word
        for text in FLUX_CORPUS
        for word, _ in splitter.pre_tokenizer.pre_tokenize_str(splitter.normalizer.normalize_str(text))
    )
    merges = _train_bpe(words, CLIP_MERGES, end_of_word="</w>")
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for token in [*symbols, *(symbol + "</w>" for symbol in symbols), *(a + b for a, b in merges)]:
        vocab.setdefault(token, len(vocab))
    vocab[CLIP_BOS] = len(vocab)
    vocab[CLIP_EOS] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CLIP_MAX_LENGTH)


def _train_bpe(words: Counter, num_merges: int, *, end_of_word: str = "") -> list[tuple[str, str]]:
    """Learn up to `num_merges` BPE merges from word counts: the most frequent adjacent pair first, ties broken
    by the pair itself, so the result depends on the counts only. `end_of_word` is appended to each last symbol."""
    segmented = {word: [*word[:-1], word[-1] + end_of_word] for word in words}
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter = Counter()
        for word, symbols in segmented.items():
            for pair in pairwise(symbols):
                pairs[pair] += words[word]
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        for word, symbols in segmented.items():
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            segmented[word] = merged
    return merges


def build_t5_tokenizer() -> T5Tokenizer:
    """A Unigram model (what T5's SentencePiece model is) in the real `T5Tokenizer`.

    Ids as in T5: `<pad>`=0, `</s>`=1, `<unk>`=2, the pieces, then `<extra_id_99>` ... `<extra_id_0>`. The pieces
    are every character of the corpus plus its most frequent substrings (within `▁`-prefixed words), scored by
    log frequency: a deterministic stand-in for SentencePiece's EM training (`tokenizers`' Unigram trainer gives
    scores that differ in the last bits from run to run). No precompiled normalizer (that needs the SentencePiece
    model); whitespace is split as in T5.
    """
    splitter = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    words = Counter(word for text in FLUX_CORPUS for word, _ in splitter.pre_tokenize_str(text))
    counts: Counter = Counter()
    for word, count in words.items():
        for start in range(len(word)):
            for end in range(start + 1, min(len(word), start + T5_MAX_PIECE) + 1):
                counts[word[start:end]] += count
    chars = {piece for piece in counts if len(piece) == 1}
    longer = sorted((piece for piece in counts if len(piece) > 1), key=lambda piece: (-counts[piece], piece))
    kept = [*chars, *longer[: T5_VOCAB_SIZE - 3 - len(chars)]]
    total = sum(counts[piece] for piece in kept)
    scored = sorted(((piece, math.log(counts[piece] / total)) for piece in kept), key=lambda item: (-item[1], item[0]))
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), *scored]
    pieces += [(f"<extra_id_{i}>", 0.0) for i in reversed(range(T5_EXTRA_IDS))]
    return T5Tokenizer(vocab=pieces, extra_ids=T5_EXTRA_IDS)


def build_flux_kontext(path: Path) -> None:
    """Save a tiny `FluxKontextPipeline` to `path` (~0.9 MB).

    Transformer and CLIP text model: diffusers' own Kontext test shapes, with `in_channels` = 4 latent channels x
    the 2x2 packing. VAE: the real 4-level topology (8x downsampling) at widths 4/8, so that a real-size source
    gives the real token count per pixel; diffusers' 1-level test VAE would make a 512x512 source 16x more tokens.
    """
    clip_tokenizer = build_clip_tokenizer()
    t5_tokenizer = build_t5_tokenizer()
    latent_channels = 4
    with seeded():
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=4 * latent_channels,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            guidance_embeds=True,  # FLUX.1 [dev] / Kontext [dev] are guidance-distilled
            axes_dims_rope=(4, 4, 8),
        )
    with seeded():
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(4, 8, 8, 8),
            layers_per_block=1,
            latent_channels=latent_channels,
            norm_num_groups=4,
            sample_size=1024,
            use_quant_conv=False,  # as FLUX.1's VAE
            use_post_quant_conv=False,
            shift_factor=0.1159,  # FLUX.1's values
            scaling_factor=0.3611,
        )
    with seeded():
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(clip_tokenizer),
                hidden_size=32,  # = the transformer's pooled_projection_dim (pooler output, no projection)
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=CLIP_MAX_LENGTH,
                hidden_act="quick_gelu",
                projection_dim=32,
                bos_token_id=clip_tokenizer.bos_token_id,
                eos_token_id=clip_tokenizer.eos_token_id,  # the pooled output is taken at the first eos
                pad_token_id=clip_tokenizer.pad_token_id,
            )
        )
    with seeded():
        text_encoder_2 = T5EncoderModel(
            T5Config(
                vocab_size=padded_vocab_size(t5_tokenizer),
                d_model=32,  # = the transformer's joint_attention_dim
                d_kv=8,
                d_ff=37,
                num_layers=2,
                num_heads=4,
                relative_attention_num_buckets=8,
                relative_attention_max_distance=32,
                feed_forward_proj="gated-gelu",  # as t5-v1_1
                tie_word_embeddings=False,
                is_encoder_decoder=True,
                pad_token_id=t5_tokenizer.pad_token_id,
                eos_token_id=t5_tokenizer.eos_token_id,
                decoder_start_token_id=t5_tokenizer.pad_token_id,
            )
        )
    pipeline = FluxKontextPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(
            shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15
        ),  # FLUX.1's scheduler_config
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
        image_encoder=None,
        feature_extractor=None,
    )
    pipeline.save_pretrained(path)


# ------------------------------------------------------------------------------------------------ FLUX.2 [dev]

MISTRAL_MERGES = 1000
# Mistral's Tekken pre-tokenizer split (the corrected pattern transformers applies with `fix_mistral_regex`).
TEKKEN_SPLIT_REGEX = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# The first 20 control tokens of Mistral-Small-3.1's Tekken vocabulary, at their real ids 0..19
# (the real one then has `<SPECIAL_20>` ... `<SPECIAL_999>` before the byte-level BPE).
MISTRAL_SPECIAL_TOKENS = (
    "<unk>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
    "[TOOL_CALLS]",
    "[IMG]",
    "<pad>",
    "[IMG_BREAK]",
    "[IMG_END]",
    "[PREFIX]",
    "[MIDDLE]",
    "[SUFFIX]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
)
# Mistral-Small-3.1's chat template, cut down to what Flux2Pipeline sends (a system message, then user turns of
# text and image blocks) plus assistant turns; no default system prompt with the date.
MISTRAL_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- if messages[0]['content'] is string %}{%- set system_message = messages[0]['content'] %}"
    "{%- else %}{%- set system_message = messages[0]['content'][0]['text'] %}{%- endif %}"
    "{{- '[SYSTEM_PROMPT]' + system_message + '[/SYSTEM_PROMPT]' }}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{%- for message in loop_messages %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if message['content'] is string %}{{- '[INST]' + message['content'] + '[/INST]' }}"
    "{%- else %}{{- '[INST]' }}{%- for block in message['content'] %}"
    "{%- if block['type'] == 'text' %}{{- block['text'] }}"
    "{%- elif block['type'] in ['image', 'image_url'] %}{{- '[IMG]' }}"
    "{%- endif %}{%- endfor %}{{- '[/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{%- if message['content'] is string %}{{- message['content'] + eos_token }}"
    "{%- else %}{{- message['content'][0]['text'] + eos_token }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
)
MISTRAL_TEXT_LAYERS = 3  # call the pipeline with text_encoder_out_layers=(1, 2, 3)
MISTRAL_HIDDEN = 16
PIXTRAL_PATCH = 14
PIXTRAL_IMAGE_SIZE = 112  # longest edge the image processor resizes to (8 x 8 patches); the real one 1540


def build_mistral_tokenizer() -> TokenizersBackend:
    """A Tekken-like byte-level BPE: the Tekken split regex, byte-level symbols, Mistral's control tokens at their
    real ids, `<s>` prepended. Wrapped as `TokenizersBackend`, the class transformers 5 resolves for Mistral
    tokenizers when `mistral_common` is not installed (the real repo names `LlamaTokenizerFast`)."""
    bpe = Tokenizer(BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(TEKKEN_SPLIT_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=len(MISTRAL_SPECIAL_TOKENS) + 256 + MISTRAL_MERGES,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(MISTRAL_SPECIAL_TOKENS),  # ids 0..19, in this order
        show_progress=False,
    )
    bpe.train_from_iterator(FLUX_CORPUS, trainer)
    bpe.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", MISTRAL_SPECIAL_TOKENS.index("<s>"))]
    )
    return TokenizersBackend(
        tokenizer_object=bpe,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=131072,
    )


def build_flux2(path: Path) -> None:
    """Save a tiny `Flux2Pipeline` to `path` (~0.65 MB).

    Transformer: diffusers' own FLUX.2 test shapes, with `in_channels` = 4 latent channels x the 2x2 patchify and
    `joint_attention_dim` = 3 stacked text layers x 16. VAE: the real 4-level topology (8x) at widths 4/8.
    Text encoder: a real `Mistral3ForConditionalGeneration` (3-layer Mistral text model, 1-layer Pixtral).
    """
    tokenizer = build_mistral_tokenizer()
    latent_channels = 4
    with seeded():
        transformer = Flux2Transformer2DModel(
            patch_size=1,
            in_channels=4 * latent_channels,  # the VAE latents are patchified 2x2 before packing
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=MISTRAL_TEXT_LAYERS * MISTRAL_HIDDEN,  # the pipeline stacks 3 layers' states
            timestep_guidance_channels=256,
            axes_dims_rope=(4, 4, 4, 4),  # sums to attention_head_dim
        )
    with seeded():
        vae = AutoencoderKLFlux2(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(4, 8, 8, 8),
            layers_per_block=1,
            latent_channels=latent_channels,
            norm_num_groups=4,
            sample_size=1024,
        )
    ids = tokenizer.convert_tokens_to_ids
    with seeded():
        text_encoder = Mistral3ForConditionalGeneration(
            Mistral3Config(
                text_config={
                    "model_type": "mistral",
                    "vocab_size": padded_vocab_size(tokenizer),
                    "hidden_size": MISTRAL_HIDDEN,
                    "intermediate_size": 32,
                    "num_hidden_layers": MISTRAL_TEXT_LAYERS,
                    "num_attention_heads": 2,
                    "num_key_value_heads": 1,
                    "head_dim": 8,
                    "max_position_embeddings": 4096,
                    "rms_norm_eps": 1e-5,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 1e9},
                    "sliding_window": None,
                    "bos_token_id": ids("<s>"),
                    "eos_token_id": ids("</s>"),
                    "pad_token_id": ids("<pad>"),
                },
                vision_config={
                    "model_type": "pixtral",
                    "hidden_size": 16,
                    "intermediate_size": 32,
                    "num_hidden_layers": 1,
                    "num_attention_heads": 2,
                    "image_size": PIXTRAL_IMAGE_SIZE,
                    "patch_size": PIXTRAL_PATCH,
                    "num_channels": 3,
                },
                image_token_index=ids("[IMG]"),
                spatial_merge_size=2,
                vision_feature_layer=-1,
                projector_hidden_act="gelu",
                multimodal_projector_bias=False,
                tie_word_embeddings=False,
            )
        )
    processor = PixtralProcessor(
        image_processor=PixtralImageProcessor(
            size={"longest_edge": PIXTRAL_IMAGE_SIZE},
            patch_size={"height": PIXTRAL_PATCH, "width": PIXTRAL_PATCH},
            image_mean=[0.48145466, 0.4578275, 0.40821073],
            image_std=[0.26862954, 0.26130258, 0.27577711],
        ),
        tokenizer=tokenizer,
        patch_size=PIXTRAL_PATCH,
        spatial_merge_size=2,
        chat_template=MISTRAL_CHAT_TEMPLATE,
    )
    pipeline = Flux2Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=processor,
        transformer=transformer,
    )
    pipeline.save_pretrained(path)
