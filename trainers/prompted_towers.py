"""Deep prompting: CLIP's towers run layer by layer with prompt tokens inserted
at the input and replaced at deeper layers (VPT, IVLP, MaPLe, PromptSRC; MVLPT's
MVPT reuses the vision side with ``position="after_cls", stage="after_ln_pre"``).

Prompts for a tower are a list ``layer_prompts`` indexed by transformer block:
entry 0 is inserted at the input, entry i >= 1 replaces the previous prompt tokens
right before block i (the outputs of block i-1 at those positions are dropped);
blocks past the end of the list carry the last prompt tokens forward unchanged.
An entry is a (n, width) tensor shared by the batch, or (batch, n, width).

Where prompts go (``position``):
- ``"append"``: after the CLS and patch tokens, [CLS, patches, P] (IVLP, MaPLe);
- ``"after_cls"``: right after the first token, [CLS, P, patches] (MVPT); on the
  text side this is "right after SOS", where deep text prompts always go.
When the input prompts join (``stage``): ``"before_ln_pre"`` (after the positional
embedding, IVLP/MaPLe) or ``"after_ln_pre"`` (MVPT). Prompt tokens never get a
positional embedding.

Both families work: OpenAI's ``clip.model.VisionTransformer`` (sequence-first) and
OpenCLIP's ``VisionTransformer`` with class-token pooling (batch-first); widths and
depths come from the model. Any other image tower (ResNets, timm towers,
attention-pooled or average-pooled towers) is refused with one line naming the
method, the backbone and the backbones that work (``check_deep_prompt_backbone``).
"""
import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint as grad_checkpoint

from toolbox.errors import UserError

from .backbones import deep_prompt_backbones, deep_prompt_problem
from .clip_model import text_tower

POSITIONS = ("append", "after_cls")
STAGES = ("before_ln_pre", "after_ln_pre")


def check_deep_prompt_backbone(method, name):
    """A UserError when backbone ``name`` cannot take prompts in its image tower."""
    problem = deep_prompt_problem(name)
    if problem:
        raise UserError(f"{method} cannot run on backbone {name}: {problem}; it needs a ViT image "
                        f"tower with a class token: {deep_prompt_backbones()}")


# ---- token surgery (tokens on dimension ``tdim``: 1 batch-first, 0 sequence-first) ----


def _as_layout(prompts, x, tdim):
    """``prompts`` (n, D) or (B, n, D) in x's layout and dtype, expanded over the batch."""
    batch = x.shape[1 - tdim]
    p = prompts.to(x.dtype)
    if p.dim() == 2:
        p = p.unsqueeze(0).expand(batch, -1, -1)
    return p if tdim == 1 else p.transpose(0, 1)


def insert_prompts(x, prompts, position="append", tdim=1):
    """``x`` with the prompt tokens added at ``position`` (nothing is dropped)."""
    p = _as_layout(prompts, x, tdim)
    if position == "append":
        return torch.cat([x, p], dim=tdim)
    if position == "after_cls":
        first = x.narrow(tdim, 0, 1)
        return torch.cat([first, p, x.narrow(tdim, 1, x.shape[tdim] - 1)], dim=tdim)
    raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")


def replace_prompts(x, prompts, n_old, position="append", tdim=1):
    """``x`` whose ``n_old`` prompt tokens at ``position`` are replaced by ``prompts``."""
    length = x.shape[tdim]
    if position == "append":
        return insert_prompts(x.narrow(tdim, 0, length - n_old), prompts, position, tdim)
    if position == "after_cls":
        kept = torch.cat([x.narrow(tdim, 0, 1), x.narrow(tdim, 1 + n_old, length - 1 - n_old)],
                         dim=tdim)
        return insert_prompts(kept, prompts, position, tdim)
    raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")


def _openai_block(block, x, mask):
    """``clip.model.ResidualAttentionBlock`` with a call-time mask (its own is fixed)."""
    h = block.ln_1(x)
    x = x + block.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
    return x + block.mlp(block.ln_2(x))


def run_blocks(blocks, x, layer_prompts, position, tdim, openai, mask=None, n_current=0,
               use_checkpoint=False):
    """The blocks over ``x`` with prompts replaced before blocks 1.. (entry 0 of
    ``layer_prompts`` is the caller's: already in ``x``, ``n_current`` tokens)."""
    def one(block):
        if openai:
            return lambda t: _openai_block(block, t, mask)
        return lambda t: block(t, attn_mask=mask)

    for i, block in enumerate(blocks):
        if 1 <= i < len(layer_prompts) and layer_prompts[i] is not None:
            x = replace_prompts(x, layer_prompts[i], n_current, position, tdim)
            n_current = layer_prompts[i].shape[-2]
        fn = one(block)
        if use_checkpoint and torch.is_grad_enabled() and x.requires_grad:
            x = grad_checkpoint(fn, x, use_reentrant=False)  # recompute in backward: less memory
        else:
            x = fn(x)
    return x


def check_depth(method, tower, depth, n_layers):
    if depth < 0 or depth > n_layers:
        raise UserError(f"{method}: a {tower} prompt depth of {depth} does not fit the backbone's "
                        f"{n_layers} {tower} layers; set it between 0 and {n_layers}")


# ---- the towers ------------------------------------------------------------------------


class VisionTower:
    """The image tower of a CLIP ViT, run with deep prompts. A plain object, not a
    module: the frozen tower must never land in a trainer's state dict."""

    def __init__(self, clip_model, method="deep prompting", backbone=""):
        from clip.model import VisionTransformer as OpenAIViT

        visual = clip_model.visual
        self.openai = isinstance(visual, OpenAIViT)
        if not self.openai and not _is_open_clip_token_vit(visual):
            raise UserError(f"{method} cannot run on backbone {backbone or type(visual).__name__}: "
                            f"its image tower ({type(visual).__name__}) is not a ViT with a class "
                            f"token; it needs one of: {deep_prompt_backbones()}")
        self.visual = visual
        transformer = visual.transformer
        self.blocks = transformer.resblocks
        self.tdim = 1 if getattr(transformer, "batch_first", False) else 0
        if self.openai:
            self.tdim = 0

    @property
    def width(self):
        return int(self.visual.class_embedding.shape[-1])

    @property
    def layers(self):
        return len(self.blocks)

    def embed(self, image):
        """Class + patch tokens with the positional embedding (N, 1+P, D), before ln_pre."""
        v = self.visual
        x = v.conv1(image.to(v.conv1.weight.dtype))
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        if not self.openai:
            x = v.patch_dropout(x)
        return x

    def __call__(self, image, layer_prompts=(), position="append", stage="before_ln_pre",
                 use_checkpoint=False):
        """Projected pooled (CLS) features of ``image`` (not normalised); with no
        prompts, exactly the frozen tower's ``encode_image``."""
        v = self.visual
        x = self.embed(image)
        first = layer_prompts[0] if len(layer_prompts) else None
        n = 0
        if first is not None and stage == "before_ln_pre":
            x, n = insert_prompts(x, first, position), first.shape[-2]
        x = v.ln_pre(x)
        if first is not None and stage == "after_ln_pre":
            x, n = insert_prompts(x, first, position), first.shape[-2]
        elif stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if self.tdim == 0:
            x = x.permute(1, 0, 2)  # NLD -> LND
        x = run_blocks(self.blocks, x, layer_prompts, position, self.tdim, self.openai,
                       n_current=n, use_checkpoint=use_checkpoint)
        if self.tdim == 0:
            x = x.permute(1, 0, 2)
        pooled = v.ln_post(x[:, 0])  # the class token (prompts never sit at 0)
        if v.proj is not None:
            pooled = pooled @ v.proj
        return pooled


def _is_open_clip_token_vit(visual):
    try:
        from open_clip.transformer import VisionTransformer
    except ImportError:
        return False
    return (isinstance(visual, VisionTransformer) and getattr(visual, "attn_pool", None) is None
            and getattr(visual, "pool_type", "tok") == "tok")


class DeepTextEncoder(nn.Module):
    """CLIP's text transformer over prompt embeddings, with deep prompts that
    replace the tokens right after SOS (positions 1..n) before blocks 1..J-1.
    With no deep prompts it equals ``clip_model.encode_text`` of the same tokens.
    """

    def __init__(self, clip_model):
        super().__init__()
        tower = text_tower(clip_model)
        self.tower = tower
        self.blocks = tower.transformer.resblocks
        self.openai = tower.openai
        self.tdim = 0 if (tower.openai or not getattr(tower.transformer, "batch_first", True)) else 1
        ctx = tower.context_length
        self.register_buffer("attn_mask", torch.full((ctx, ctx), float("-inf")).triu_(1),
                             persistent=False)

    @property
    def layers(self):
        return len(self.blocks)

    @property
    def width(self):
        return self.tower.width

    def forward(self, prompts, tokenized_prompts, layer_prompts=(), n_ctx=0):
        """``prompts`` (C, L, D) embeddings whose positions 1..n_ctx are the layer-0
        context; ``layer_prompts[i]`` (i >= 1) replaces them before block i."""
        t = self.tower
        eot = tokenized_prompts.argmax(dim=-1).to(prompts.device)
        length = int(eot.max().item()) + 1  # causal: tokens after the last EOT change nothing
        x = prompts[:, :length] + t.positional_embedding[:length].to(prompts.dtype)
        mask = self.attn_mask[:length, :length].to(x.device, x.dtype)
        if self.tdim == 0:
            x = x.permute(1, 0, 2)
        x = run_blocks(self.blocks, x, layer_prompts, "after_cls", self.tdim, self.openai,
                       mask=mask, n_current=n_ctx)
        if self.tdim == 0:
            x = x.permute(1, 0, 2)
        x = t.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        return t.project(x)
