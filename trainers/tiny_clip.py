"""Deterministic tiny CLIP models for tests and the CPU demo.

Built with the real ``clip.model.CLIP`` class and loaded through the same
``build_model`` path as real weights. ``tiny-vit`` / ``tiny-rn`` are random
(seeded) initialisations. A random CLIP maps all images to nearly the same
feature, so nothing can be learned on top of it; ``tiny-vit-digits`` /
``tiny-rn-digits`` are the same models after a short contrastive
pre-training on scikit-learn's bundled digits with captions "a photo of the
digit <name>." — a stand-in for web pre-training so the demo shows learning.

The pre-trained weights ship with the code (``trainers/weights/*.pt``, made by
``python tools/make_tiny_weights.py``, sha256 in ``SHIPPED_SHA256``), because
pre-training on a CPU gives slightly different weights on every CPU type, and
so would every demo figure. A shipped file holds every tensor in full fp32
except the token embedding, of which it holds only the rows pre-training
changed (the tokens of the ten captions); the other 49,000-odd rows are the
initial ones, drawn by ``portable_normal`` from integers only, so they are
bit-identical on every CPU (torch's own ``normal_`` takes a different code
path, with different rounding, on CPUs without AVX2). Without a shipped file
the model is pre-trained once, under a file lock, and cached in the clip cache.
"""
import hashlib
import os
import os.path as osp

import numpy as np
import torch
import torch.nn.functional as F

from clip.model import CLIP

from toolbox.errors import UserError
from toolbox.utils import atomic_write

TINY_SPECS = {
    # Widths are multiples of 64 because build_model infers heads as width // 64;
    # context 77 and the full vocabulary keep clip.tokenize output valid.
    "tiny-vit": dict(embed_dim=64, image_resolution=32, vision_layers=2, vision_width=64,
                     vision_patch_size=8, context_length=77, vocab_size=49408,
                     transformer_width=64, transformer_heads=1, transformer_layers=2),
    "tiny-rn": dict(embed_dim=64, image_resolution=32, vision_layers=(1, 1, 1, 1),
                    vision_width=8, vision_patch_size=None, context_length=77,
                    vocab_size=49408, transformer_width=64, transformer_heads=1,
                    transformer_layers=2),
}
PRETRAINED_SUFFIX = "-digits"
TINY_NAMES = list(TINY_SPECS) + [n + PRETRAINED_SUFFIX for n in TINY_SPECS]
TINY_SEED = 0
PRETRAIN_STEPS = 300
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
TOKEN_KEY = "token_embedding.weight"
WEIGHTS_DIR = osp.join(osp.dirname(osp.abspath(__file__)), "weights")
WEIGHTS_FORMAT = 1
# sha256 of the shipped files; tools/make_tiny_weights.py prints the new value
# when the files are regenerated.
SHIPPED_SHA256 = {
    "tiny-vit-digits": "4e0b135b93502a2033440d21433d10f92514984661c91228458025a0c6fcf815",
    "tiny-rn-digits": "b95f3898eaaa098e02d34ab37a37782ddd3cfd8f801cd5b9e57595c3254759f6",
}
# state_digest of the weights the shipped files load to (tests check them on every CPU)
SHIPPED_DIGEST = {
    "tiny-vit-digits": "b3de700456b46779fc9a5bb42ef515ebfedf8137711471c69a0f0682b249d821",
    "tiny-rn-digits": "8d44aee3c4cee760b19bcc1f4a5d9dc5de6514f299fa65f0487ce8c5763efe06",
}


def portable_normal(shape, std, seed, chunk_rows=4096):
    """Normal-like N(0, std^2) values that are bit-identical on every CPU: each is
    the Irwin-Hall sum of 12 uniforms on a 2^-24 grid drawn as integers from
    torch's Mersenne twister, summed exactly in float64, scaled by std (one
    IEEE rounding) and rounded to float32."""
    g = torch.Generator().manual_seed(seed)
    rows, cols = shape
    out = torch.empty(rows, cols, dtype=torch.float32)
    for r0 in range(0, rows, chunk_rows):
        r1 = min(rows, r0 + chunk_rows)
        u = torch.randint(0, 2 ** 24, (r1 - r0, cols, 12), generator=g, dtype=torch.int64)
        z = (u.sum(-1).to(torch.float64) + 6.0) / 2 ** 24 - 6.0  # sum of (u + 0.5) / 2^24, exact
        out[r0:r1] = (z * std).to(torch.float32)
    return out


def random_tiny(name):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = CLIP(**TINY_SPECS[name])
    with torch.no_grad():  # CLIP's own init is N(0, 0.02) for the token embedding
        emb = model.token_embedding.weight
        emb.copy_(portable_normal(tuple(emb.shape), 0.02, TINY_SEED))
    return model


def digits_tensor(size=32):
    """The sklearn digits as CLIP-normalised RGB tensors (as the demo files look)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    img = torch.from_numpy(np.asarray(digits.images, dtype=np.float32) / 16.0)
    img = (img * 255).round().clamp(0, 255) / 255.0  # 8-bit like the PNG files
    img = F.interpolate(img.unsqueeze(1), size=(size, size), mode="nearest").repeat(1, 3, 1, 1)
    return (img - CLIP_MEAN) / CLIP_STD, torch.from_numpy(digits.target.astype(np.int64))


def pretrain_on_digits(model, steps=PRETRAIN_STEPS, batch_size=128, lr=3e-4, progress=True):
    """Contrastive image-caption training (CLIP's symmetric loss). At lr 1e-3
    tiny-vit stayed at chance from three of four inits; 3e-4 left none there."""
    from clip import clip as clip_api

    from toolbox.utils.progress import progress as progress_bar

    images, labels = digits_tensor(model.visual.input_resolution)
    texts = clip_api.tokenize([f"a photo of the digit {w}." for w in DIGIT_WORDS])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(TINY_SEED)
    model.train()
    bar = progress_bar(range(steps), "pre-training on digits", unit="step",
                       disable=not progress, leave=True)
    for _ in bar:
        idx = torch.randint(len(images), (batch_size,), generator=g)
        img_f = F.normalize(model.encode_image(images[idx]), dim=-1)
        txt_f = F.normalize(model.encode_text(texts), dim=-1)
        logits = model.logit_scale.exp() * img_f @ txt_f.t()
        y = labels[idx]
        # image->text over the 10 captions; text->image over images of the batch
        loss_i = F.cross_entropy(logits, y)
        same = (y.view(1, -1) == torch.arange(10).view(-1, 1)).float()
        logp_t = F.log_softmax(logits.t(), dim=1)
        present = same.sum(1) > 0
        loss_t = -(logp_t * same)[present].sum(1).div(same[present].sum(1)).mean()
        loss = (loss_i + loss_t) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return model.eval()


def pretrained_state(name, progress=True):
    """Pre-train ``name`` (a ``*-digits`` name) from its seeded init; its state dict."""
    base = name[: -len(PRETRAINED_SUFFIX)]
    with torch.random.fork_rng(devices=[]):
        model = pretrain_on_digits(random_tiny(base), progress=progress)
    return model.state_dict()


def pack_state(name, state):
    """The compact form of a pre-trained state: the token-embedding rows that
    differ from the portable init, every other tensor in full."""
    init = random_tiny(name[: -len(PRETRAINED_SUFFIX)]).state_dict()[TOKEN_KEY]
    emb = state[TOKEN_KEY]
    rows = (emb != init).any(1).nonzero().flatten()
    rest = {k: v.clone() for k, v in state.items() if k != TOKEN_KEY}
    return {"format": WEIGHTS_FORMAT, "name": name, "state": rest,
            "token_rows": rows, "token_values": emb[rows].clone()}


def unpack_state(packed):
    name = packed["name"]
    emb = random_tiny(name[: -len(PRETRAINED_SUFFIX)]).state_dict()[TOKEN_KEY]
    emb[packed["token_rows"]] = packed["token_values"]
    state = dict(packed["state"])
    state[TOKEN_KEY] = emb
    return state


def shipped_file(name):
    return osp.join(WEIGHTS_DIR, f"{name}.pt")


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def state_digest(state):
    """sha256 over names, shapes, dtypes and bytes of a state dict (key order)."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].contiguous()
        h.update(f"{k}:{tuple(v.shape)}:{v.dtype};".encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()


def load_shipped(name):
    path = shipped_file(name)
    want = SHIPPED_SHA256.get(name)
    got = file_sha256(path)
    if want and got != want:
        raise UserError(f"{path} is damaged (sha256 {got[:12]}..., expected {want[:12]}...); "
                        f"restore it with `git checkout -- {osp.relpath(path)}` or regenerate "
                        "it with `python tools/make_tiny_weights.py`")
    return unpack_state(torch.load(path, map_location="cpu", weights_only=True))


def tiny_weights_file(name, cache_dir):
    """The file the weights of tiny model ``name`` are read from: the shipped
    file, or (without one) the clip-cache file written on first use; None for
    the random ones."""
    if not name.endswith(PRETRAINED_SUFFIX):
        return None
    if osp.isfile(shipped_file(name)):
        return shipped_file(name)
    return osp.join(cache_dir, f"{name}.pt")


def tiny_state_dict(name, cache_dir):
    """State dict of a tiny CLIP: a random one, the shipped pre-trained one, or
    (without a shipped file) one pre-trained once and cached in ``cache_dir``."""
    if not name.endswith(PRETRAINED_SUFFIX):
        return random_tiny(name).state_dict()
    if osp.isfile(shipped_file(name)):
        return load_shipped(name)
    from filelock import FileLock

    fpath = osp.join(cache_dir, f"{name}.pt")
    os.makedirs(cache_dir, exist_ok=True)
    # Parallel runs (three seeds started at once) wait for one pre-training.
    with FileLock(fpath + ".lock"):
        if osp.isfile(fpath):
            try:
                return unpack_state(torch.load(fpath, map_location="cpu", weights_only=True))
            except Exception:
                os.remove(fpath)  # damaged or old-format cache: train again
        print(f"Pre-training {name} on the sklearn digits (once; cached at {fpath})", flush=True)
        packed = pack_state(name, pretrained_state(name))
        atomic_write(fpath, lambda f: torch.save(packed, f), mode="wb")
    return unpack_state(packed)
