"""Everything about CLIP that trainers share: loading a model by name, from a
local file or as a deterministic tiny model; the text encoder over token
embeddings; prompt assembly around learnable context; hand-crafted features.
"""
import contextlib
import os
import os.path as osp
import shutil
import socket
import tempfile
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

with warnings.catch_warnings():  # openai-clip imports the deprecated pkg_resources
    warnings.simplefilter("ignore")
    from clip import clip as clip_api
    from clip.model import build_model

from toolbox.errors import UserError

from .tiny_clip import TINY_NAMES, tiny_state_dict

CLIP_NAMES = list(clip_api._MODELS)  # RN50 ... ViT-L/14@336px

def clip_cache_dir():
    return osp.expanduser(os.environ.get("CLIP_CACHE", "~/.cache/clip"))


def weights_file(name):
    """Where the clip package keeps the weights of ``name``."""
    return osp.join(clip_cache_dir(), osp.basename(clip_api._MODELS[name]))


def _read_weights(path):
    """State dict from a CLIP file: a TorchScript archive (the official .pt
    files) or a plain state dict (``clip.load`` fails on the latter)."""
    try:
        with warnings.catch_warnings():  # jit.load is deprecated, but the files are TorchScript
            warnings.simplefilter("ignore")
            return torch.jit.load(path, map_location="cpu").state_dict()
    except RuntimeError:
        pass
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"cannot read CLIP weights {path} ({type(e).__name__}); the file is "
                        "damaged: delete it and download it again") from None
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    return obj


def _download(name, timeout=20):
    """Download ``name`` with clip's own downloader (which checks the SHA256)
    into a temporary folder, then move it into place: an interrupted download
    never leaves a partial weights file in the cache."""
    target = weights_file(name)
    os.makedirs(clip_cache_dir(), exist_ok=True)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    tmp_dir = tempfile.mkdtemp(prefix=".download-", dir=clip_cache_dir())
    try:
        os.replace(clip_api._download(clip_api._MODELS[name], tmp_dir), target)
        return target
    except Exception as e:
        raise UserError(
            f"CLIP weights for {name} not found at {target} and the download failed "
            f"({type(e).__name__}); on a machine with internet run "
            f"`python -c \"import clip; clip.load('{name}')\"` and copy {osp.basename(target)} "
            f"to {clip_cache_dir()}, or set MODEL.BACKBONE.PATH to a local weights file") from None
    finally:
        socket.setdefaulttimeout(old)
        shutil.rmtree(tmp_dir, ignore_errors=True)


def clip_state_dict(name, path=""):
    """The state dict for backbone ``name`` (or the file ``path``)."""
    if path:
        path = osp.expanduser(path)
        if not osp.isfile(path):
            raise UserError(f"MODEL.BACKBONE.PATH {path} does not exist; point it at a CLIP "
                            "weights file (e.g. ~/.cache/clip/RN50.pt)")
        return _read_weights(path)
    if name in TINY_NAMES:
        return tiny_state_dict(name, clip_cache_dir())
    if name not in clip_api._MODELS:
        raise UserError(f"unknown backbone '{name}'; choose from "
                        f"{', '.join(CLIP_NAMES + TINY_NAMES)}")
    fpath = weights_file(name)
    if not osp.isfile(fpath):
        if os.environ.get("CLIP_OFFLINE"):
            raise UserError(f"CLIP weights for {name} not found at {fpath} (CLIP_OFFLINE is set); "
                            f"copy {osp.basename(fpath)} there or set MODEL.BACKBONE.PATH")
        fpath = _download(name)
    return _read_weights(fpath)


def load_clip(name, path="", device="cpu"):
    """A frozen fp32 CLIP in eval mode; all sources go through build_model."""
    state_dict = clip_state_dict(name, path)
    try:
        model = build_model(state_dict)
    except (KeyError, RuntimeError) as e:
        raise UserError(f"weights for backbone '{name}' {('from ' + path) if path else ''} do "
                        f"not form a CLIP model ({type(e).__name__}: {str(e)[:120]})") from None
    model = model.float().eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_clip_from_cfg(cfg, device="cpu"):
    """Load ``MODEL.BACKBONE`` and check INPUT.SIZE matches its resolution."""
    model = load_clip(cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.PATH, device)
    res = model.visual.input_resolution
    if tuple(cfg.INPUT.SIZE) != (res, res):
        raise UserError(f"INPUT.SIZE {tuple(cfg.INPUT.SIZE)} does not match backbone "
                        f"{cfg.MODEL.BACKBONE.NAME}'s input resolution {res}; set "
                        f"INPUT.SIZE ({res}, {res}) in the trainer config")
    return model


def tokenize(texts):
    return clip_api.tokenize(texts, truncate=True)


class TextEncoder(nn.Module):
    """CLIP's text transformer over token embeddings (not token ids).

    Attention is causal, so tokens after the end-of-text token never affect
    its feature: sequences are cut after the longest EOT position, which
    gives the same features as the full 77 tokens at a fraction of the cost.
    """

    def __init__(self, clip_model):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        ctx = clip_model.context_length
        mask = torch.full((ctx, ctx), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, prompts, tokenized_prompts):
        eot = tokenized_prompts.argmax(dim=-1).to(prompts.device)
        length = int(eot.max().item()) + 1
        x = prompts[:, :length] + self.positional_embedding[:length].to(prompts.dtype)
        x = x.permute(1, 0, 2)  # NLD -> LND
        mask = self.attn_mask[:length, :length].to(x.dtype)
        for block in self.transformer.resblocks:
            h = block.ln_1(x)
            x = x + block.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
            x = x + block.mlp(block.ln_2(x))
        x = x.permute(1, 0, 2)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        return x @ self.text_projection


def context_init(clip_model, n_ctx, ctx_init="", n_copies=None, std=0.02):
    """Initial context vectors and the text that stands for them in prompts.

    With ``ctx_init`` (e.g. "a photo of a") the vectors are its word
    embeddings and ``n_ctx`` becomes its token count; otherwise N(0, std).
    Returns (tensor (n_ctx, d) or (n_copies, n_ctx, d), prompt_prefix).
    """
    dim = clip_model.ln_final.weight.shape[0]
    if ctx_init:
        ctx_init = ctx_init.replace("_", " ").strip()
        tokens = tokenize([ctx_init])
        n_ctx = int(tokens.argmax(-1).item()) - 1
        with torch.no_grad():
            emb = clip_model.token_embedding(tokens.to(clip_model.token_embedding.weight.device))
        vectors = emb[0, 1:1 + n_ctx].detach().float().cpu().clone()
        prefix = ctx_init
        if n_copies:
            vectors = vectors.unsqueeze(0).repeat(n_copies, 1, 1)
    else:
        shape = (n_copies, n_ctx, dim) if n_copies else (n_ctx, dim)
        vectors = torch.empty(shape)
        nn.init.normal_(vectors, std=std)
        prefix = " ".join(["X"] * n_ctx)
    return vectors, prefix


class PromptAssembler(nn.Module):
    """Fixed token embeddings of "<prefix text> <name>." prompts, into which
    learnable context vectors are placed (CoOp's end / middle / front).

    Buffers are not saved in checkpoints: they depend on the class names, so a
    model trained on base classes loads cleanly for new classes.
    """

    def __init__(self, clip_model, names, n_ctx, position="end", prompt_prefix=None,
                 suffix="."):
        super().__init__()
        if position not in ("end", "middle", "front"):
            raise UserError(f"class token position must be end, middle or front, got '{position}'")
        self.n_ctx = n_ctx
        self.position = position
        self.n_names = len(names)
        names = [n.replace("_", " ") for n in names]
        prompt_prefix = prompt_prefix if prompt_prefix is not None else " ".join(["X"] * n_ctx)
        self.name_lens = [len(clip_api._tokenizer.encode(n)) for n in names]
        prompts = [(prompt_prefix + " " + n + suffix).strip() for n in names]
        tokenized = tokenize(prompts)
        device = clip_model.token_embedding.weight.device
        with torch.no_grad():
            emb = clip_model.token_embedding(tokenized.to(device)).float()
        self.register_buffer("tokenized_prompts", tokenized.to(device), persistent=False)
        self.register_buffer("token_prefix", emb[:, :1, :].clone(), persistent=False)  # SOS
        self.register_buffer("token_suffix", emb[:, 1 + n_ctx:, :].clone(), persistent=False)

    def forward(self, ctx, index=None):
        """Prompt embeddings (n, 77, d) for the names at ``index`` (all if None).

        ``ctx``: (n_ctx, d) shared by all names, or (n, n_ctx, d) one per
        selected name.
        """
        prefix, suffix = self.token_prefix, self.token_suffix
        lens = self.name_lens
        if index is not None:
            prefix, suffix = prefix[index], suffix[index]
            lens = [self.name_lens[i] for i in index.tolist()]
        n = prefix.shape[0]
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(n, -1, -1)
        prefix, suffix = prefix.to(ctx.dtype), suffix.to(ctx.dtype)
        if self.position == "end":
            return torch.cat([prefix, ctx, suffix], dim=1)
        half = self.n_ctx // 2
        out = []
        for i in range(n):
            name = suffix[i:i + 1, :lens[i]]
            rest = suffix[i:i + 1, lens[i]:]
            c = ctx[i:i + 1]
            if self.position == "middle":
                out.append(torch.cat([prefix[i:i + 1], c[:, :half], name, c[:, half:], rest], 1))
            else:
                out.append(torch.cat([prefix[i:i + 1], name, c, rest], 1))
        return torch.cat(out, dim=0)

    def tokens(self, index=None):
        return self.tokenized_prompts if index is None else self.tokenized_prompts[index]


@torch.no_grad()
def encode_templates(clip_model, classnames, templates, batch_size=256):
    """Normalised text features per class, averaged over ``templates``
    (each "{}" filled with the class name), as in CLIP's prompt ensembling."""
    device = clip_model.token_embedding.weight.device
    feats = []
    for template in templates:
        texts = [template.format(c.replace("_", " ")) for c in classnames]
        tok = tokenize(texts).to(device)
        out = torch.cat([clip_model.encode_text(tok[i:i + batch_size])
                         for i in range(0, len(texts), batch_size)])
        feats.append(F.normalize(out.float(), dim=-1))
    mean = torch.stack(feats).mean(0)
    return F.normalize(mean, dim=-1)


def autocast_context(device, prec):
    """AMP on CUDA (fp16 with a GradScaler, or bf16); fp32 on CPU."""
    if device.type != "cuda" or prec == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if prec == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype)
