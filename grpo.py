"""GRPO loss math: group advantages, the k3 KL estimator, the clipped surrogate and its
aggregations, and the one-token (classifier) form. Pure functions, torch only.

The objective is DeepSeekMath's GRPO (Shao et al. 2024) as written in the face anti-spoofing
paper (Jiang, Li et al. 2026), J_GRPO:

    J(θ) = E[ 1/N Σ_i 1/|o_i| Σ_t { min(ρ_it A_it, clip(ρ_it, 1-ε, 1+ε) A_it)
                                      - β D_KL[π_θ‖π_ref] } ]
    ρ_it = π_θ(o_it | q, o_i,<t) / π_θ_old(o_it | q, o_i,<t)
    A_it = (r_i - mean(r_1..r_N)) / std(r_1..r_N)                                   (Eq. 2)

and `grpo_loss` returns -J (we minimise). Shapes: B prompts, N = num_generations completions
each, flattened to B*N rows with the N completions of one prompt consecutive; T = longest
completion. The classifier route is the case T = 1 (the "completion" is one sampled label).

Where this departs from the papers, and why:
 1. eps is added to the std (A = (r - mean) / (std + eps), eps = 1e-4), as TRL's GRPOTrainer
    does; Eq. 2 has no eps and divides by zero when a group's rewards are all equal.
 2. A group whose rewards are all exactly equal gets A = 0 exactly (not (r - mean) / eps, which
    float rounding of the mean can make nonzero); such a group carries no learning signal.
 3. std is the unbiased one (ddof = 1, torch's default and TRL's); the papers do not say.
 4. D_KL is the per-token k3 estimator of DeepSeekMath, evaluated on the sampled tokens,
    not the exact KL the face paper's notation suggests.
 5. Besides the papers' aggregation ("grpo": 1/|o_i| then 1/N) the loss offers "bnpo",
    "dr_grpo" (Liu et al. 2025) and "dapo" (Yu et al. 2025), and an upper clip ε_high
    ("clip-higher", DAPO); the defaults are the papers' form with a symmetric clip.
 6. Advantage scales besides Eq. 2: "batch" (one mean and one std over the whole flattened
    batch, as in the speech paper's public code, AntiDeepfake), "none" (Dr. GRPO: centre only)
    and "raw" (rewards used as advantages: the speech paper's "GRPO without negative reward").
 7. An empty completion (|o_i| = 0) has no 1/|o_i|; it contributes 0 and still counts as one
    of the N sequences (TRL's convention), so no NaN.
 8. "reinforce" is the objective the papers' public code runs where it drops the ratio: plain
    REINFORCE on the summed token log-probs, -mean_i(A_i Σ_t log π_it) (+ β KL), with no old
    policy and no clip -- HIR-SDD's GRPO code, and (T = 1, raw 1/0 rewards) AntiDeepfake's
    "GRPO without negative reward" (grpo3_degraded). With one update per rollout its gradient
    is the "grpo" gradient summed over tokens instead of averaged over them.
"""

import torch

SCALES = ("group", "batch", "none", "raw")
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "reinforce")


def _groups(rewards, num_generations):
    """Check shapes and view the flat rewards [B*N] as (B, N), one row per prompt."""
    if not isinstance(num_generations, int) or num_generations < 1:
        raise ValueError(f"num_generations must be a positive int, got {num_generations!r}")
    if rewards.dim() != 1 or rewards.numel() == 0:
        raise ValueError(f"rewards must be a non-empty 1-D tensor [B*N], "
                         f"got shape {tuple(rewards.shape)}")
    if rewards.numel() % num_generations:
        raise ValueError(f"len(rewards) = {rewards.numel()} is not divisible by "
                         f"num_generations = {num_generations}")
    # bool / int rewards (0/1 correctness) become floats; float64 stays float64
    if not rewards.is_floating_point():
        rewards = rewards.float()
    # consecutive layout: row b holds the N completions of prompt b
    return rewards.view(-1, num_generations)  # (B, N)


def _all_equal(r):
    """(B, N) -> (B, 1) bool: True where every reward of the group equals the first."""
    return (r == r[:, :1]).all(dim=1, keepdim=True)


def group_advantages(rewards, num_generations, scale="group", eps=1e-4):
    """Advantages from flat rewards [B*N] (the N completions of a prompt consecutive) -> [B*N].

    scale="group":  A_i = (r_i - mean(r_group)) / (std(r_group) + eps)   face paper Eq. 2,
                    DeepSeekMath outcome supervision; eps as in TRL's GRPOTrainer.
    scale="batch":  A_i = (r_i - mean(r_batch)) / (std(r_batch) + eps)   one mean and one std
                    over all B*N rewards, the groups flattened: the speech paper's public code
                    (AntiDeepfake algo/rl.py, std_floor = eps = 1e-5). An all-correct group is
                    no longer 0: it is pushed up as far as it beats the rest of the batch.
    scale="none":   A_i =  r_i - mean(r_group)                            Dr. GRPO (Liu et al.
                    2025): dropping the std removes a per-question weighting.
    scale="raw":    A_i =  r_i                                            no baseline: with 1/0
                    rewards a wrong sample gets 0, not a negative push (speech paper's ablation
                    "GRPO without negative reward").

    std is unbiased (ddof = 1); eps = 0 gives Eq. 2 verbatim. A group whose rewards are all
    equal gets exactly 0 in "group" and "none" (in "batch" only when the whole batch is equal).
    With N = 1 a group is one reward, trivially all-equal, so its "group"/"none" advantage is 0
    (a single sample has no group to compare with).
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    r = _groups(rewards, num_generations)  # (B, N)
    if scale == "raw":
        # no baseline: E[r ∇logπ] is still the true policy gradient, but with 1/0 rewards only
        # correct samples are pushed up; wrong ones get no direct push down, and an
        # all-correct group keeps pushing while an all-wrong one is ignored
        return r.reshape(-1).clone()
    if scale == "batch":  # the flattened batch is one "group" (its mean and its std)
        flat = r.reshape(1, -1)  # (1, B*N)
        std = flat.std() if flat.numel() > 1 else torch.zeros((), dtype=r.dtype, device=r.device)
        centred = torch.where(_all_equal(flat), torch.zeros_like(flat), flat - flat.mean())
        return (centred / _safe(std + eps)).reshape(-1)
    # exact 0 for all-equal groups: the float32 mean of three 0.9s is 0.9 - 6e-8, and that
    # residue divided by a std of the same size would be a full-size advantage (0.82)
    centred = torch.where(_all_equal(r), torch.zeros_like(r), r - r.mean(dim=1, keepdim=True))
    if scale == "none":
        # the group mean is the baseline; no division, so groups with a small reward spread
        # (nearly solved or nearly hopeless prompts) are not scaled up
        return centred.reshape(-1)
    # torch.std with ddof = 1 of a single element is NaN, hence the N = 1 branch
    std = r.std(dim=1, keepdim=True) if num_generations > 1 else torch.zeros_like(r[:, :1])
    return (centred / _safe(std + eps)).reshape(-1)


def _safe(denom):
    """eps = 0 (Eq. 2 verbatim) makes the denominator 0 for an all-equal group, whose centred
    rewards are 0 already: divide those by 1 instead of producing 0/0 = NaN."""
    return torch.where(denom > 0, denom, torch.ones_like(denom))


def kl_k3(logps, ref_logps):
    """Per-token k3 estimator of KL(π_θ ‖ π_ref) (Schulman 2020; DeepSeekMath Eq. 4):

        k3 = π_ref/π_θ - log(π_ref/π_θ) - 1 = exp(d) - d - 1,   d = ref_logps - logps.

    Unbiased for KL(π_θ‖π_ref) when the tokens are sampled from π_θ (E[exp(d)] = 1) and, unlike
    k1 = -d, never negative (e^d ≥ 1 + d). d/dlogp k3 = 1 - exp(d).
    """
    d = ref_logps - logps
    # expm1(d) - d instead of exp(d) - 1 - d: no cancellation when d is tiny (π_θ ≈ π_ref)
    return torch.expm1(d) - d


def _masked_mean(x, mask):
    """Mean of x over the unmasked entries; 0 (not NaN) when there are none."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def grpo_loss(logps, advantages, completion_mask, old_logps=None, ref_logps=None, clip_eps=0.2,
              clip_eps_high=None, beta=0.04, loss_type="grpo", max_completion_length=None,
              num_items_in_batch=None):
    """-J_GRPO (face paper; DeepSeekMath Eq. 3) for one batch. Returns (loss, stats).

    logps, old_logps, ref_logps, completion_mask: (B*N, T) per-token log-probs of the sampled
    tokens and a mask given by the caller (from lengths/EOS positions, never from pad ids).
    advantages: (B*N,) one per completion (or (B*N, T) per token). Per token:

        ℓ_it = -min(ρ_it A_i, clip(ρ_it, 1-ε_low, 1+ε_high) A_i) + β k3_it,  ρ = exp(logp - old)

    with ε_low = clip_eps, ε_high = clip_eps_high (default clip_eps). Aggregation (loss_type):
      "grpo"    1/N Σ_i 1/|o_i| Σ_t ℓ_it          the papers' form (DeepSeekMath, face paper)
      "bnpo"    Σ ℓ / Σ|o_i|                      mean over all unmasked tokens of this batch
      "dr_grpo" Σ ℓ / (B*N * max_completion_length)   Dr. GRPO; max_completion_length
                defaults to T (the padded width), then it depends on the batch's longest one
      "dapo"    Σ ℓ / num_items_in_batch          DAPO token-level mean; num_items_in_batch =
                unmasked tokens of the whole accumulated batch (default: this batch's, = bnpo).
      "reinforce" 1/N Σ_i Σ_t ℓ_it with ℓ_it = -A_i log π_it + β k3_it: no ratio, no clip
                (departure 8); old_logps must be None.
    Under gradient accumulation the trainer averages k micro-batch losses: "bnpo" then gives
    each micro-batch equal weight, so a token in a micro-batch with few tokens weighs more;
    "dapo" with the global count gives every token the same 1/total weight, i.e. exactly the
    full-batch "bnpo" gradient -- provided its micro-batch losses are summed, not averaged.

    old_logps=None means one update per rollout: old = logps.detach(), so ρ = 1 in value,
    clipping never fires, and the loss *value* is -mean(A) (+ β KL), ≈ 0 because advantages are
    centred per group. Its gradient is not 0: ∇ρ = ρ ∇logp = ∇logp, so ∇ℓ_it = -A_i ∇logπ_it,
    REINFORCE with a group baseline. The GRPO loss is therefore not a quality measure; watch
    the rewards.
    stats (detached 0-d tensors; no .item() here: that would be a CPU-GPU sync point per call):
      kl (mean k3 over unmasked tokens; 0 when ref_logps is None), clip_low / clip_high /
      clip_frac (share of tokens where the lower / upper / either clip is active, i.e. where the
      gradient is 0), ratio (mean ρ), completion_length (mean |o_i| over sequences).
    """
    # shape checks first: a broadcasting slip here would train silently on wrong numbers
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if logps.dim() != 2 or completion_mask.shape != logps.shape:
        raise ValueError(f"logps and completion_mask must both be (B*N, T), got "
                         f"{tuple(logps.shape)} and {tuple(completion_mask.shape)}")
    for name, t in (("old_logps", old_logps), ("ref_logps", ref_logps)):
        if t is not None and t.shape != logps.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(logps.shape)}")
    # advantages are per completion in GRPO's outcome supervision; A_it = A_i for every t
    if advantages.dim() == 1:
        advantages = advantages[:, None]  # (B*N, 1): one advantage for all tokens of o_i
    if advantages.shape not in ((logps.size(0), 1), tuple(logps.shape)):
        raise ValueError(f"advantages must be ({logps.size(0)},) or {tuple(logps.shape)}, "
                         f"got {tuple(advantages.shape)}")
    if beta < 0 or clip_eps < 0 or (clip_eps_high is not None and clip_eps_high < 0):
        raise ValueError("beta, clip_eps and clip_eps_high must be >= 0")
    if max_completion_length is not None and max_completion_length < 1:
        raise ValueError(f"max_completion_length must be >= 1, got {max_completion_length}")
    if beta > 0 and ref_logps is None:
        raise ValueError("beta > 0 needs ref_logps (the KL term); pass beta=0 to train without it")
    if loss_type == "reinforce" and old_logps is not None:
        raise ValueError("loss_type 'reinforce' has no ratio: old_logps must be None")

    mask = completion_mask.to(logps.dtype)  # (B*N, T)
    keep = mask.bool()
    # padded positions may hold anything (even -inf from a masked softmax); zero them first,
    # since multiplying by the mask afterwards would still turn 0 * inf into NaN
    logps = torch.where(keep, logps, torch.zeros_like(logps))  # (B*N, T)
    zero = torch.zeros_like(logps)
    old = logps.detach() if old_logps is None else torch.where(keep, old_logps, zero)
    # DAPO's clip-higher: ε_high > ε_low lets a rare good token grow further before the clip
    # stops it, which keeps exploration alive; the papers use one symmetric ε
    eps_low = clip_eps
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high

    # ρ as exp of a log-prob difference: stable even when both probabilities underflow
    ratio = torch.exp(logps - old)  # (B*N, T) ρ
    surr = ratio * advantages
    surr_clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * advantages
    # the pessimistic (smaller) of the two objectives; where the clipped one is smaller its
    # derivative is 0: the update stops once ρ has moved ε in the direction A favours
    per_token = -torch.min(surr, surr_clipped)  # (B*N, T)
    if loss_type == "reinforce":
        # the score-function estimator itself: log π in place of ρ (equal gradient at ρ = 1)
        per_token = -logps * advantages  # (B*N, T)
    # the KL is computed whenever a reference is given, so drift can be logged even at beta = 0
    if ref_logps is not None:
        ref = torch.where(keep, ref_logps, zero)
        kl = kl_k3(logps, ref)  # (B*N, T)
        if beta > 0:
            per_token = per_token + beta * kl
    else:
        kl = torch.zeros_like(logps)

    # masked positions are zero in per_token * mask, so sums run over real tokens only
    lengths = mask.sum(dim=1)  # (B*N,) |o_i|
    total = (per_token * mask).sum()
    if loss_type == "grpo":
        # a token of a short completion weighs more (1/|o_i|): Dr. GRPO's length bias;
        # clamp: an empty completion contributes 0/1 = 0 instead of 0/0
        loss = ((per_token * mask).sum(dim=1) / lengths.clamp(min=1)).mean()
    elif loss_type == "bnpo":
        # every token of *this* batch weighs the same; the denominator changes per batch
        loss = total / mask.sum().clamp(min=1)
    elif loss_type == "reinforce":
        # summed over a completion's tokens, not averaged: a long completion weighs more
        loss = (per_token * mask).sum(dim=1).mean()
    elif loss_type == "dr_grpo":
        # a constant denominator: no length bias, and a fixed scale from batch to batch
        L = logps.size(1) if max_completion_length is None else max_completion_length
        loss = total / (logps.size(0) * L)
    else:
        # the caller sums the micro-batch losses (no 1/k): the count already spans them all
        n_items = mask.sum() if num_items_in_batch is None else num_items_in_batch
        n_items = torch.as_tensor(n_items, dtype=logps.dtype, device=logps.device)
        loss = total / n_items.clamp(min=1)

    # diagnostics only: no graph, so they cost no memory and cannot leak into the loss
    with torch.no_grad():
        # the clip is active (gradient 0) only on the side that A's sign pushes towards
        low = ((ratio < 1 - eps_low) & (advantages < 0)).to(logps.dtype)
        high = ((ratio > 1 + eps_high) & (advantages > 0)).to(logps.dtype)
        stats = {
            # masked means: padding must not dilute the statistics
            "kl": _masked_mean(kl, mask),
            "clip_low": _masked_mean(low, mask),
            "clip_high": _masked_mean(high, mask),
            "clip_frac": _masked_mean(low + high, mask),
            "ratio": _masked_mean(ratio, mask),
            "completion_length": lengths.mean(),
        }
    return loss, stats


def sample_labels(logits, num_generations, generator=None):
    """Draw N labels per input from softmax(logits): (B, C) -> (B*N,) long, the N draws of
    input b at rows b*N .. b*N+N-1 (the layout group_advantages expects).

    The speech paper's classifier GRPO: the "completion" is one label, so a group of N
    samples costs one forward pass. Pass a torch.Generator on the logits' device for
    reproducible draws (None falls back to torch's global generator).
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, C), got shape {tuple(logits.shape)}")
    if not isinstance(num_generations, int) or num_generations < 1:
        raise ValueError(f"num_generations must be a positive int, got {num_generations!r}")
    # sampling is not differentiated; float32 so bf16 logits do not distort the probabilities
    probs = torch.softmax(logits.detach().float(), dim=-1)  # (B, C)
    # replacement=True: N independent draws; repeats are the point, they form the group
    draws = torch.multinomial(probs, num_generations, replacement=True, generator=generator)
    return draws.reshape(-1)  # (B*N,)


def label_logps(logits, labels, num_generations):
    """log π_θ(label | x) for each draw: logits (B, C), labels (B*N,) -> (B*N, 1), differentiable.

    The (B*N, 1) result is the T = 1 per-token tensor grpo_loss takes (mask of ones). The
    log-softmax is computed once per input and repeated N times, so the gradient of all N
    draws flows into the same forward pass.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, C), got shape {tuple(logits.shape)}")
    B, C = logits.shape
    if labels.shape != (B * num_generations,):
        raise ValueError(f"labels must be ({B * num_generations},) = B*N, "
                         f"got {tuple(labels.shape)}")
    # this check syncs with the GPU once per step; cheaper than a device-side assert in gather
    if labels.numel() and (labels.min() < 0 or labels.max() >= C):
        raise ValueError(f"labels must lie in [0, {C}), got values outside it")
    # log-probs in at least fp32 (bf16 autocast logits would round them); float64 stays float64
    logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    # repeat_interleave matches sample_labels' layout: row b*N + j belongs to input b
    logp = logp.repeat_interleave(num_generations, dim=0)  # (B*N, C)
    return logp.gather(1, labels.long()[:, None])  # (B*N, 1)


def equal_reward_share(rewards, num_generations):
    """Share of groups whose N rewards are all equal -> 0-d tensor. Their advantages are 0, so
    they teach nothing; with 1/0 rewards at accuracy p the expected share is p^N + (1-p)^N."""
    # exact equality: the same rule that makes group_advantages return exactly 0
    return _all_equal(_groups(rewards, num_generations)).float().mean()
