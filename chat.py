"""ChatPolicy: the policy of the two chat routes, one class for three model families.

    "image": Qwen2.5-VL  (Qwen2_5_VLForConditionalGeneration)  face paper (Jiang, Li et al.)
    "audio": Qwen2-Audio (Qwen2AudioForConditionalGeneration)  HIR-SDD (Dvirniak et al.)
    "text":  a plain Qwen2 causal LM (AutoModelForCausalLM)     the benchmark

What one GRPO step asks of it (DESIGN.md, "the data path of one GRPO step"):

    batch   = policy.encode_prompts(media, questions)            # B left-padded prompts
    rollout = policy.generate(batch, N, max_new_tokens, T, seed=s) # B*N completions (sampling.py)
    rewards = reward_fn(rollout.texts, ...)                       # rewards.py
    logps   = policy.completion_logps(rollout, T)                 # log pi_theta(o_t | q, o_<t)
    ref     = policy.reference_logps(rollout, T)                  # LoRA: adapters off
    loss, stats = grpo_loss(logps, advantages, rollout.completion_mask, ref_logps=ref, ...)

Sampling and scoring run each distinct prompt once and its N completions on top of its KV
cache: the decode loop and the shared prefix live in sampling.py, explained step by step there.
HF `generate` (sampler="hf") and full prompt + completion rows (shared_prefix=False) stay
selectable, for comparison; tests/test_sampling.py holds one against the other.

The modalities differ only in `_media_inputs` (processor call + the number k of placeholder
tokens per item) and `_placeholder` (the prompt text for k tokens); the image model also takes
token-type ids for its 3-D positions. Everything else is one code path.

Decisions and pitfalls, numbered:
1. Prompts are laid out here, not by the stock processors (Qwen2.5-VL's needs torchvision).
   k follows the encoders' arithmetic: an image gives t*h*w patches of 14 px and the merger
   fuses merge x merge of them per token, k = prod(grid_thw) // merge**2; audio gives L mel
   frames, conv2 (stride 2) then an average pool (2) leave k = ((L-1)//2 + 1 - 2)//2 + 1.
2. The sampling distribution is softmax(logits / T), optionally truncated by top-k / top-p;
   the log-probs are of the full softmax(logits / T). For the "hf" sampler the hub's
   generation_config (Qwen2.5-VL ships top_k=1, top_p=0.001, repetition_penalty=1.05) is
   replaced, and top_k=0 is passed because transformers otherwise fills in its global default
   top_k=50. Either would silently bias the ratio pi / pi_old.
3. Media placeholder tokens (<|image_pad|>, <|video_pad|>, <|AUDIO|>) are never sampled: the
   scoring forward would take them for media slots. A random tiny model does sample them, so
   sampling suppresses them and completion_logps gives them -inf too: one distribution
   (sampling.scaled_logits serves both).
4. Prompts are left-padded so all prompts end in one column and new tokens line up. Positions
   count real tokens only (attention_mask.cumsum - 1, as generate does), so padding changes no
   log-prob; the image model derives its 3-D M-RoPE positions from token types + grid + mask.
5. Sampling is seeded: the decode loop draws from an explicit torch.Generator seeded with
   `seed` (HF generate draws from the global RNG, which is forked and seeded): same seed, same
   samples, and the caller's RNG stream is left untouched.
6. The completion mask keeps tokens up to and including the first EOS (<|im_end|> or
   <|endoftext|>), found by position. Qwen pads with <|endoftext|>, itself an EOS, so a mask
   from `token != pad` would drop the real EOS of every such completion.
7. Only the T positions that predict completion tokens go through lm_head (V = 152k for Qwen):
   the backbone's hidden states are sliced first.
8. The media encoders run once per distinct prompt, not once per sampled row: the decode loop
   and the shared-prefix scoring prefill the B distinct prompts only. On the unshared path
   `completion_logps` encodes the B images once per call and hands each row its prompt's
   features (mm_encoder_outputs); Qwen2-Audio takes no precomputed features (transformers
   5.24), so there its audio encoder runs once per row.
"""

import copy
import os
from dataclasses import dataclass

import numpy as np
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    WhisperFeatureExtractor,
)

import sampling
from sampling import take_rows
from data import load_image
from lora import (
    CONFIG_NAME, TARGET_MODULES, adapters_disabled, apply_lora, load_adapter, lora_modules,
    read_adapter_config, save_adapter,
)
from tiny import tiny_config, tiny_processor, tiny_tokenizer

MODEL_CLASSES = dict(
    image=Qwen2_5_VLForConditionalGeneration,
    audio=Qwen2AudioForConditionalGeneration,
    text=AutoModelForCausalLM,
)
PROCESSOR_CLASSES = dict(image=Qwen2VLImageProcessorPil, audio=WhisperFeatureExtractor)
MEDIA_TOWERS = ("visual", "audio_tower")  # module names of the media encoders
MEDIA_TOKEN_IDS = ("image_token_id", "video_token_id", "audio_token_id")  # config attributes
EOS_TOKENS = ("<|im_end|>", "<|endoftext|>")
DEFAULT_SYSTEM = "You are a helpful assistant."  # the Qwen chat templates' default
LORA_OPTIONS = ("r", "alpha", "dropout", "targets", "seed")


@dataclass
class Rollout:
    """N sampled completions for each of B prompts; row b*N + i is sample i of prompt b."""

    batch: dict                    # prompt inputs, each prompt repeated N times: (B*N, P), media
    completion_ids: torch.Tensor   # (B*N, T)  padded after the first EOS
    completion_mask: torch.Tensor  # (B*N, T)  1 up to and including the first EOS
    texts: list                    # B*N strings: tokens before the first EOS, specials skipped
    num_generations: int = 1
    sample_logps: torch.Tensor | None = None  # (B*N, T) each token's sampling log-prob ("loop")


def completion_mask(ids, eos_ids):
    """1 for tokens up to and including the first EOS, 0 after it; all 1 when there is none.

    Built from the position of the first EOS (pitfall 6), so pad == EOS is harmless.
    """
    T = ids.shape[1]
    is_eos = torch.isin(ids, torch.as_tensor(eos_ids, device=ids.device))  # (R, T)
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), T)  # (R,) argmax: first hit
    return (torch.arange(T, device=ids.device)[None] <= first[:, None]).long()


def image_token_count(grid_thw, merge_size):
    """k = t * h * w / merge**2 tokens per image (pitfall 1); grid_thw (n, 3) -> (n,)."""
    return grid_thw.prod(-1) // merge_size**2


def audio_token_count(mel_frames):
    """k = ((L - 1) // 2 + 1 - 2) // 2 + 1 tokens from L mel frames (pitfall 1)."""
    after_conv = (mel_frames - 1) // 2 + 1  # conv2: kernel 3, stride 2, padding 1
    return (after_conv - 2) // 2 + 1  # AvgPool1d(2, stride 2)


def _media_inputs(processor, modality, media_list):
    """(processor tensors for the batch, k placeholder tokens per item) for one modality."""
    if modality == "text":
        if any(m is not None for m in media_list):
            raise ValueError("modality 'text' takes no media; pass None for each prompt")
        return {}, [0] * len(media_list)
    if modality == "image":  # paths are read here (16-bit scaled, bad files named)
        images = [load_image(m) if isinstance(m, (str, os.PathLike)) else m for m in media_list]
        out = processor(images=images, return_tensors="pt")
        k = image_token_count(out["image_grid_thw"], processor.merge_size)
        return {key: out[key] for key in ("pixel_values", "image_grid_thw")}, k.tolist()
    clips = [np.asarray(a, dtype=np.float32) for a in media_list]
    if any(c.ndim != 1 for c in clips):
        raise ValueError("audio must be 1-D mono waveforms at the feature extractor's rate")
    # Clips longer than chunk_length are cut (30 s for Qwen2-Audio, as in HIR-SDD); the encoder
    # takes exactly chunk_length of mel frames, so shorter ones are padded and masked.
    out = processor(clips, sampling_rate=processor.sampling_rate, padding="max_length",
                    return_attention_mask=True, return_tensors="pt")
    k = audio_token_count(out["attention_mask"].sum(-1))
    if (k < 2).any():
        # One <|AUDIO|> token would send Qwen2-Audio down its legacy merge path (it looks for
        # two adjacent audio tokens to tell expanded prompts apart).
        raise ValueError("audio clip shorter than 70 ms: fewer than 2 audio tokens")
    media = dict(input_features=out["input_features"], feature_attention_mask=out["attention_mask"])
    return media, k.tolist()


def _placeholder(modality, k):
    """The user-turn text for one media item of k tokens, as Qwen's chat templates write it."""
    if modality == "image":
        return "<|vision_start|>" + "<|image_pad|>" * k + "<|vision_end|>"
    if modality == "audio":
        return "Audio 1: <|audio_bos|>" + "<|AUDIO|>" * k + "<|audio_eos|>\n"
    return ""


def _prepare(model, lora=None, adapter=None, gradient_checkpointing=False, freeze_vision=True):
    """LoRA (fresh from a dict, or loaded from an adapter folder), freezing, checkpointing."""
    if adapter is not None:
        load_adapter(model, adapter)
    elif lora is not None:
        if set(lora) - set(LORA_OPTIONS):
            raise ValueError(f"unknown LoRA options {sorted(set(lora) - set(LORA_OPTIONS))}; "
                             f"expected {LORA_OPTIONS}")
        apply_lora(model, lora.get("r", 8), lora.get("alpha", 16), lora.get("dropout", 0.0),
                   tuple(lora.get("targets", TARGET_MODULES)), seed=lora.get("seed", 0))
    elif freeze_vision:  # full fine-tuning: the media encoder stays as pre-trained
        for name, p in model.named_parameters():
            if any(part in MEDIA_TOWERS for part in name.split(".")):
                p.requires_grad_(False)
    if gradient_checkpointing:
        # Non-reentrant also works with frozen embeddings (LoRA). Checkpointing acts only in
        # train mode with grad on, so generate (eval, no grad) keeps its KV cache.
        model.activation_checkpointing_enable({"use_reentrant": False})
    return model


class ChatPolicy:
    """A chat model + tokenizer + media processor, driven by the GRPO and SFT loops."""

    def __init__(self, model, tokenizer, processor, modality, name_or_path=None,
                 system=DEFAULT_SYSTEM):
        if modality not in MODEL_CLASSES:
            raise ValueError(f"unknown modality {modality!r}; expected {sorted(MODEL_CLASSES)}")
        self.model, self.tokenizer, self.processor = model, tokenizer, processor
        self.modality, self.name_or_path, self.system = modality, name_or_path, system
        vocab = tokenizer.get_vocab()
        if "<|im_end|>" not in vocab:
            raise ValueError(f"{name_or_path}: tokenizer lacks <|im_end|>; not a Qwen chat model")
        self.im_end_id = vocab["<|im_end|>"]
        self.eos_ids = [vocab[t] for t in EOS_TOKENS if t in vocab]
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in self.eos_ids:
            self.eos_ids.append(tokenizer.eos_token_id)
        self.pad_id = tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.eos_ids[-1]
        cfg = model.config
        self.suppressed_ids = [getattr(cfg, a) for a in MEDIA_TOKEN_IDS
                               if getattr(cfg, a, None) is not None]  # pitfall 3
        self.media_token_id = {"image": getattr(cfg, "image_token_id", None),
                               "audio": getattr(cfg, "audio_token_id", None)}.get(modality)
        if modality == "audio":
            frames = 2 * cfg.audio_config.max_source_positions
            if processor.nb_max_frames != frames:
                raise ValueError(f"{name_or_path}: the feature extractor gives "
                                 f"{processor.nb_max_frames} mel frames; the encoder takes "
                                 f"{frames}")
        # Pitfall 2: the policy owns its sampling distribution; no hub default sneaks in.
        model.generation_config = GenerationConfig(eos_token_id=self.eos_ids,
                                                   pad_token_id=self.pad_id)

    # ------------------------------------------------------------ construction and saving
    @classmethod
    def tiny(cls, modality, seed=0, **setup):
        """A randomly initialised tiny model of the real class (tiny.py); `setup`: lora=...,
        gradient_checkpointing=..., freeze_vision=... as in from_pretrained."""
        tokenizer = tiny_tokenizer()
        config = tiny_config(modality, tokenizer)
        # HF initialises weights from the global RNG (no generator argument): fork and seed it.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if modality == "text":
                model = AutoModelForCausalLM.from_config(config)
            else:
                model = MODEL_CLASSES[modality](config)
        return cls(_prepare(model, **setup), tokenizer, tiny_processor(modality), modality)

    @classmethod
    def from_pretrained(cls, name_or_path, modality, dtype=None, lora=None,
                        gradient_checkpointing=False, freeze_vision=True, min_pixels=None,
                        max_pixels=None, device=None, system=DEFAULT_SYSTEM):
        """Model, tokenizer and processor from one hub id or folder
        (e.g. "Qwen/Qwen2.5-VL-7B-Instruct", "Qwen/Qwen2-Audio-7B-Instruct").

        A folder that `save` wrote with LoRA holds only the adapter: the base it names is
        loaded, then the adapter. `lora` = dict(r, alpha, dropout, targets, seed) adds fresh
        adapters. min/max_pixels cap the image area (one image token per 28 x 28 pixels).
        """
        adapter = None
        if os.path.isfile(os.path.join(str(name_or_path), CONFIG_NAME)):
            adapter = name_or_path
            name_or_path = read_adapter_config(adapter)["base_model_name_or_path"]
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        kw = {} if dtype is None else {"dtype": dtype}  # None: transformers' default
        model = MODEL_CLASSES[modality].from_pretrained(name_or_path, **kw)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        processor = None
        if modality == "image":
            caps = dict(min_pixels=min_pixels, max_pixels=max_pixels)
            caps = {k: v for k, v in caps.items() if v is not None}
            processor = Qwen2VLImageProcessorPil.from_pretrained(name_or_path, **caps)
        elif modality == "audio":
            processor = WhisperFeatureExtractor.from_pretrained(name_or_path)
        if device is not None:
            model.to(device)
        model = _prepare(model, lora, adapter, gradient_checkpointing, freeze_vision)
        return cls(model, tokenizer, processor, modality, name_or_path, system)

    def save(self, folder):
        """LoRA: the adapter alone (peft's layout). Full fine-tune: model, tokenizer, processor."""
        if lora_modules(self.model):
            if self.name_or_path is None:
                raise ValueError("no base folder to name in adapter_config.json: save the base "
                                 "model first and load it with from_pretrained")
            save_adapter(self.model, folder, self.name_or_path)
            return
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        if self.processor is not None:
            self.processor.save_pretrained(folder)

    def frozen_copy(self):
        """A detached copy of the current weights: the GRPO reference for full fine-tuning."""
        model = copy.deepcopy(self.model).eval().requires_grad_(False)
        return ChatPolicy(model, self.tokenizer, self.processor, self.modality,
                          self.name_or_path, self.system)

    @property
    def device(self):
        return next(self.model.parameters()).device

    # ------------------------------------------------------------ prompts and targets
    def prompt_text(self, question, media_text="", system=None):
        """The Qwen chat layout: system turn, user turn (media first), open assistant turn."""
        system = self.system if system is None else system
        return (f"<|im_start|>system\n{system}<|im_end|>\n"
                f"<|im_start|>user\n{media_text}{question}<|im_end|>\n"
                f"<|im_start|>assistant\n")

    def encode_prompts(self, media_list, questions, system=None):
        """B prompts -> dict: left-padded input_ids, attention_mask (B, P) + media tensors.

        media_list: PIL images ("image"), 1-D 16 kHz float waveforms ("audio"), None ("text").
        """
        if media_list is None:
            media_list = [None] * len(questions)
        if len(media_list) != len(questions):
            raise ValueError(f"{len(media_list)} media items for {len(questions)} questions")
        media, k = _media_inputs(self.processor, self.modality, media_list)
        rows = [self.tokenizer(self.prompt_text(q, _placeholder(self.modality, n), system),
                               add_special_tokens=False)["input_ids"]
                for q, n in zip(questions, k)]
        P = max(map(len, rows))
        input_ids = torch.full((len(rows), P), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), P), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding (pitfall 4)
            input_ids[i, P - len(r):] = torch.tensor(r)
            attention_mask[i, P - len(r):] = 1
        if self.media_token_id is not None:
            found = (input_ids == self.media_token_id).sum(1).tolist()
            if found != k:  # a tokenizer without the media tokens would split them into pieces
                raise ValueError(f"prompts hold {found} media tokens, the encoder gives {k}")
        batch = dict(input_ids=input_ids, attention_mask=attention_mask, **media)
        if self.modality == "image":  # token types (1 = image) for the 3-D M-RoPE positions
            batch["mm_token_type_ids"] = (input_ids == self.media_token_id).long()
        return {key: v.to(self.device) for key, v in batch.items()}

    def encode_targets(self, batch, target_texts):
        """Teacher-forced completions (text + <|im_end|>) as a Rollout: for SFT and scoring."""
        rows = [self.tokenizer(t, add_special_tokens=False)["input_ids"] + [self.im_end_id]
                for t in target_texts]
        if any(t in self.suppressed_ids for r in rows for t in r):
            raise ValueError("a target text contains a media placeholder token")
        T = max(map(len, rows))
        ids = torch.full((len(rows), T), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), T), dtype=torch.long)
        for i, r in enumerate(rows):  # right padding: completions start right after the prompt
            ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
        return Rollout(batch, ids.to(self.device), mask.to(self.device), list(target_texts))

    def decode(self, ids, mask):
        """Texts of the tokens before the first EOS, special tokens skipped."""
        has_eos = torch.isin(ids, torch.as_tensor(self.eos_ids, device=ids.device)).any(1)
        lengths = (mask.sum(1) - has_eos.long()).tolist()  # the mask ends on the EOS if any
        return self.tokenizer.batch_decode([r[:n] for r, n in zip(ids.tolist(), lengths)],
                                           skip_special_tokens=True)

    # ------------------------------------------------------------ sampling
    def generate(self, batch, num_generations, max_new_tokens, temperature=1.0, top_p=1.0,
                 seed=0, greedy=False, top_k=0, sampler="loop"):
        """N completions per prompt -> Rollout (row b*N + i is sample i of prompt b).

        sampler "loop": sampling.sample, one prefill per distinct prompt, an explicit
        torch.Generator seeded with `seed` (or one per prompt, `seed` a list of B seeds); the
        Rollout keeps each token's log-prob.
        "hf": HF generate (for comparison; no log-probs). Eval mode (no dropout), no grad.
        `greedy=True` takes the arg-max token instead (evaluation; temperature is then unused).
        """
        if temperature <= 0 and not greedy:
            raise ValueError("temperature must be > 0 (the log-probs divide by it)")
        if sampler not in sampling.SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; expected one of {sampling.SAMPLERS}")
        N, B = num_generations, batch["input_ids"].shape[0]
        settings = dict(temperature=temperature, top_p=top_p, top_k=top_k, greedy=greedy,
                        suppressed_ids=self.suppressed_ids, eos_ids=self.eos_ids,
                        pad_id=self.pad_id)  # pitfall 3: placeholders are never sampled
        was_training = self.model.training
        self.model.eval()
        try:
            if sampler == "loop":  # one generator, or one per prompt (a list of B seeds)
                generator = ([torch.Generator(self.device).manual_seed(s) for s in seed]
                             if isinstance(seed, (list, tuple)) else
                             torch.Generator(self.device).manual_seed(seed))
                ids, logps = sampling.sample(self.model, batch, N, max_new_tokens, generator,
                                             **settings)
            else:
                if isinstance(seed, (list, tuple)):
                    raise ValueError("one seed per prompt needs sampler='loop' (HF generate "
                                     "draws from one global stream)")
                ids = sampling.hf_generate(self.model, batch, N, max_new_tokens, seed, **settings)
                logps = None
        finally:
            self.model.train(was_training)
        rows = take_rows(batch, torch.arange(B).repeat_interleave(N))  # (B*N, P), groups adjacent
        mask = completion_mask(ids, self.eos_ids)
        return Rollout(rows, ids, mask, self.decode(ids, mask), N, logps)

    # ------------------------------------------------------------ scoring
    def completion_logps(self, rollout, temperature=1.0, chunk_size=4, with_grad=True,
                         shared_prefix=True):
        """log pi(o_t | q, o_<t) of every completion token, (B*N, T) float32.

        log_softmax(logits / T) gathered at o_t, with the T used for sampling: another T
        scores another distribution and silently biases the GRPO ratio pi / pi_old. Top-p
        truncation is not applied (as in TRL): the ratio is taken on the full softmax.
        shared_prefix: each distinct prompt runs once and its N completions run on top of its
        keys/values (sampling.shared_prefix_hidden); else every row runs prompt + completion.
        Same numbers, same gradients. `chunk_size` completion rows at a time bound the
        (chunk, T, V) float32 logits; with grad, the activations of all chunks stay alive for
        backward (gradient checkpointing or smaller micro-batches bound those). Sets train
        mode when with_grad (dropout, checkpointing on), eval mode otherwise.
        """
        ids, N = rollout.completion_ids, rollout.num_generations
        self.model.train(with_grad)
        with torch.set_grad_enabled(with_grad):
            if shared_prefix and N > 1:  # with N = 1 there is nothing to share
                prompts = take_rows(rollout.batch, torch.arange(0, ids.shape[0], N))  # row b*N
                chunks = sampling.shared_prefix_hidden(self.model, prompts, ids, N, chunk_size)
            else:
                chunks = sampling.unshared_hidden(self.model, rollout.batch, ids, N, chunk_size)
            logps = [self._token_logps(h, ids[rows], temperature) for rows, h in chunks]
        return torch.cat(logps)  # (B*N, T)

    def _token_logps(self, h, ids, temperature):
        """Hidden states (c, T, H) that predict tokens ids (c, T) -> their log-probs (c, T)."""
        # Only these positions reach lm_head (pitfall 7); placeholders at -inf (pitfall 3)
        z = sampling.scaled_logits(self.model.lm_head(h), temperature, self.suppressed_ids)
        return z.log_softmax(-1).gather(-1, ids[..., None])[..., 0]

    def reference_logps(self, rollout, temperature=1.0, chunk_size=4, reference=None,
                        shared_prefix=True):
        """log pi_ref of the completion tokens, no grad. With LoRA: this model with adapters
        off (no second copy); full fine-tuning: `reference`, a `frozen_copy()` made before
        training."""
        if lora_modules(self.model):
            with adapters_disabled(self.model):
                return self.completion_logps(rollout, temperature, chunk_size, False, shared_prefix)
        if reference is None:
            raise ValueError("no LoRA adapters: pass reference=policy.frozen_copy() "
                             "made before training")
        return reference.completion_logps(rollout, temperature, chunk_size, False, shared_prefix)

    def sft_loss(self, batch, target_texts, chunk_size=4, return_tokens=False):
        """Completion-only cross-entropy: mean over target tokens of -log p(y_t | prompt, y_<t).

        Targets are the texts plus <|im_end|> (so the model learns to stop). Prompt positions
        carry no target (HF's label -100): only target positions reach lm_head at all. p is
        the policy's distribution, media placeholders excluded (pitfall 3). `return_tokens`
        also returns how many target tokens the mean is over (to weigh processes' shares).
        """
        rollout = self.encode_targets(batch, target_texts)
        logps = self.completion_logps(rollout, 1.0, chunk_size, with_grad=True)
        mask = rollout.completion_mask
        loss = -(logps * mask).sum() / mask.sum()
        return (loss, int(mask.sum())) if return_tokens else loss
