"""AASIST back end on SSL features: the Wav2Vec2-AASIST detector's head.

Tak et al. 2022, "Automatic speaker verification spoofing and deepfake detection using wav2vec 2.0
and data augmentation" (HIR-SDD's conventional baseline), which puts the AASIST graph network of
Jung et al. 2022 on top of XLS-R frames:

    h (B, F, D) -> Linear(D, 128) -> 2-D max-pool 3x3 -> BN, SELU -> residual 2-D encoder over
    (feature x time) -> spectral nodes (pooled over time) and temporal nodes (pooled over
    feature), each a graph attention layer + graph pooling -> two heterogeneous stacks
    (HS-GAL, pool, HS-GAL with residual) sharing a learnable master node -> element-wise max
    of the stacks -> readout [max|T|, mean T, max|S|, mean S, master] -> Linear(5 d, 2).

Where this version departs from the authors' public code, and why:
1. Padding-aware. The original trains on fixed 4 s crops; here a batch may hold clips of
   different lengths, so a (B, F) frame mask is threaded through: masked batch norm (statistics
   over valid positions only, padding zeroed), masked softmaxes, and graph pooling that keeps
   floor(ratio * n_valid) nodes per clip. In eval mode a clip's logits do not depend on what it
   is batched with (tested).
2. Each residual block's first conv reads the pre-activated input (BN, SELU) as in AASIST;
   the SSL code passes the raw input and leaves its first BN unused.
3. Spectral / temporal node features are the attention-weighted sums of the SSL code
   ("SAP": softmax over time, resp. over feature bins), not AASIST's max over |x|.
4. Batch norms are BatchNorm1d over gathered valid positions, which is BatchNorm2d's
   arithmetic on the unpadded part.
5. Attention logits for the three node-pair types (T-T, T-S, S-S) come from one (3, d) weight.
Logits are ordered [fake, real], like the linear head.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class AASISTDims:
    """Sizes of the AASIST head (defaults: Tak et al. 2022's public configuration)."""
    proj_dim: int = 128                               # Linear(D, proj_dim); spectral nodes = proj_dim // 3
    channels: tuple = (32, 32, 64, 64, 64, 64)        # residual blocks' output channels
    gat_dims: tuple = (64, 32)                        # graph layer widths (GAT, then HS-GAL)
    pool_ratios: tuple = (0.5, 0.5, 0.5)              # spectral, temporal, heterogeneous pools
    temperatures: tuple = (2.0, 2.0, 100.0)           # spectral GAT, temporal GAT, HS-GAL

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


AASIST_TINY = AASISTDims(proj_dim=24, channels=(8, 8, 16), gat_dims=(16, 8))


def masked_bn(bn, x, mask, dim):
    """Batch norm over the positions where `mask` (B, N) is True along axis `dim` of x; the
    padded positions come out 0. x (B, N, D) with dim=1, or (B, C, S, T) with dim=-1."""
    xt = x.movedim(dim, 1)                            # (B, N, ...)
    out = xt.new_zeros(xt.shape).index_put((mask,), bn(xt[mask]))
    return out.movedim(1, dim)


def _masked_softmax(logits, mask, dim=-1):
    return torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=dim)


def _param(*shape):
    p = nn.Parameter(torch.empty(*shape))
    nn.init.xavier_normal_(p)
    return p


class ResidualBlock(nn.Module):
    """RawNet2-style 2-D block over (channel, feature, time); no time max-pool (SSL frames)."""

    def __init__(self, c_in, c_out, first):
        super().__init__()
        self.bn1 = None if first else nn.BatchNorm1d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, (2, 3), padding=(1, 1))   # feature axis grows by 1 ...
        self.bn2 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, (2, 3), padding=(0, 1))  # ... and shrinks back
        self.down = nn.Conv2d(c_in, c_out, (1, 3), padding=(0, 1)) if c_in != c_out else None

    def forward(self, x, mask):                       # x (B, C, S, T), mask (B, T)
        out = x if self.bn1 is None else F.selu(masked_bn(self.bn1, x, mask, -1))
        out = F.selu(masked_bn(self.bn2, self.conv1(out), mask, -1))
        out = self.conv2(out) + (x if self.down is None else self.down(x))
        # zero the padded frames so the next 3-wide conv sees what zero-padding of the clip alone gives
        return out * mask[:, None, None, :]


class GraphAttention(nn.Module):
    """AASIST graph attention layer:  a_ij = softmax_j( w . tanh(W_a (x_i * x_j)) / temp ),
    x_i' = SELU(BN(W_1 sum_j a_ij x_j + W_2 x_i))."""

    def __init__(self, in_dim, out_dim, temperature):
        super().__init__()
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_weight = _param(out_dim, 1)
        self.proj_att, self.proj_self = nn.Linear(in_dim, out_dim), nn.Linear(in_dim, out_dim)
        self.bn, self.drop, self.temp = nn.BatchNorm1d(out_dim), nn.Dropout(0.2), temperature

    def forward(self, x, mask):                       # x (B, N, in), mask (B, N)
        x = self.drop(x)
        e = torch.tanh(self.att_proj(x[:, :, None] * x[:, None])) @ self.att_weight  # (B, N, N, 1)
        a = _masked_softmax(e.squeeze(-1) / self.temp, mask[:, None, :])            # over j
        x = self.proj_att(a @ x) + self.proj_self(x)
        return F.selu(masked_bn(self.bn, x, mask, 1))


class HeteroGraphAttention(nn.Module):
    """HS-GAL: graph attention over temporal + spectral nodes with a pair-type-specific attention
    weight (T-T, T-S, S-S), plus a master node that attends to all nodes."""

    def __init__(self, in_dim, out_dim, temperature):
        super().__init__()
        self.proj_t, self.proj_s = nn.Linear(in_dim, in_dim), nn.Linear(in_dim, in_dim)
        self.att_proj, self.att_proj_m = nn.Linear(in_dim, out_dim), nn.Linear(in_dim, out_dim)
        self.att_weight, self.att_weight_m = _param(3, out_dim), _param(out_dim, 1)
        self.proj_att, self.proj_self = nn.Linear(in_dim, out_dim), nn.Linear(in_dim, out_dim)
        self.proj_att_m, self.proj_self_m = nn.Linear(in_dim, out_dim), nn.Linear(in_dim, out_dim)
        self.bn, self.drop, self.temp = nn.BatchNorm1d(out_dim), nn.Dropout(0.2), temperature

    def forward(self, t, s, master, mask_t):          # t (B, Nt, in), s (B, Ns, in), master (B, 1, in)
        n_t, n_s = t.shape[1], s.shape[1]
        x = self.drop(torch.cat([self.proj_t(t), self.proj_s(s)], 1))              # (B, N, in)
        mask = torch.cat([mask_t, mask_t.new_ones(len(t), n_s)], 1)                 # (B, N)
        kind = (torch.arange(n_t + n_s, device=x.device) >= n_t).long()            # 0 = T, 1 = S
        w = self.att_weight[kind[:, None] + kind[None, :]]                         # (N, N, out)
        e = (torch.tanh(self.att_proj(x[:, :, None] * x[:, None])) * w).sum(-1)    # (B, N, N)
        a = _masked_softmax(e / self.temp, mask[:, None, :])
        em = torch.tanh(self.att_proj_m(x * master)) @ self.att_weight_m            # (B, N, 1)
        am = _masked_softmax(em.transpose(1, 2) / self.temp, mask[:, None, :])     # (B, 1, N)
        master = self.proj_att_m(am @ x) + self.proj_self_m(master)
        x = F.selu(masked_bn(self.bn, self.proj_att(a @ x) + self.proj_self(x), mask, 1))
        return x[:, :n_t], x[:, n_t:], master


class GraphPool(nn.Module):
    """Graph pooling: score s = sigmoid(w . x), keep the top floor(ratio * n) nodes, scaled by s."""

    def __init__(self, ratio, dim):
        super().__init__()
        self.ratio, self.proj, self.drop = ratio, nn.Linear(dim, 1), nn.Dropout(0.3)

    def forward(self, x, mask):                       # x (B, N, d), mask (B, N) -> (B, k, d), (B, k)
        s = torch.sigmoid(self.proj(self.drop(x))).squeeze(-1)                    # (B, N) in (0, 1)
        keep = (mask.sum(1) * self.ratio).floor().long().clamp(min=1)            # per clip
        k = int(keep.max())                           # note: a CPU-GPU sync point
        # padded nodes score -1, so every clip's valid nodes rank first
        idx = s.masked_fill(~mask, -1.0).topk(k, dim=1).indices                   # (B, k)
        x = torch.gather(x * s[..., None], 1, idx[..., None].expand(-1, -1, x.shape[-1]))
        return x, torch.arange(k, device=x.device) < keep[:, None]


class HeteroStack(nn.Module):
    """One of AASIST's two parallel heterogeneous branches."""

    def __init__(self, d0, d1, ratio, temperature):
        super().__init__()
        self.master = nn.Parameter(torch.randn(1, 1, d0))
        self.gal1 = HeteroGraphAttention(d0, d1, temperature)
        self.gal2 = HeteroGraphAttention(d1, d1, temperature)
        self.pool_t, self.pool_s = GraphPool(ratio, d1), GraphPool(ratio, d1)

    def forward(self, t, s, mask_t):
        t, s, m = self.gal1(t, s, self.master.expand(len(t), -1, -1), mask_t)
        t, mask_t = self.pool_t(t, mask_t)
        s, _ = self.pool_s(s, s.new_ones(s.shape[:2], dtype=torch.bool))
        t2, s2, m2 = self.gal2(t, s, m, mask_t)
        return t + t2, s + s2, m + m2, mask_t


class AASISTHead(nn.Module):
    """AASIST on SSL frames: forward(feats (B, F, D), frame_mask (B, F) or None) -> logits (B, 2)."""

    def __init__(self, in_dim, dims=AASISTDims()):
        super().__init__()
        self.dims = dims
        c, (d0, d1), r, temp = dims.channels, dims.gat_dims, dims.pool_ratios, dims.temperatures
        self.proj = nn.Linear(in_dim, dims.proj_dim)
        self.bn_in = nn.BatchNorm1d(1)
        self.blocks = nn.ModuleList(ResidualBlock(a, b, first=i == 0)
                                    for i, (a, b) in enumerate(zip((1,) + c, c)))
        self.bn_out = nn.BatchNorm1d(c[-1])
        # 1x1-conv attention producing the pooling weights for both node types (64 -> 128 -> 64)
        self.att1, self.att_bn = nn.Conv2d(c[-1], 2 * c[-1], 1), nn.BatchNorm1d(2 * c[-1])
        self.att2 = nn.Conv2d(2 * c[-1], c[-1], 1)
        self.pos_s = nn.Parameter(torch.randn(1, dims.proj_dim // 3, c[-1]))  # spectral position code
        self.gat_s, self.gat_t = GraphAttention(c[-1], d0, temp[0]), GraphAttention(c[-1], d0, temp[1])
        self.pool_s, self.pool_t = GraphPool(r[0], d0), GraphPool(r[1], d0)
        self.stacks = nn.ModuleList(HeteroStack(d0, d1, r[2], temp[2]) for _ in range(2))
        self.drop_way, self.drop = nn.Dropout(0.2), nn.Dropout(0.5)
        self.out = nn.Linear(5 * d1, 2)

    def forward(self, feats, frame_mask=None):
        B, n_frames, _ = feats.shape
        if frame_mask is None:
            frame_mask = feats.new_ones(B, n_frames, dtype=torch.bool)
        x = F.max_pool2d(self.proj(feats).transpose(1, 2)[:, None], 3)          # (B, 1, S, T)
        # a pooled time step is valid when its 3-frame window lies inside the clip
        n_valid = frame_mask.sum(1) // 3
        if bool((n_valid < 1).any()):
            raise ValueError(f"AASIST head needs >= 3 SSL frames per clip, "
                             f"got {frame_mask.sum(1).tolist()}")
        mask = torch.arange(x.shape[-1], device=x.device) < n_valid[:, None]     # (B, T)
        x = F.selu(masked_bn(self.bn_in, x, mask, -1))
        for block in self.blocks:
            x = block(x, mask)
        x = F.selu(masked_bn(self.bn_out, x, mask, -1))                          # (B, C, S, T)
        w = self.att2(masked_bn(self.att_bn, F.selu(self.att1(x)), mask, -1))
        w_time = _masked_softmax(w, mask[:, None, None, :], dim=-1)              # over time
        e_s = (x * w_time).sum(-1).transpose(1, 2) + self.pos_s                  # (B, S, C)
        e_t = (x * torch.softmax(w, dim=-2)).sum(-2).transpose(1, 2)             # (B, T, C); padding 0
        all_s = e_s.new_ones(e_s.shape[:2], dtype=torch.bool)
        s, _ = self.pool_s(self.gat_s(e_s, all_s), all_s)
        t, mask_t = self.pool_t(self.gat_t(e_t, mask), mask)
        # both stacks keep the same number of nodes per clip, so their masks agree
        (t1, s1, m1, mask_t), (t2, s2, m2, _) = (stack(t, s, mask_t) for stack in self.stacks)
        t, s, master = (torch.maximum(self.drop_way(a), self.drop_way(b))
                        for a, b in ((t1, t2), (s1, s2), (m1, m2)))
        t = t * mask_t[..., None]
        n_t = mask_t.sum(1, keepdim=True)
        hidden = torch.cat([t.abs().amax(1), t.sum(1) / n_t, s.abs().amax(1), s.mean(1), master[:, 0]], 1)
        return self.out(self.drop(hidden))                                       # (B, 2)
