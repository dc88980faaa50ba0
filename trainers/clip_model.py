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

from .backbones import (RANDOM, _open_clip, check_backbone_choice, clip_cache_dir,
                        create_backbone, get_backbone, list_backbones, open_clip_text_problem,
                        openai_weights_file)
from .tiny_clip import tiny_state_dict

CLIP_NAMES = list(clip_api._MODELS)  # RN50 ... ViT-L/14@336px (clip's own names)


def weights_file(name):
    """Where the clip package keeps the weights of OpenAI backbone ``name``."""
    entry = get_backbone(name)
    if entry.family != "openai":
        raise UserError(f"backbone '{name}' is not an OpenAI CLIP; it has no clip cache file")
    return openai_weights_file(entry.arch)


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
    if isinstance(obj, dict) and obj and next(iter(obj)).startswith("module."):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _download(name, timeout=20):
    """Download OpenAI CLIP ``name`` (clip's own name, e.g. RN50) with clip's
    downloader (which checks the SHA256) into a temporary folder, then move it
    into place: an interrupted download never leaves a partial weights file."""
    target = openai_weights_file(name)
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


def _check_path(path):
    path = osp.expanduser(path)
    if not osp.isfile(path):
        raise UserError(f"MODEL.BACKBONE.PATH {path} does not exist; point it at a CLIP "
                        "weights file (e.g. ~/.cache/clip/RN50.pt)")
    return path


def clip_state_dict(name, path=""):
    """The state dict for OpenAI or tiny backbone ``name`` (or the file ``path``)."""
    if path:
        return _read_weights(_check_path(path))
    entry = get_backbone(name)
    if entry.family == "tiny":
        return tiny_state_dict(entry.arch, clip_cache_dir())
    if entry.family != "openai":
        raise UserError(f"backbone '{entry.name}' is not an OpenAI or tiny CLIP")
    fpath = openai_weights_file(entry.arch)
    if not osp.isfile(fpath):
        if os.environ.get("CLIP_OFFLINE"):
            raise UserError(f"CLIP weights for {entry.arch} not found at {fpath} (CLIP_OFFLINE is "
                            f"set); copy {osp.basename(fpath)} there or set MODEL.BACKBONE.PATH")
        fpath = _download(entry.arch)
    return _read_weights(fpath)


# ---- what a checkpoint holds ----------------------------------------------------------


def state_dict_spec(sd):
    """``clip.model.CLIP`` arguments of an OpenAI-layout state dict (as
    build_model infers them; OpenCLIP's plain CLIP models use the same keys)."""
    if "visual.proj" in sd:
        conv = sd["visual.conv1.weight"]
        layers = len([k for k in sd if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision = dict(vision_layers=layers, vision_width=conv.shape[0],
                      vision_patch_size=conv.shape[-1], image_resolution=conv.shape[-1] * grid)
    else:
        counts = tuple(len({k.split(".")[2] for k in sd if k.startswith(f"visual.layer{b}.")})
                       for b in (1, 2, 3, 4))
        out = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        vision = dict(vision_layers=counts, vision_width=sd["visual.layer1.0.conv1.weight"].shape[0],
                      vision_patch_size=None, image_resolution=out * 32)
    width = sd["ln_final.weight"].shape[0]
    return dict(embed_dim=sd["text_projection"].shape[1], context_length=sd["positional_embedding"].shape[0],
                vocab_size=sd["token_embedding.weight"].shape[0], transformer_width=width,
                transformer_heads=width // 64,
                transformer_layers=len({k.split(".")[2] for k in sd
                                        if k.startswith("transformer.resblocks.")}), **vision)


def _same_spec(a, b):
    keys = ("embed_dim", "image_resolution", "vision_width", "vision_patch_size",
            "transformer_width", "transformer_layers")
    return all(a[k] == b[k] for k in keys) and tuple(_flat(a["vision_layers"])) == \
        tuple(_flat(b["vision_layers"]))


def _flat(x):
    return x if isinstance(x, (list, tuple)) else (x,)


def _open_clip_spec(arch):
    """CLIP arguments of a plain OpenCLIP architecture, or None (timm/HF towers)."""
    open_clip = _open_clip()

    cfg = open_clip.get_model_config(arch) or {}
    v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    if "timm_model_name" in v or "hf_model_name" in t or "width" not in v:
        return None
    size = v.get("image_size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    return dict(embed_dim=cfg["embed_dim"], image_resolution=size, vision_layers=v["layers"],
                vision_width=v["width"], vision_patch_size=v.get("patch_size"),
                transformer_width=t.get("width", 512), transformer_layers=t.get("layers", 12))


def matching_backbones(sd):
    """Registered backbones (canonical names, registry order) whose architecture
    the OpenAI-layout state dict ``sd`` has; [] for another layout."""
    try:
        spec = state_dict_spec(sd)
    except (KeyError, IndexError, AttributeError, TypeError):
        return []
    names = []
    for name in list_backbones():
        entry = get_backbone(name)
        other = entry.spec or (_open_clip_spec(entry.arch) if entry.family == "open_clip" else None)
        if other and _same_spec(spec, other):
            names.append(name)
    return names


def describe_checkpoint(sd):
    """The registered backbones whose architecture ``sd`` has, as text."""
    try:
        spec = state_dict_spec(sd)
    except (KeyError, IndexError, AttributeError, TypeError):
        return "not a CLIP of a known layout"
    names = matching_backbones(sd)
    if names:
        return "the architecture of " + " / ".join(names[:4])
    kind = (f"ViT width {spec['vision_width']} patch {spec['vision_patch_size']}"
            if spec["vision_patch_size"] else f"ResNet {spec['vision_layers']}")
    return f"an unregistered architecture ({kind}, {spec['image_resolution']} px)"


def _wrong_arch(entry, path, sd, err=None, cache_file=""):
    where = f"MODEL.BACKBONE.PATH {path}" if path else f"the weights file {cache_file}"
    return UserError(f"{where} holds {describe_checkpoint(sd)}, not backbone {entry.name}; set "
                     f"MODEL.BACKBONE.NAME to the checkpoint's architecture or give a checkpoint of "
                     f"{entry.name}" + (f" ({err})" if err else ""))


# ---- the two families ---------------------------------------------------------------------


def weights_file_of(entry):
    from .backbones import weights_file as registry_weights_file

    return registry_weights_file(entry.name)


def entry_activation(entry):
    """The activation backbone ``entry`` runs with: quick_gelu (OpenAI-style CLIPs and
    OpenCLIP's *-quickgelu architectures) or gelu (other OpenCLIP architectures, as
    they load a local checkpoint)."""
    if entry.family != "open_clip":
        return "quick_gelu"
    cfg = _open_clip().get_model_config(entry.arch) or {}
    return "quick_gelu" if cfg.get("quick_gelu") else "gelu"


def _activation_twins(entry):
    """Registered backbones of ``entry``'s architecture that run another activation."""
    spec = entry.spec or (_open_clip_spec(entry.arch) if entry.family == "open_clip" else None)
    if not spec:
        return []
    mine = entry_activation(entry)
    twins = []
    for name in list_backbones():
        other = get_backbone(name)
        if other.name == entry.name or other.family == entry.family:
            continue
        other_spec = other.spec or (_open_clip_spec(other.arch) if other.family == "open_clip"
                                    else None)
        if other_spec and _same_spec(spec, other_spec) and entry_activation(other) != mine:
            twins.append(other.name)
    return twins


def check_activation(entry, path="", activation="", plain=True):
    """MODEL.BACKBONE.ACTIVATION against backbone ``entry``. A plain state dict in
    ``path`` (not an OpenAI TorchScript file) whose architecture is registered with
    both activations needs it: the weights do not say which activation trained them,
    and the other one gives other features under this backbone's name."""
    if not activation and not (path and plain):
        return
    mine = entry_activation(entry)
    if activation and activation != mine:
        twins = _activation_twins(entry)
        instead = (f"load these weights as {' or '.join(twins[:2])} (MODEL.BACKBONE.NAME)"
                   if twins else "no registered backbone of this architecture runs it")
        raise UserError(f"MODEL.BACKBONE.ACTIVATION {activation} does not fit backbone "
                        f"{entry.name}, which runs {mine}; {instead}, or drop "
                        "MODEL.BACKBONE.ACTIVATION")
    if activation or not (path and plain):
        return
    twins = _activation_twins(entry)
    if twins:
        other = "gelu" if mine == "quick_gelu" else "quick_gelu"
        raise UserError(f"MODEL.BACKBONE.PATH {path} is a plain state dict of an architecture "
                        f"registered as {entry.name} ({mine}) and {twins[0]} ({other}), which "
                        "the weights cannot tell apart; say which activation trained it: "
                        f"MODEL.BACKBONE.ACTIVATION {mine} (loads as {entry.name}) or "
                        f"MODEL.BACKBONE.ACTIVATION {other} with MODEL.BACKBONE.NAME {twins[0]}")


def load_openai_style(entry, path="", random_weights=False, activation=""):
    """An OpenAI or tiny CLIP (``clip.model.CLIP``); every source goes through build_model."""
    from clip.model import CLIP

    if random_weights:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return CLIP(**entry.spec)
    state_dict = clip_state_dict(entry.name, path)
    try:
        spec = state_dict_spec(state_dict)
    except (KeyError, IndexError, AttributeError, TypeError) as e:
        # the problem and the fix first, then which tensor was looked for
        what = (f"no tensor {e.args[0]!r}" if isinstance(e, KeyError) and e.args
                else f"{type(e).__name__}: {' '.join(str(e).split())[:120]}")
        raise UserError(f"weights for backbone '{entry.name}'{(' from ' + path) if path else ''} "
                        "do not form a CLIP model; give a CLIP weights file with "
                        f"MODEL.BACKBONE.PATH or fix MODEL.BACKBONE.NAME ({what})") from None
    if not _same_spec(spec, entry.spec):
        raise _wrong_arch(entry, path, state_dict, cache_file=weights_file_of(entry))
    try:
        model = build_model(state_dict)
    except (KeyError, RuntimeError, ValueError, IndexError, TypeError) as e:
        detail = " ".join(str(e).split())  # one line: the problem and the fix first
        raise UserError(f"weights for backbone '{entry.name}'{(' from ' + path) if path else ''} "
                        "do not form a CLIP model; give a CLIP weights file with "
                        f"MODEL.BACKBONE.PATH or fix MODEL.BACKBONE.NAME ({type(e).__name__}: "
                        f"{detail[:300]})") from None
    # weights that form this CLIP: is it the activation they were trained with?
    check_activation(entry, path, activation, plain=bool(path) and not _is_torchscript(path))
    return model


def _open_clip_download(entry, tag):
    """The local file of OpenCLIP weights ``tag`` (downloaded into open_clip's
    cache when online), or one line saying what to do offline."""
    from open_clip.pretrained import download_pretrained

    from .backbones import _open_clip_tag_cfg, open_clip_cached_file

    cached = open_clip_cached_file(entry.arch, tag)
    if cached:
        return cached
    cfg = _open_clip_tag_cfg(entry.arch, tag)
    source = cfg.get("hf_hub") or cfg.get("url") or cfg.get("file")
    fix = (f"on a machine with internet run `python -c \"import open_clip; open_clip.create_model("
           f"'{entry.arch}', pretrained='{tag}')\"` and copy open_clip's cache (~/.cache/huggingface "
           f"or ~/.cache/clip) here, or set MODEL.BACKBONE.PATH to a local checkpoint file")
    if os.environ.get("CLIP_OFFLINE"):
        raise UserError(f"OpenCLIP weights {entry.name} '{tag}' ({source}) not in open_clip's cache "
                        f"(CLIP_OFFLINE is set); {fix}")
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        return download_pretrained(cfg)
    except Exception as e:
        raise UserError(f"OpenCLIP weights {entry.name} '{tag}' ({source}) not in open_clip's cache "
                        f"and the download failed ({type(e).__name__}); {fix}") from None
    finally:
        socket.setdefaulttimeout(old)


def _is_torchscript(path):
    """Whether ``path`` is a TorchScript archive (a zip holding constants.pkl)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any(n == "constants.pkl" or n.endswith("/constants.pkl") for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


@contextlib.contextmanager
def _quiet_logging():
    import logging

    old = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(old)


def load_open_clip(entry, pretrained="", path="", random_weights=False, activation=""):
    """An OpenCLIP model of ``entry``: random, from a tag in open_clip's cache
    (downloaded when online) or from a local checkpoint."""
    open_clip = _open_clip()

    check_backbone_choice(entry.name, RANDOM if random_weights else pretrained, path)
    kwargs = dict(pretrained=None, load_weights=False, pretrained_image=False, pretrained_text=False)
    if random_weights:
        with torch.random.fork_rng(devices=[]), _quiet_logging():
            torch.manual_seed(0)
            return open_clip.create_model(entry.arch, **kwargs)
    if path:
        file = _check_path(path)
        quick_gelu = False
    else:
        file = _open_clip_download(entry, pretrained)
        quick_gelu = bool(open_clip.get_pretrained_cfg(entry.arch, pretrained).get("quick_gelu"))
    # OpenAI's own files (the clip cache, or the 'openai' tags' URL downloads) are
    # TorchScript archives, which torch.load(weights_only=True) refuses; their models
    # all use QuickGELU.
    scripted = _is_torchscript(file)
    with _quiet_logging():  # open_clip logs "initialized randomly" before the weights load
        model = open_clip.create_model(entry.arch, force_quick_gelu=quick_gelu or scripted,
                                       **kwargs)
    try:
        with warnings.catch_warnings():  # torch.load's "dispatching to torch.jit.load"
            warnings.simplefilter("ignore")
            open_clip.load_checkpoint(model, file, strict=True, weights_only=not scripted)
    except (RuntimeError, KeyError, ValueError) as e:
        try:
            sd = _read_weights(file) if scripted else open_clip.factory.load_state_dict(file)
        except Exception:
            raise UserError(f"cannot read OpenCLIP checkpoint {file} ({type(e).__name__}); the "
                            "file is damaged or not a checkpoint") from None
        raise _wrong_arch(entry, path or file, sd, "load_state_dict failed") from None
    check_activation(entry, path, activation, plain=bool(path) and not scripted)
    return model


def load_clip(name, path="", device="cpu", pretrained="", activation=""):
    """A frozen fp32 CLIP of backbone ``name`` in eval mode (see create_backbone)."""
    return create_backbone(name, pretrained, path, device, activation=activation)[0]


def image_resolution(model):
    """The input size (pixels) the image tower of ``model`` expects."""
    v = model.visual
    if hasattr(v, "input_resolution"):
        return v.input_resolution
    size = getattr(v, "image_size", None)
    if size is None:
        size = model.visual.preprocess_cfg["size"]
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    return size[0] if size[0] == size[1] else size


def embed_dim(model):
    """Width of the joint image-text feature space."""
    tower = text_tower(model)
    proj = tower.text_projection
    if proj is None:
        return tower.width
    return proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1]


def load_clip_from_cfg(cfg, device="cpu"):
    """Load ``MODEL.BACKBONE`` and check INPUT.SIZE matches its resolution."""
    b = cfg.MODEL.BACKBONE
    model = load_clip(b.NAME, b.PATH, device, str(b.PRETRAINED or ""), b.ACTIVATION)
    res = image_resolution(model)
    want = res if isinstance(res, tuple) else (res, res)
    if tuple(cfg.INPUT.SIZE) != tuple(want):
        raise UserError(f"INPUT.SIZE {tuple(cfg.INPUT.SIZE)} does not match backbone "
                        f"{b.NAME}'s input resolution {res}; drop INPUT.SIZE from the config (it "
                        f"defaults to the backbone's) or set INPUT.SIZE {tuple(want)}")
    return model


def tokenize(texts, context_length=77):
    """Token ids; a text over the context length is a UserError, never cut."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    try:
        return clip_api.tokenize(texts, context_length=context_length)
    except RuntimeError:
        n = {t: len(clip_api._tokenizer.encode(t)) + 2 for t in texts}
        long = next(t for t in texts if n[t] > context_length)
        raise UserError(f"prompt '{long}' has {n[long]} tokens, more than the text encoder's "
                        f"{context_length} (context words 'X' + class name); use a smaller "
                        "N_CTX or a shorter class name") from None


class TextTower:
    """The text side of a CLIP, the same for both families (the adapter the
    prompt learners and TextEncoder use).

    OpenAI's ``clip.model.CLIP`` runs its transformer sequence-first with a
    fixed 77-token mask; OpenCLIP's is batch-first (or says otherwise in
    ``batch_first``), takes the mask as an argument, may sit in ``model.text``
    (CustomTextCLIP) and may hold the projection as an ``nn.Linear``. Only
    towers with a causal mask that pool at the end-of-text token get here
    (``open_clip_text_problem`` refuses the others).
    """

    def __init__(self, model):
        from clip.model import CLIP as OpenAICLIP

        text = getattr(model, "text", None)
        src = text if text is not None and hasattr(text, "token_embedding") else model
        self.openai = isinstance(model, OpenAICLIP)
        self.token_embedding = src.token_embedding
        self.positional_embedding = src.positional_embedding
        self.transformer = src.transformer
        self.ln_final = src.ln_final
        self.text_projection = src.text_projection
        self.context_length = int(src.positional_embedding.shape[0])

    @property
    def width(self):
        return self.ln_final.weight.shape[0]

    @property
    def device(self):
        return self.token_embedding.weight.device

    def tokenize(self, texts):
        return tokenize(texts, self.context_length)

    def embed(self, tokens):
        return self.token_embedding(tokens.to(self.device))

    def run(self, x, mask):
        """The transformer blocks over ``x`` (N, L, D) with the (L, L) mask."""
        if not self.openai:
            return self.transformer(x, attn_mask=mask)
        x = x.permute(1, 0, 2)  # NLD -> LND
        for block in self.transformer.resblocks:
            h = block.ln_1(x)
            x = x + block.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
            x = x + block.mlp(block.ln_2(x))
        return x.permute(1, 0, 2)

    def project(self, x):
        if self.text_projection is None:
            return x
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection


def text_tower(model):
    return TextTower(model)


def text_width(model):
    """Width of the token embeddings (the size of a context vector)."""
    return text_tower(model).width


class TextEncoder(nn.Module):
    """CLIP's text transformer over token embeddings (not token ids).

    Attention is causal, so tokens after the end-of-text token never affect
    its feature: sequences are cut after the longest EOT position, which
    gives the same features as the full context at a fraction of the cost.
    Works over both families through ``TextTower``.
    """

    def __init__(self, clip_model):
        super().__init__()
        tower = text_tower(clip_model)
        self.tower = tower
        self.transformer = tower.transformer
        self.positional_embedding = tower.positional_embedding
        self.ln_final = tower.ln_final
        self.text_projection = tower.text_projection
        ctx = tower.context_length
        mask = torch.full((ctx, ctx), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, prompts, tokenized_prompts):
        eot = tokenized_prompts.argmax(dim=-1).to(prompts.device)
        length = int(eot.max().item()) + 1
        x = prompts[:, :length] + self.positional_embedding[:length].to(prompts.dtype)
        x = self.tower.run(x, self.attn_mask[:length, :length].to(x.dtype))
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        return self.tower.project(x)


def context_init(clip_model, n_ctx, ctx_init="", n_copies=None, std=0.02):
    """Initial context vectors and the text that stands for them in prompts.

    With ``ctx_init`` (e.g. "a photo of a") the vectors are its word
    embeddings and ``n_ctx`` becomes its token count; otherwise N(0, std).
    Returns (tensor (n_ctx, d) or (n_copies, n_ctx, d), prompt_prefix).
    """
    tower = text_tower(clip_model)
    dim = tower.width
    if ctx_init:
        ctx_init = ctx_init.replace("_", " ").strip()
        tokens = tower.tokenize([ctx_init])
        n_ctx = int(tokens.argmax(-1).item()) - 1
        with torch.no_grad():
            emb = tower.embed(tokens)
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
        tower = text_tower(clip_model)
        tokenized = tower.tokenize(prompts)
        device = tower.device
        with torch.no_grad():
            emb = tower.embed(tokenized).float()
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
    tower = text_tower(clip_model)
    feats = []
    for template in templates:
        texts = [template.format(c.replace("_", " ")) for c in classnames]
        tok = tower.tokenize(texts).to(tower.device)
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
