"""Tiny offline builds of the three chat models: tokenizer, configs, media processors.

Tests and the CPU miniatures need a Qwen2.5-VL, a Qwen2-Audio and a plain Qwen2 LM that build
in a second with no download. Each one here is the *real* transformers class with a tiny config,
so every code path in `chat.py` (prompt layout, placeholder counts, M-RoPE, audio merge, KV-cache
sampling) is the one the 7B models run. Only the sizes and the tokenizer differ:

1. The tokenizer is a byte-level BPE trained here on a built-in corpus of the task texts, with
   the Qwen special tokens at ids 0..9 and the answer-format tags as single tokens (the real
   Qwen tokenizer splits tags into several pieces; nothing depends on that).
2. Audio is capped at `TINY_AUDIO_SECONDS` (Qwen2-Audio: 30 s). Qwen2-Audio's encoder requires
   the mel input padded to exactly 2 * max_source_positions frames, so the feature extractor's
   `chunk_length` and the encoder's `max_source_positions` are derived from the same number.
"""

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2AudioConfig,
    Qwen2Config,
    Qwen2_5_VLConfig,
    Qwen2VLImageProcessorPil,
    WhisperFeatureExtractor,
)

from rewards import HIR_TAGS

# The Qwen chat / media special tokens, in the roles the real checkpoints give them.
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
    "<|audio_bos|>", "<|audio_eos|>", "<|AUDIO|>",
)
FORMAT_TAGS = (
    "<thinking>", "</thinking>", "<answer>", "</answer>",
    "<think>", "</think>", "<reasons>", "</reasons>",
)
TINY_VOCAB_SIZE = 640
TINY_AUDIO_SECONDS = 2
TINY_MIN_PIXELS, TINY_MAX_PIXELS = 56 * 56, 112 * 112  # 4 to 16 image tokens per picture

CORPUS = (  # the task texts: prompts, answer formats, cues, numbers, punctuation
    "You are a helpful assistant.",
    "Is the face in this image real or fake? Output the thinking process in <thinking> "
    "</thinking> and the final answer in <answer> </answer> tags.",
    "Is this speech real or fake? Think first, list the reasons, then answer. "
    "Use <think> </think>, <reasons> </reasons> and <answer> </answer>.",
    "Assess whether the audio sample contains genuine human speech or synthesized speech.",
    "<thinking>The skin texture looks natural, the lighting is even and there is no paper "
    "edge.</thinking><answer>real</answer>",
    "<thinking>I see halftone dots, a reduced color gamut and a visible paper edge, so this is "
    "a print attack.</thinking><answer>fake</answer>",
    "<thinking>There is a moire pattern, a pixel grid, glare and a screen bezel: a replay "
    "attack.</thinking><answer>fake</answer>",
    "<thinking>The shading is flat and the edges are hard, which suggests a mask.</thinking>"
    "<answer>fake</answer>",
    "<think>The voice is non-robotic, the pace varies and I can hear natural breaths and "
    "pauses.</think><reasons>[]</reasons><answer>Real</answer>",
    "<think>The speech is monotone and too fast, with no pause and a strange accent.</think>"
    "<reasons>[UNNATURAL_PAUSES, MONOTONY_OF_STYLE]</reasons><answer>Fake</answer>",
    "<think>Odd intonation and incorrect word stress; the voice sounds strange.</think>"
    "<reasons>[STRANGE_INTONATION, INCORRECT_WORD_STRESS]</reasons><answer>Fake</answer>",
    "Final Answer: Real",
    "Final Answer: Fake",
    "The answer is real. The answer is fake. Real or fake? It is real. It is fake.",
    "A noise burst, a gain change of 6 dB and a time mask between 0.4 s and 1.1 s were added.",
    "I notice that the sound is clear, the rhythm is natural, and the speaker is a person.",
    "This image shows a bona fide face with natural color, texture and depth.",
    "This is a spoof: printed photo, screen replay, cut photo, 3D mask, makeup, wig, glasses, "
    "tattoo.",
    "0 1 2 3 4 5 6 7 8 9 10 20 30 50 100 1200 0.5 1.0 2.5",
    ", . : ; ! ? ' \" ( ) [ ] { } - + * / = % & # @ _ < >",
    "the a an of and or to in on is are was it this that with for as by not no but because so",
    "Detail: 8/10 Relevance: 7/10 Logic: 9/10 Helpfulness: 6/10",
)


def tiny_tokenizer(vocab_size=TINY_VOCAB_SIZE):
    """A byte-level BPE tokenizer with the Qwen special tokens, built offline in ~0.1 s.

    Byte level means any text encodes and decodes losslessly. Deterministic: the BPE trainer
    breaks ties by pair order, and the corpus is fixed.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(FORMAT_TAGS) - len(HIR_TAGS),
        special_tokens=list(SPECIAL_TOKENS),  # ids 0..9, marked special (skipped when decoding)
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(CORPUS) + [" ".join(HIR_TAGS)] * 3, trainer)
    # Tags as ordinary (non-special) single tokens: they survive skip_special_tokens decoding.
    tok.add_tokens([AddedToken(t, normalized=False) for t in FORMAT_TAGS + HIR_TAGS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )


def tiny_config(modality, tokenizer):
    """A config of the real model class for `modality`, token ids taken from `tokenizer`."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        rms_norm_eps=1e-6, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    if modality == "text":
        return Qwen2Config(**text)
    if modality == "image":
        # M-RoPE splits the rotary half-dim (16 / 2 = 8) into temporal/height/width sections,
        # as [16, 24, 24] splits 64 in the 7B model.
        rope = dict(rope_type="default", rope_theta=1e6, mrope_section=[2, 3, 3])
        vision = dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
            patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
            fullatt_block_indexes=[1],
        )
        return Qwen2_5_VLConfig(
            text_config=dict(text, rope_parameters=rope), vision_config=vision,
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"],
        )
    if modality == "audio":
        # 100 mel frames per second; conv stride 2 -> max_source_positions = 50 per second.
        audio = dict(
            model_type="qwen2_audio_encoder", d_model=32, encoder_layers=2,
            encoder_attention_heads=2, encoder_ffn_dim=64, num_mel_bins=128,
            max_source_positions=50 * TINY_AUDIO_SECONDS,
        )
        return Qwen2AudioConfig(
            audio_config=audio, text_config=dict(text, model_type="qwen2"),
            audio_token_index=ids["<|AUDIO|>"],
        )
    raise ValueError(f"unknown modality {modality!r}; expected 'image', 'audio' or 'text'")


def tiny_processor(modality):
    """The media processor the real checkpoints ship (None for text), with tiny sizes."""
    if modality == "image":
        return Qwen2VLImageProcessorPil(min_pixels=TINY_MIN_PIXELS, max_pixels=TINY_MAX_PIXELS)
    if modality == "audio":
        # Qwen2-Audio's extractor: 128 mel bins, 16 kHz, 10 ms hop; only chunk_length is smaller.
        return WhisperFeatureExtractor(
            feature_size=128, sampling_rate=16000, hop_length=160, n_fft=400,
            chunk_length=TINY_AUDIO_SECONDS,
        )
    return None
