"""Sampling and scoring with a shared prompt: the N completions of a prompt reuse its one prefill.

In GRPO every prompt q is followed by N sampled completions o_1 .. o_N (a "group"; N = 6 in the
face and HIR papers). All N start from the same prompt, and a causal transformer's keys and
values at the prompt positions do not depend on anything after them. So the prompt is run once
and its keys and values (the KV cache) serve all N completions, when sampling and when scoring.

Sampling (`sample`), step by step:

    1. prefill   one forward over the B distinct, left-padded prompts with their media (image
                 patches or audio features go through their encoder here, once per prompt).
                 Kept: the keys/values of every layer, (B, heads, P, d), and the hidden state at
                 the last prompt position, (B, H): it predicts the first completion token.
    2. repeat    the cache and that hidden state are repeated N times along the batch:
                 row b*N + i is sample i of prompt b (`DynamicCache.batch_repeat_interleave`).
    3. decode    for t = 1 .. max_new_tokens, over the B*N rows:
                   z_t     = lm_head(h_t) / T, media placeholders set to -inf  (`scaled_logits`)
                   o_t     ~ softmax(z_t) truncated to the top-k / top-p set   (`draw`)
                   log pi  = log_softmax(z_t)[o_t] (the full softmax, as scoring computes it)
                   rows that have emitted an EOS get the pad token from then on;
                   h_{t+1} = one forward of o_t at its position, the cache growing by one
                 until every row has emitted an EOS or max_new_tokens is reached.

Positions: prompts are left-padded, so a position counts real tokens only. A plain Qwen2 (text,
and Qwen2-Audio's language model) uses 1-D positions: token j of a prompt with n real tokens
has position j - (P - n), the first new token n, the t-th new token n + t - 1. Qwen2.5-VL uses
3-D M-RoPE: image tokens get (time, row, column) positions and text tokens (p, p, p). The
model's own `get_rope_index` lays out the prompt and returns one offset per prompt, delta =
(largest prompt position + 1) - n; a new token then sits at (n + t - 1 + delta) on all three axes.

Scoring with a shared prefix (`shared_prefix_hidden`): log pi(o_t | q, o_<t) for the sampled
tokens, reference and update passes alike:

    1. prompt pass       the B prompts once (with grad for the update): keys/values (B, ...) and
                         the last hidden state, which predicts o_1.
    2. completion pass   per chunk of completion rows, their prompt's keys/values are gathered
                         (row r belongs to prompt r // N) and the tokens o_1 .. o_{T-1} run on top
                         (B*N rows of T - 1 tokens): their hidden states predict o_2 .. o_T.

`unshared_hidden` is the plain computation it replaces (shared_prefix=False): every row runs
its own copy of prompt + completion. Each output of the shared pass depends on the prompt's
keys/values exactly as in that full forward, so the log-probs are the same numbers. So is the
gradient: in the full computation each of the N rows carries its own copy of the prompt, and
the gradient reaching the prompt's weights is the sum over the N copies; here one copy is read
by N rows, and autograd sums what flows back through the gather (the adjoint of a repeat is a
sum). What is saved is the prompt's forward and backward done N - 1 extra times: for prompts of
P tokens and completions of T, B*N*(P + T) token-passes become B*P + B*N*T.

Departures and pitfalls, numbered:
1. The log-probs returned with the samples are those of the full softmax(z_t), not of the
   top-k / top-p truncated distribution the token was drawn from: the scoring pass computes
   the same full softmax (as TRL does), so the GRPO ratio pi / pi_old compares like with like.
2. Gradient checkpointing re-runs each layer's forward during backward. transformers then drops
   the cache (a cache that *appends* would be appended to twice). Both caches here are safe to
   re-run: the prompt pass stores its keys/values as they are (nothing to append to), and the
   completion pass only reads the prefix. The layers are told so (`_can_checkpoint_with_cache`)
   for the duration of the two passes only.
3. HF `generate` stays selectable (`hf_generate`): it repeats each prompt N times *before* the
   prefill, so it prefills B*N rows; it draws from the global RNG (forked and seeded here).
4. Per-step cost. On a small model a decode step is mostly fixed per-call overhead, so the loop
   does only what it must: one forward of the language model alone (`get_decoder()`: after the
   prompt only text tokens flow), lm_head on the last position only, a Gumbel-max draw, no
   attention mask when the prompts have one length, and torch.inference_mode (no autograd
   bookkeeping at all) around it.
"""

from contextlib import contextmanager

import torch
from transformers import DynamicCache, GenerationConfig
from transformers.cache_utils import Cache, DynamicLayer
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling

SAMPLERS = ("loop", "hf")  # our decode loop; HF generate (for comparison)


# ----------------------------------------------------------------------------- the distribution

def scaled_logits(logits, temperature, suppressed_ids=()):
    """z = logits / T in float32, media placeholder tokens at -inf: the policy's distribution
    is softmax(z). Sampling and scoring both call this, so they score one distribution."""
    z = logits.float() / temperature
    if len(suppressed_ids):
        z = z.index_fill(-1, torch.as_tensor(suppressed_ids, device=z.device), float("-inf"))
    return z


def truncate(z, top_p=1.0, top_k=0):
    """z with -inf outside the top-k tokens, then outside the top-p nucleus (HF's order).

    The nucleus is the smallest set of most likely tokens whose probability reaches p: a token
    stays when the mass of the tokens ranked above it is < p (so the first token always stays).
    """
    if 0 < top_k < z.shape[-1]:
        kth = z.topk(top_k, dim=-1).values[..., -1:]  # (R, 1) the k-th largest logit
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p < 1.0:
        sorted_z, order = z.sort(dim=-1, descending=True)
        p = sorted_z.softmax(-1)
        above = p.cumsum(-1) - p  # (R, V) mass of the tokens ranked above each one
        z = z.masked_fill((above >= top_p).scatter(-1, order, above >= top_p), float("-inf"))
    return z


def uniform_noise(shape, generator, device):
    """U(0, 1) noise of shape (R, V) from one generator, or from a list of G generators, each
    drawing the rows of one prompt (R / G rows): then a prompt's samples depend on its own seed
    only, not on which other prompts share the batch (or the process, under torchrun)."""
    if isinstance(generator, torch.Generator) or generator is None:
        return torch.rand(shape, generator=generator, device=device)
    rows = shape[0] // len(generator)
    return torch.cat([torch.rand((rows, *shape[1:]), generator=g, device=device)
                      for g in generator])


def draw(z, generator, top_p=1.0, top_k=0, greedy=False):
    """One token per row from softmax(z) truncated to top-k / top-p (or the arg-max when greedy)
    -> (tokens (R,), their log-prob under the full softmax(z) (R,), departure 1).

    Gumbel-max trick: with g_v = -log(-log U_v), U_v ~ U(0, 1) i.i.d., argmax_v (z_v + g_v) is an
    exact draw from softmax(z) (Gumbel 1954; Maddison et al. 2014); tokens at -inf are never
    drawn. One vector of noise per row and an arg-max: 4x cheaper here than torch.multinomial.
    """
    logp = z.log_softmax(-1)  # (R, V) the full softmax, before any truncation
    if greedy:
        token = z.argmax(-1)
    else:
        if top_p < 1.0 or top_k > 0:
            z = truncate(z, top_p, top_k)
        u = uniform_noise(z.shape, generator, z.device)  # (R, V) U(0, 1)
        gumbel = -(-u.log()).log()  # u = 0 (chance 2**-24) gives -inf: that token sits out
        token = (z + gumbel).argmax(-1)  # (R,)
    return token, logp.gather(-1, token[:, None])[:, 0]


# ----------------------------------------------------------------------------- positions

def prompt_positions(model, prompts):
    """Positions of the prompt tokens, (B, P) or (3, B, P) for M-RoPE, and the position of the
    first new token of each prompt, (B,). Left padding: positions count real tokens only."""
    mask = prompts["attention_mask"]
    real = mask.sum(-1)  # (B,) n real tokens per prompt
    if "mm_token_type_ids" in prompts:  # Qwen2.5-VL: the model's own 3-D rope index
        positions, delta = model.model.get_rope_index(
            prompts["input_ids"], mm_token_type_ids=prompts["mm_token_type_ids"],
            image_grid_thw=prompts.get("image_grid_thw"), attention_mask=mask)
        return positions, real + delta[:, 0]  # (3, B, P), (B,)
    return (mask.cumsum(-1) - 1).clamp(min=0), real


def new_positions(first, start, length, three_d):
    """Positions of new tokens start .. start + length - 1 (0 = the first new token) of rows
    whose first new token sits at `first` (R,): (R, length), or (3, R, length) for M-RoPE."""
    pos = first[:, None] + torch.arange(start, start + length, device=first.device)  # (R, length)
    return pos.expand(3, -1, -1) if three_d else pos


# ----------------------------------------------------------------------------- the shared prefix

def take_rows(batch, rows):
    """The prompt batch restricted to `rows` (1-D LongTensor, repeats allowed), media included.

    pixel_values is not batch-first: it stacks every image's prod(grid_thw) patch rows, so it
    is split per image before the rows are picked (one image per prompt).
    """
    out = {k: v[rows.to(v.device)] for k, v in batch.items() if k != "pixel_values"}
    if "pixel_values" in batch:
        per_image = batch["pixel_values"].split(batch["image_grid_thw"].prod(-1).tolist())
        out["pixel_values"] = torch.cat([per_image[r] for r in rows.tolist()])
    return out


class _PromptLayer(DynamicLayer):
    """One layer's cache during the prompt pass: there is no past, so the keys/values are kept
    as they are. Re-running it (checkpointing, pitfall 2) stores the same values again."""

    def update(self, key_states, value_states, *args, **kwargs):
        self.keys, self.values, self.is_initialized = key_states, value_states, True
        return key_states, value_states


class _PrefixLayer(DynamicLayer):
    """One layer's cache during the completion pass: the prompt's keys/values, read, never
    written (pitfall 2). Attention sees [prompt ; completion] keys and values."""

    def __init__(self, keys, values):
        super().__init__()
        self.keys, self.values, self.is_initialized = keys, values, True
        self.device = keys.device

    def update(self, key_states, value_states, *args, **kwargs):
        return torch.cat([self.keys, key_states], -2), torch.cat([self.values, value_states], -2)


@contextmanager
def cache_through_checkpointing(model):
    """Let checkpointed layers keep our replay-safe caches (pitfall 2) inside the block."""
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not hasattr(GradientCheckpointingLayer, "_can_checkpoint_with_cache") and any(
            m.gradient_checkpointing for m in layers):
        raise RuntimeError("this transformers drops any cache under gradient checkpointing; "
                           "use shared_prefix=False (or transformers >= 5.24)")
    for m in layers:
        m._can_checkpoint_with_cache = True  # an instance attribute shadows the class's False
    try:
        yield
    finally:
        for m in layers:
            del m._can_checkpoint_with_cache


def prompt_pass(model, prompts):
    """Run the B prompts once -> (hidden state at the last position (B, H), per-layer
    keys/values [(B, kv heads, P, d)] * layers, position of the first new token (B,))."""
    positions, first = prompt_positions(model, prompts)
    cache = Cache(layer_class_to_replicate=_PromptLayer)
    h = model.model(**prompts, position_ids=positions, cache=cache, use_cache=False)
    # left padding: column P - 1 is every prompt's last real token
    return h.last_hidden_state[:, -1], [(layer.keys, layer.values) for layer in cache.layers], first


def shared_prefix_hidden(model, prompts, completion_ids, N, chunk_size):
    """Hidden states that predict each completion token, prompt run once (module docstring).

    prompts: the B distinct prompts; completion_ids (B*N, T), row r a completion of prompt
    r // N. Yields (rows, h (c, T, H)) per chunk of `chunk_size` completion rows; h[:, t]
    predicts completion_ids[rows, t]. Grad flows when enabled by the caller.
    """
    R, T = completion_ids.shape
    three_d = "mm_token_type_ids" in prompts
    with cache_through_checkpointing(model):
        h_last, prefix, first = prompt_pass(model, prompts)  # (B, H), keys/values, (B,)
        for start in range(0, R, chunk_size):
            rows = torch.arange(start, min(start + chunk_size, R), device=completion_ids.device)
            owner = rows // N  # (c,) the prompt of each row; gathering sums their gradients
            h_first = h_last[owner, None]  # (c, 1, H) predicts o_1
            if T == 1:
                yield rows, h_first
                continue
            cache = Cache(layers=[_PrefixLayer(k[owner], v[owner]) for k, v in prefix])
            ids = completion_ids[rows, :-1]  # (c, T-1): o_1 .. o_{T-1} predict o_2 .. o_T
            # completion columns all attend, as in sampling; tokens after an EOS are masked later
            mask = torch.cat([prompts["attention_mask"][owner], torch.ones_like(ids)], 1)
            h = model.get_decoder()(input_ids=ids, attention_mask=mask, cache=cache,
                                    use_cache=False,
                                    position_ids=new_positions(first[owner], 0, T - 1, three_d))
            yield rows, torch.cat([h_first, h.last_hidden_state], 1)  # (c, T, H)


def unshared_hidden(model, batch, completion_ids, N, chunk_size):
    """The same hidden states as `shared_prefix_hidden`, every row running prompt + completion
    (the reference the shared prefix is tested against; shared_prefix=False).

    batch: the prompts repeated N times (B*N rows, a Rollout's batch). The B distinct images go
    through the vision tower once and each row gets its prompt's features; Qwen2-Audio takes no
    precomputed features (transformers 5.24), so its audio encoder runs once per row here.
    """
    R, T = completion_ids.shape
    P = batch["input_ids"].shape[1]
    text_batch = {k: v for k, v in batch.items() if k != "pixel_values"}
    images = None
    if "pixel_values" in batch:
        first = take_rows(batch, torch.arange(0, R, N))  # row b*N: prompt b
        images = model.model.get_image_features(first["pixel_values"], first["image_grid_thw"],
                                                return_dict=True).pooler_output  # B x (k_b, H)
    for start in range(0, R, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, R))
        inputs = _sequence_inputs(take_rows(text_batch, rows), completion_ids[rows])
        if images is not None:  # row r is a sample of prompt r // N
            feats = tuple(images[r // N] for r in rows.tolist())
            inputs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(
                pooler_output=feats)}
        h = model.model(**inputs, use_cache=False).last_hidden_state
        yield rows, h[:, P - 1:P + T - 1]  # (c, T, H): the positions that predict o_1 .. o_T


def _sequence_inputs(batch, completion_ids):
    """Backbone inputs for prompt + completion; positions count real tokens only."""
    ids = torch.cat([batch["input_ids"], completion_ids], 1)  # (c, P+T)
    # Completion columns attend as in sampling; tokens after EOS never reach earlier ones.
    mask = torch.cat([batch["attention_mask"], torch.ones_like(completion_ids)], 1)
    inputs = {**batch, "input_ids": ids, "attention_mask": mask}
    if "mm_token_type_ids" in batch:  # image: the model builds 3-D M-RoPE ids from these
        inputs["mm_token_type_ids"] = torch.cat(
            [batch["mm_token_type_ids"], torch.zeros_like(completion_ids)], 1)
    else:  # 1-D RoPE: position = number of real tokens before this one
        inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    return inputs


# ----------------------------------------------------------------------------- sampling

def sample(model, prompts, N, max_new_tokens, generator, temperature=1.0, top_p=1.0, top_k=0,
           greedy=False, suppressed_ids=(), eos_ids=(), pad_id=0):
    """N completions of each of the B prompts (module docstring, steps 1-3).

    -> (tokens (B*N, T), log-probs (B*N, T) of each token under softmax(z_t)); T <= max_new_tokens,
    tokens after a row's first EOS are `pad_id` with log-prob 0. The caller sets eval mode.
    `greedy` takes the arg-max (temperature is then 1: the log-probs are of softmax(logits)).
    """
    temperature = 1.0 if greedy else temperature
    # inference_mode: no autograd bookkeeping at all, cheaper than no_grad for a loop of small
    # ops (pitfall 4); the stacks below, taken outside it, are ordinary tensors again
    with torch.inference_mode():
        h_last, prefix, first = prompt_pass(model, prompts)  # 1. prefill the B distinct prompts
        cache = DynamicCache(ddp_cache_data=prefix)
        cache.batch_repeat_interleave(N)  # 2. (B*N, kv heads, P, d): row b*N + i = sample i of b
        h = h_last.repeat_interleave(N, 0)  # (B*N, H)
        first = first.repeat_interleave(N, 0)  # (B*N,)
        R, P = h.shape[0], prompts["attention_mask"].shape[1]
        mask = torch.ones(R, P + max_new_tokens, dtype=torch.long, device=h.device)
        mask[:, :P] = prompts["attention_mask"].repeat_interleave(N, 0)  # new tokens all attend
        # prompts of one length need no mask at all: transformers then builds none per step
        padded = not bool(prompts["attention_mask"].all())
        three_d = "mm_token_type_ids" in prompts
        eos = torch.as_tensor(eos_ids, device=h.device)
        done = torch.zeros(R, dtype=torch.bool, device=h.device)
        tokens, logps = [], []
        for t in range(max_new_tokens):  # 3. decode
            z = scaled_logits(model.lm_head(h), temperature, suppressed_ids)  # (R, V)
            token, logp = draw(z, generator, top_p, top_k, greedy)  # (R,), (R,)
            tokens.append(token.masked_fill(done, pad_id))
            logps.append(logp.masked_fill(done, 0.0))
            done = done | torch.isin(token, eos)
            if t == max_new_tokens - 1 or bool(done.all()):  # a CPU-GPU sync, as in HF's loop
                break
            out = model.get_decoder()(input_ids=tokens[-1][:, None], cache=cache, use_cache=True,
                                      attention_mask=mask[:, :P + t + 1] if padded else None,
                                      position_ids=new_positions(first, t, 1, three_d))
            h = out.last_hidden_state[:, -1]  # (R, H)
    return torch.stack(tokens, 1), torch.stack(logps, 1)


@torch.no_grad()
def hf_generate(model, prompts, N, max_new_tokens, seed, temperature=1.0, top_p=1.0, top_k=0,
                greedy=False, suppressed_ids=(), eos_ids=(), pad_id=0):
    """The same completions drawn by HF `generate` (pitfall 3) -> tokens (B*N, T)."""
    config = GenerationConfig(
        do_sample=not greedy, temperature=None if greedy else temperature,
        top_p=None if greedy else top_p, top_k=None if greedy else top_k, repetition_penalty=1.0,
        max_new_tokens=max_new_tokens, eos_token_id=list(eos_ids), pad_token_id=pad_id,
        suppress_tokens=list(suppressed_ids) or None, use_cache=True, num_return_sequences=N,
    )
    device = prompts["input_ids"].device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # HF samples from the global RNG; the caller's stream is kept
        out = model.generate(**prompts, generation_config=config)
    return out[:, prompts["input_ids"].shape[1]:]  # (B*N, T) the new tokens only
