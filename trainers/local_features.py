"""Per-position image features in the joint space (the vision-tower ability
PLOT needs): token 0 is the usual pooled image feature, tokens 1.. are local.

- ResNets (OpenAI CLIP and OpenCLIP ``ModifiedResNet``): the attention pool
  run with every spatial position as a query, so the HW local outputs pass
  through the same q/k/v/c_proj as the pooled one (PLOT's modified
  ``AttentionPool2d``); RN50 at 224 px gives 49 + 1 tokens.
- OpenAI-style ViTs (OpenAI CLIP, the tiny CLIPs): every output token through
  ``ln_post`` and ``proj`` (ours; upstream's ViT method, PLOT++, is another one).
- Anything else is refused with one error line.
"""
import torch
import torch.nn.functional as F

from toolbox.errors import UserError


def _is_attnpool_resnet(visual):
    pool = getattr(visual, "attnpool", None)
    return pool is not None and all(hasattr(pool, k) for k in
                                    ("positional_embedding", "q_proj", "k_proj", "v_proj",
                                     "c_proj", "num_heads"))


def _is_openai_vit(visual):
    from clip.model import VisionTransformer

    return isinstance(visual, VisionTransformer)


def check_local_features(clip_model, backbone_name):
    """A UserError unless ``clip_model``'s image tower can give local features."""
    visual = clip_model.visual
    if _is_attnpool_resnet(visual) or _is_openai_vit(visual):
        return
    raise UserError(f"backbone {backbone_name} has no per-position image features here "
                    f"({type(visual).__name__}); PLOT runs on CLIP ResNets (OpenAI or OpenCLIP "
                    "attention-pool ResNets) and OpenAI-style ViTs: choose one of those")


def attnpool_tokens(pool, x):
    """All HW+1 outputs of a CLIP ``AttentionPool2d`` over feature map ``x``
    (N, C, H, W): (N, HW+1, out_dim); [:, 0] equals the pool's own output."""
    n, c = x.shape[:2]
    x = x.flatten(2).transpose(1, 2)  # (N, HW, C)
    x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
    x = x + pool.positional_embedding.to(x.dtype)
    heads = pool.num_heads
    q, k, v = pool.q_proj(x), pool.k_proj(x), pool.v_proj(x)

    def split(t):
        return t.view(n, -1, heads, c // heads).transpose(1, 2)  # (N, heads, L, c/h)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return pool.c_proj(out.transpose(1, 2).reshape(n, -1, c))


def _resnet_trunk(visual, image):
    """The ResNet up to (not including) the attention pool."""
    x = image.type(visual.conv1.weight.dtype)
    if hasattr(visual, "stem"):  # OpenCLIP: a method; OpenAI: an inner function of forward
        x = visual.stem(x)
    else:
        x = visual.relu1(visual.bn1(visual.conv1(x)))
        x = visual.relu2(visual.bn2(visual.conv2(x)))
        x = visual.relu3(visual.bn3(visual.conv3(x)))
        x = visual.avgpool(x)
    for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        x = layer(x)
    return x


def _vit_tokens(visual, image):
    x = visual.conv1(image.type(visual.conv1.weight.dtype))
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype) + x.new_zeros(x.shape[0], 1, x.shape[-1])
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.ln_pre(x)
    x = visual.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
    x = visual.ln_post(x)
    return x @ visual.proj if visual.proj is not None else x


def image_tokens(clip_model, image):
    """(N, L, d) image tokens in the joint space, token 0 the pooled feature."""
    visual = clip_model.visual
    if _is_attnpool_resnet(visual):
        return attnpool_tokens(visual.attnpool, _resnet_trunk(visual, image))
    if _is_openai_vit(visual):
        return _vit_tokens(visual, image)
    raise UserError(f"no per-position image features for {type(visual).__name__}")
