"""Low-rank adapters (LoRA) on the q, k, v (and optionally output) projections of
``nn.MultiheadAttention``, for CLIP-LoRA (trainers/clip_lora.py).

OpenAI CLIP and OpenCLIP both attend with ``nn.MultiheadAttention``, which packs q, k
and v into one ``in_proj_weight``: a LoRA branch per projection cannot be added from
outside, so ``LoRAMultiheadAttention`` replaces the module with one that computes the
same attention from the original (frozen) packed weights, adding
``scaling * B A dropout(x)`` to each adapted projection. B starts at zero, so a fresh
adapter changes nothing. The call signature is the replaced module's (sequence-first or
batch-first, ``attn_mask`` float or bool), so the towers' own forward code runs as is.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

PROJECTIONS = ("q", "k", "v", "o")


def lora_scaling(alpha, rank, rule="rslora"):
    """Upstream scales by alpha / sqrt(rank) (rsLoRA); classic LoRA by alpha / rank."""
    return alpha / math.sqrt(rank) if rule == "rslora" else alpha / rank


class LoRABranch(nn.Module):
    """``scaling * B(A(dropout(x)))``: A (rank, in) Kaiming-uniform, B (out, rank) zero,
    dropout on the branch input only (the frozen path sees x unchanged)."""

    def __init__(self, in_features, out_features, rank, scaling, dropout):
        super().__init__()
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # as nn.Linear (and upstream)
        self.scaling = scaling
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        return F.linear(F.linear(self.dropout(x), self.A.to(x.dtype)),
                        self.B.to(x.dtype)) * self.scaling


class LoRAMultiheadAttention(nn.Module):
    """``base`` (an nn.MultiheadAttention, frozen) with LoRA branches on the
    projections named in ``branches`` (a ModuleDict over q, k, v, o)."""

    def __init__(self, base, branches):
        super().__init__()
        if not base._qkv_same_embed_dim or base.bias_k is not None or base.add_zero_attn:
            raise ValueError("LoRA supports plain self-attention MultiheadAttention only")
        self.base = base
        self.branches = branches
        self.batch_first = base.batch_first
        self.num_heads = base.num_heads
        self.embed_dim = base.embed_dim

    # attributes other code reads from an nn.MultiheadAttention
    @property
    def in_proj_weight(self):
        return self.base.in_proj_weight

    @property
    def in_proj_bias(self):
        return self.base.in_proj_bias

    @property
    def out_proj(self):
        return self.base.out_proj

    def _branch(self, name, x):
        return self.branches[name](x) if name in self.branches else None

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        base = self.base
        if not self.batch_first:  # (L, N, E) -> (N, L, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        w, b = base.in_proj_weight, base.in_proj_bias
        e = self.embed_dim
        if query is key and key is value:  # one packed projection, as nn.MultiheadAttention
            q, k, v = F.linear(query, w.to(query.dtype),
                               None if b is None else b.to(query.dtype)).chunk(3, dim=-1)
        else:
            ws = w.split(e)
            bs = (None, None, None) if b is None else b.split(e)
            q, k, v = (F.linear(x, wi.to(x.dtype), None if bi is None else bi.to(x.dtype))
                       for x, wi, bi in zip((query, key, value), ws, bs))
        dq, dk, dv = (self._branch(p, x) for p, x in (("q", query), ("k", key), ("v", value)))
        q = q if dq is None else q + dq
        k = k if dk is None else k + dk
        v = v if dv is None else v + dv
        n, lq, _ = q.shape
        ls = k.shape[1]
        h = self.num_heads

        def heads(t, length):
            return t.reshape(n, length, h, e // h).transpose(1, 2)

        mask = _float_mask(attn_mask, key_padding_mask, q.dtype, n, h, lq, ls)
        out = F.scaled_dot_product_attention(heads(q, lq), heads(k, ls), heads(v, ls),
                                             attn_mask=mask,
                                             is_causal=bool(is_causal and mask is None))
        out = out.transpose(1, 2).reshape(n, lq, e)
        proj = F.linear(out, base.out_proj.weight.to(out.dtype),
                        None if base.out_proj.bias is None else base.out_proj.bias.to(out.dtype))
        delta = self._branch("o", out)
        if delta is not None:
            proj = proj + delta
        if not self.batch_first:
            proj = proj.transpose(0, 1)
        return proj, None  # attention weights are never used by the towers


def _float_mask(attn_mask, key_padding_mask, dtype, n, h, lq, ls):
    """nn.MultiheadAttention's masks (bool True = blocked, or additive floats) as one
    additive float mask broadcastable to (n, h, lq, ls), or None."""
    mask = None
    if attn_mask is not None:
        mask = attn_mask
        if mask.dtype == torch.bool:
            mask = torch.zeros_like(mask, dtype=dtype).masked_fill(mask, float("-inf"))
        mask = mask.to(dtype)
        if mask.dim() == 3:  # (n * h, lq, ls)
            mask = mask.view(n, h, lq, ls)
    if key_padding_mask is not None:
        pad = key_padding_mask
        if pad.dtype == torch.bool:
            pad = torch.zeros_like(pad, dtype=dtype).masked_fill(pad, float("-inf"))
        pad = pad.to(dtype).view(n, 1, 1, ls)
        mask = pad if mask is None else mask + pad
    return mask


def attention_blocks(tower):
    """The residual blocks of a tower's transformer (OpenAI and OpenCLIP both keep them
    in ``transformer.resblocks``), or [] (a ResNet image tower)."""
    transformer = getattr(tower, "transformer", None)
    return list(getattr(transformer, "resblocks", []) or [])


def select_layers(n_layers, position):
    """Indices of the blocks to adapt: all, or the upper / lower half (upstream names
    fixed indices for 12-layer models; these follow any depth)."""
    if position == "all":
        return list(range(n_layers))
    if position == "half-up":
        return list(range(n_layers // 2, n_layers))
    if position == "half-bottom":
        return list(range(n_layers // 2))
    raise ValueError(position)


def add_lora(tower, rank, alpha, dropout, params, position="all", scaling_rule="rslora"):
    """Replace the ``nn.MultiheadAttention`` of the selected blocks of ``tower`` by
    LoRA versions; return the adapters as a ModuleList (one ModuleDict per block)."""
    adapters = nn.ModuleList()
    blocks = attention_blocks(tower)
    scaling = lora_scaling(alpha, rank, scaling_rule)
    for i in select_layers(len(blocks), position):
        attn = getattr(blocks[i], "attn", None)
        if not isinstance(attn, nn.MultiheadAttention):
            continue
        e = attn.embed_dim
        branches = nn.ModuleDict({p: LoRABranch(e, e, rank, scaling, dropout) for p in params})
        branches.to(attn.in_proj_weight.device)
        blocks[i].attn = LoRAMultiheadAttention(attn, branches)
        adapters.append(branches)
    return adapters
