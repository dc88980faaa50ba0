"""PLOT (Chen et al., ICLR 2023, "Prompt Learning with Optimal Transport").

N learnable prompts per class (one context of N_CTX vectors per prompt, shared
by all classes). An image's local features (the attention pool's output at
every spatial position on CLIP ResNets; trainers/local_features.py) are matched
to a class's N prompt features by entropic optimal transport: cost 1 - cos,
Sinkhorn with uniform marginals, the plan computed without gradients; the logit
is logit_scale * sum T * cos. Upstream adds the global term (pooled image
feature against the mean prompt) only on ImageNet (GLOBAL_TERM "imagenet").

The image encoder is frozen: the feature cache stores the tokens (its key says
so, ``feature_kind``), so PLOT trains from cached tokens with
FEATURE_CACHE.TRAIN_VIEWS and evaluates from them, like CoOp from pooled ones.
On ViT backbones the tokens are the output tokens through ln_post and proj
(ours: upstream's ViT method, PLOT++, is a different method).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from toolbox.config import declare_neutral
from toolbox.engine import TRAINER_REGISTRY
from toolbox.errors import UserError, check_choice
from toolbox.methods import FROZEN_ENCODER, Method, Setting, register_method

from .base import ClipTrainer
from .clip_model import PromptAssembler, TextEncoder, embed_dim, text_tower
from .feature_cache import accepts_features
from .local_features import check_local_features, image_tokens

GLOBAL_TERMS = ("imagenet", "always", "never")


def extend_cfg(cfg):
    cfg.TRAINER.PLOT = CN()
    cfg.TRAINER.PLOT.N = 4  # prompts per class
    cfg.TRAINER.PLOT.N_CTX = 16  # context vectors per prompt (random N(0, 0.02) init)
    cfg.TRAINER.PLOT.EPS = 0.1  # entropic regularisation of the transport
    cfg.TRAINER.PLOT.MAX_ITER = 100  # Sinkhorn iterations at most
    cfg.TRAINER.PLOT.THRESH = 0.01  # stop when mean |r - r_prev| over the batch is below
    cfg.TRAINER.PLOT.CHECK_EVERY = 10  # CUDA: read the stop flag on the host every k iterations
    # imagenet: add the global term for ImageNet's classes only (upstream); always; never
    cfg.TRAINER.PLOT.GLOBAL_TERM = "imagenet"
    cfg.TRAINER.PLOT.PREC = "fp16"  # fp16 | amp | bf16 | fp32 (fp32 always on CPU)
    declare_neutral("TRAINER.PLOT", cfg.TRAINER.PLOT)  # a new group: runs keep their ids


@torch.no_grad()
def sinkhorn(K, max_iter=100, thresh=1e-2, check_every=10):
    """Transport plans (P, M, N) of P problems with kernel ``K`` (P, M, N) and
    uniform marginals 1/M, 1/N: r = u / (K c), c = v / (K^T r), from r = c = 1.

    Upstream's stop rule (one test for the whole batch: mean |r - r_prev| <
    ``thresh``, at most ``max_iter`` iterations) is kept exactly: once it holds,
    r and c are frozen on the device, and the host reads the flag only every
    ``check_every`` iterations (upstream synchronised at every one)."""
    P, M, N = K.shape
    u, v = 1.0 / M, 1.0 / N
    r = K.new_ones(P, M)
    c = K.new_ones(P, N)
    done = torch.zeros((), dtype=torch.bool, device=K.device)
    Kt = K.transpose(1, 2)
    for i in range(max_iter):
        r_new = u / torch.bmm(K, c.unsqueeze(-1)).squeeze(-1)
        c_new = v / torch.bmm(Kt, r_new.unsqueeze(-1)).squeeze(-1)
        err = (r_new - r).abs().mean()
        r = torch.where(done, r, r_new)
        c = torch.where(done, c, c_new)
        done = done | (err < thresh)
        if (i + 1) % check_every == 0 and bool(done):
            break
    return r.unsqueeze(-1) * K * c.unsqueeze(-2)


def ot_similarity(local, text, eps, max_iter, thresh, check_every):
    """(B, C) transport similarity sum_mn T_mn cos_mn of normalised ``local`` (B, M, d)
    and ``text`` (N, C, d); gradients flow through cos, not through the plan T."""
    B, M, _ = local.shape
    N, C, _ = text.shape
    with torch.autocast(local.device.type, enabled=False):  # transport in fp32 under AMP
        sim = torch.einsum("bmd,ncd->bcmn", local.float(), text.float())
        with torch.no_grad():
            K = torch.exp(-(1.0 - sim.detach()) / eps).reshape(B * C, M, N)
            plan = sinkhorn(K, max_iter, thresh, check_every).reshape(B, C, M, N)
        return (plan * sim).sum(dim=(-2, -1))


class MultiPromptLearner(nn.Module):
    """N contexts (N, N_CTX, width), each shared by every class (CoOp's end position)."""

    def __init__(self, node, classnames, clip_model):
        super().__init__()
        tower = text_tower(clip_model)
        ctx = torch.empty(node.N, node.N_CTX, tower.width)
        nn.init.normal_(ctx, std=0.02)
        self.ctx = nn.Parameter(ctx.to(tower.device))
        self.assembler = PromptAssembler(clip_model, classnames, node.N_CTX, "end")
        self.n_prompts = node.N
        print(f"Initial contexts: {node.N} x {node.N_CTX} random vectors")

    def forward(self, index=None):
        """(N * n, 77, width): prompt n of every class at ``index``, n-major."""
        return torch.cat([self.assembler(self.ctx[n], index) for n in range(self.n_prompts)])

    def tokens(self, index=None):
        return self.assembler.tokens(index).repeat(self.n_prompts, 1)


@TRAINER_REGISTRY.register()
class PLOT(ClipTrainer):
    prec_key = "PLOT"
    image_encoder = FROZEN_ENCODER
    # what the feature cache stores for PLOT: every token, not the pooled feature
    feature_kind = "image tokens (all positions, token 0 pooled), flattened"

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        node = cfg.TRAINER.PLOT
        check_choice("TRAINER.PLOT.GLOBAL_TERM", node.GLOBAL_TERM, GLOBAL_TERMS)
        if node.N < 1 or node.N_CTX < 1 or node.EPS <= 0 or node.MAX_ITER < 1 \
                or node.CHECK_EVERY < 1:
            raise UserError("TRAINER.PLOT: N, N_CTX, MAX_ITER and CHECK_EVERY must be >= 1 and "
                            f"EPS > 0 (got N {node.N}, N_CTX {node.N_CTX}, EPS {node.EPS}, "
                            f"MAX_ITER {node.MAX_ITER}, CHECK_EVERY {node.CHECK_EVERY})")

    def build_model(self):
        clip_model = self.clip_model = self.load_clip()
        check_local_features(clip_model, self.cfg.MODEL.BACKBONE.NAME)
        self.node = self.cfg.TRAINER.PLOT
        self.dim = embed_dim(clip_model)
        print(f"Building PLOT ({self.node.N} prompts per class)")
        self.prompt_learner = MultiPromptLearner(self.node, self.dm.dataset.classnames,
                                                 clip_model)
        self.text_encoder = TextEncoder(clip_model)
        self.model = self.prompt_learner
        self.register_trainable("prompt_learner", self.prompt_learner)
        mode = self.node.GLOBAL_TERM
        glob = [mode == "always" or (mode == "imagenet" and t.name.lower() == "imagenet")
                for t in self.tasks for _ in range(t.num_classes)]
        self.global_classes = torch.tensor(glob, device=self.device)
        self.any_global = any(glob)  # known on the host: no device sync per step

    @torch.no_grad()
    def encode_image(self, image):
        """Normalised tokens (B, L * d) of the frozen encoder, flattened (the cache's rows)."""
        with self.autocast():
            tokens = image_tokens(self.clip_model, image)
        return F.normalize(tokens.float(), dim=-1).flatten(1)

    def text_features(self, index=None):
        """Normalised prompt features (N, n, d) of the classes at ``index`` (all if None)."""
        feats = self.text_encoder(self.prompt_learner(index), self.prompt_learner.tokens(index))
        return F.normalize(feats.float(), dim=-1).view(self.node.N, -1, feats.shape[-1])

    def plot_logits(self, image, text, classes):
        tokens = self.image_features(image).view(image.shape[0], -1, self.dim)
        n = self.node
        # the plan is the same for any interval; on the CPU a check costs no device sync,
        # so checking every iteration saves the iterations past the stop
        every = n.CHECK_EVERY if tokens.device.type == "cuda" else 1
        ot = ot_similarity(tokens[:, 1:], text, n.EPS, n.MAX_ITER, n.THRESH, every)
        logits = self.logit_scale * ot
        if self.any_global:
            glob = self.global_classes[classes]
            mean_text = F.normalize(text.mean(dim=0), dim=-1)
            logits = logits + glob * (self.logit_scale * tokens[:, 0] @ mean_text.t())
        return logits

    @accepts_features
    def forward_train(self, image, label, task):
        classes = self.batch_classes(task)
        logits = self.plot_logits(image, self.text_features(classes), classes)
        loss, logits, target = self.task_loss(logits, label, task, classes)
        return loss, logits, target, {}

    @accepts_features
    @torch.no_grad()
    def model_inference(self, image):
        if self._eval_text is None:
            with self.autocast():
                self._eval_text = self.text_features()
        classes = torch.arange(self.num_classes, device=self.device)
        return self.plot_logits(image, self._eval_text, classes)


@register_method
class PLOTMethod(Method):
    # "plot_coop" (upstream's plot-coop folder): the word "plot" is everyone's (matplotlib)
    name, trainer = "plot_coop", "PLOT"
    label, colour, order = "PLOT", "grey", 35
    variants, default_variant = (), "n4"
    variant_help = "n<N>: prompts per class"
    protocols = ("fewshot", "base2new", "xd", "dg")
    protocol_schedule = ("ep50", "ep10")  # upstream's 50 epochs everywhere
    in_comparison = True

    def parse_variant(self, variant):
        variant = variant or self.default_variant
        if not (variant.startswith("n") and variant[1:].isdigit() and int(variant[1:]) >= 1):
            raise UserError(f"unknown variant '{variant}' of method plot_coop; use n<N> "
                            "(prompts per class, e.g. n4)")
        return variant

    def setting(self, ctx, variant):
        # upstream: 50 epochs for every shot count, batch 128
        return Setting("PLOT", self.schedule(ctx, "ep50"), variant,
                       ["TRAINER.PLOT.N", variant[1:]])
