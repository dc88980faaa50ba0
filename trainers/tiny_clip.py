"""Deterministic tiny CLIP models for tests and the CPU demo.

Built with the real ``clip.model.CLIP`` class and loaded through the same
``build_model`` path as real weights. ``tiny-vit`` / ``tiny-rn`` are random
(seeded) initialisations. A random CLIP maps all images to nearly the same
feature, so nothing can be learned on top of it; ``tiny-vit-digits`` /
``tiny-rn-digits`` are the same models after a short contrastive
pre-training on scikit-learn's bundled digits with captions "a photo of the
digit <name>." — a stand-in for web pre-training so the demo shows learning.
They are trained once (about a minute on 2 CPU cores) and cached in the clip
cache folder.
"""
import os
import os.path as osp

import numpy as np
import torch
import torch.nn.functional as F

from clip.model import CLIP

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


def random_tiny(name):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        return CLIP(**TINY_SPECS[name])


def digits_tensor(size=32):
    """The sklearn digits as CLIP-normalised RGB tensors (as the demo files look)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    img = torch.from_numpy(np.asarray(digits.images, dtype=np.float32) / 16.0)
    img = (img * 255).round().clamp(0, 255) / 255.0  # 8-bit like the PNG files
    img = F.interpolate(img.unsqueeze(1), size=(size, size), mode="nearest").repeat(1, 3, 1, 1)
    return (img - CLIP_MEAN) / CLIP_STD, torch.from_numpy(digits.target.astype(np.int64))


def pretrain_on_digits(model, steps=PRETRAIN_STEPS, batch_size=128, lr=1e-3):
    """Contrastive image-caption training (CLIP's symmetric loss)."""
    from clip import clip as clip_api

    images, labels = digits_tensor(model.visual.input_resolution)
    texts = clip_api.tokenize([f"a photo of the digit {w}." for w in DIGIT_WORDS])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(TINY_SEED)
    model.train()
    for _ in range(steps):
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
    return model.eval()


def tiny_weights_file(name, cache_dir):
    """The file the weights of tiny model ``name`` are read from (written on
    first use for the pre-trained ones); None for the random ones."""
    if not name.endswith(PRETRAINED_SUFFIX):
        return None
    return osp.join(cache_dir, f"{name}.pt")


def tiny_state_dict(name, cache_dir):
    """State dict of a tiny CLIP; the pre-trained ones are cached in ``cache_dir``."""
    fpath = tiny_weights_file(name, cache_dir)
    if fpath is None:
        return random_tiny(name).state_dict()
    if osp.isfile(fpath):
        try:
            return torch.load(fpath, map_location="cpu", weights_only=True)
        except Exception:
            os.remove(fpath)  # damaged cache: train again
    base = name[: -len(PRETRAINED_SUFFIX)]
    print(f"Pre-training {name} on the sklearn digits (once; cached at {fpath})")
    with torch.random.fork_rng(devices=[]):
        model = pretrain_on_digits(random_tiny(base))
    state = model.state_dict()
    atomic_write(fpath, lambda f: torch.save(state, f), mode="wb")
    return state
