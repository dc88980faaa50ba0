"""CLIP loading and the shared text encoder / prompt assembly."""

import pytest
import torch

from toolbox.errors import UserError
from trainers.clip_model import (PromptAssembler, TextEncoder, clip_state_dict, load_clip,
                                 tokenize, weights_file)
from trainers.tiny_clip import random_tiny


def native_encode(clip_model, embeddings, tokens):
    """CLIP's own encode_text, but from token embeddings (full 77 tokens)."""
    x = embeddings + clip_model.positional_embedding
    x = clip_model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
    x = clip_model.ln_final(x)
    return x[torch.arange(x.shape[0]), tokens.argmax(-1)] @ clip_model.text_projection


def test_tiny_clip_is_deterministic_and_real_clip_class():
    a, b = load_clip("tiny-vit"), load_clip("tiny-vit")
    from clip.model import CLIP
    assert isinstance(a, CLIP)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    n_params = sum(p.numel() for p in a.parameters())
    assert 3.0e6 < n_params < 3.8e6
    assert not any(p.requires_grad for p in a.parameters())


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_tiny_weights_load_through_the_real_weights_paths(tmp_path, monkeypatch, name):
    """A tiny state dict given as MODEL.BACKBONE.PATH loads through the same
    build_model path as real weights and gives the same model; placed where
    another architecture's weights live (the clip cache's RN50.pt) it is refused
    with one line naming both."""
    state = random_tiny(name).state_dict()
    monkeypatch.setenv("CLIP_CACHE", str(tmp_path))
    torch.save(state, weights_file("RN50"))
    torch.save(state, tmp_path / "local.pt")
    ref = load_clip(name)
    # a plain state dict: the activation is said (tiny-vit's shapes are open_clip:tiny-ViT's)
    from_path = load_clip(name, path=str(tmp_path / "local.pt"), activation="quick_gelu")
    img = torch.randn(2, 3, 32, 32)
    tok = tokenize(["a photo of a cat.", "a dog."])
    assert torch.allclose(from_path.encode_image(img), ref.encode_image(img))
    assert torch.allclose(from_path.encode_text(tok), ref.encode_text(tok))
    canonical = name.replace("-", "_")
    for call in (lambda: load_clip("RN50"),
                 lambda: load_clip("ViT-B/16", path=str(tmp_path / "local.pt"))):
        with pytest.raises(UserError) as e:
            call()
        msg = str(e.value)
        assert "\n" not in msg and canonical in msg
        assert "not backbone rn50" in msg or "not backbone vit_b16" in msg


def test_fp16_torchscript_archive_loads_like_the_official_files(tmp_path):
    """OpenAI's .pt files are fp16 TorchScript archives of the whole model:
    one made the same way from a tiny CLIP loads (via MODEL.BACKBONE.PATH) as
    an fp32 model equal to the fp16-rounded original."""
    import warnings

    from clip.model import convert_weights

    model = random_tiny("tiny-vit").eval()
    convert_weights(model)  # what the official checkpoints store
    img, tok = torch.randn(2, 3, 32, 32), tokenize(["a photo of a cat.", "a dog."])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (img.half(), tok), check_trace=False)
    traced.save(str(tmp_path / "ViT-B-16.pt"))
    loaded = load_clip("tiny-vit", path=str(tmp_path / "ViT-B-16.pt"))
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    ref = model.float()
    assert torch.allclose(loaded.encode_image(img), ref.encode_image(img), atol=1e-6)
    assert torch.allclose(loaded.encode_text(tok), ref.encode_text(tok), atol=1e-6)


def test_missing_weights_offline_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIP_CACHE", str(tmp_path))
    monkeypatch.setenv("CLIP_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        clip_state_dict("ViT-B/16")
    msg = str(e.value)
    assert str(tmp_path / "ViT-B-16.pt") in msg and "MODEL.BACKBONE.PATH" in msg
    assert "\n" not in msg
    with pytest.raises(UserError, match="unknown backbone 'RN51'"):
        clip_state_dict("RN51")
    with pytest.raises(UserError, match="does not exist"):
        clip_state_dict("RN50", path=str(tmp_path / "nope.pt"))


def test_text_encoder_cut_after_eot_equals_encode_text():
    m = load_clip("tiny-vit")
    enc = TextEncoder(m)
    tok = tokenize(["a photo of a cat.", "a much longer prompt about a very small dog on grass."])
    emb = m.token_embedding(tok)
    assert torch.allclose(enc(emb, tok), m.encode_text(tok), atol=1e-5)
    assert torch.allclose(enc(emb, tok), native_encode(m, emb, tok), atol=1e-5)


def test_assembler_buffers_are_not_saved():
    m = load_clip("tiny-vit")
    asm = PromptAssembler(m, ["cat", "dog"], n_ctx=4)
    assert asm.state_dict() == {}
    assert asm.token_prefix.shape == (2, 1, 64) and asm.token_suffix.shape == (2, 72, 64)
    ctx = torch.randn(4, 64)
    out = asm(ctx)
    assert out.shape == (2, 77, 64)
    assert torch.equal(out[:, 1:5], ctx.expand(2, -1, -1))
    sub = asm(ctx, torch.tensor([1]))
    assert torch.equal(sub[0], out[1])


def test_download_lands_atomically_and_a_failed_one_leaves_nothing(tmp_path, monkeypatch):
    """Weights come through clip's own downloader into a temporary folder and
    are moved into the cache only when complete."""
    import os

    from clip import clip as clip_api

    monkeypatch.setenv("CLIP_CACHE", str(tmp_path))
    monkeypatch.delenv("CLIP_OFFLINE", raising=False)
    state = random_tiny("tiny-vit").state_dict()

    def interrupted(url, root):
        with open(os.path.join(root, os.path.basename(url)), "wb") as f:
            f.write(b"half a file")
        raise ConnectionResetError("network went away")

    monkeypatch.setattr(clip_api, "_download", interrupted)
    with pytest.raises(UserError, match="download failed"):
        clip_state_dict("RN50")
    assert os.listdir(tmp_path) == []  # no partial RN50.pt, no temp folder

    def complete(url, root):
        path = os.path.join(root, os.path.basename(url))
        torch.save(state, path)
        return path

    monkeypatch.setattr(clip_api, "_download", complete)
    loaded = clip_state_dict("RN50")
    assert os.listdir(tmp_path) == ["RN50.pt"]
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
