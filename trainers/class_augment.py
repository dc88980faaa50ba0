"""Class-wise visual augmentation: new image features made only from
features of the same class (never across classes), used as extra training
positives for that class's prompt; off at evaluation."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from toolbox.errors import check_choice

AUG_MODES = ("none", "mixup", "prototype")


def same_class_partners(labels):
    """For each sample, a random other sample of the same class in the batch
    (itself when it is the only one of its class)."""
    n = labels.numel()
    same = labels.view(-1, 1) == labels.view(1, -1)
    same &= ~torch.eye(n, dtype=torch.bool, device=labels.device)
    score = torch.rand(n, n, device=labels.device).masked_fill(~same, -1.0)
    partner = score.argmax(dim=1)
    alone = ~same.any(dim=1)
    return torch.where(alone, torch.arange(n, device=labels.device), partner)


def mix(features, others, alpha):
    """Per-sample convex mix lam*f + (1-lam)*g with lam ~ Beta(alpha, alpha), renormalised."""
    beta = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)))
    lam = beta.sample((features.size(0), 1)).to(features.device, features.dtype)
    return F.normalize(lam * features + (1 - lam) * others, dim=-1)


class ClassAugment(nn.Module):
    """``mixup``: mix each feature with a same-class feature of the batch.
    ``prototype``: mix each feature with its class prototype, the running
    mean of every feature of that class seen so far in training.

    The prototypes are not part of the saved weights (they depend on the class
    list, and a model trained on base classes must load for new ones); the
    trainer keeps them in its checkpoints' training state so --resume is exact.
    """

    def __init__(self, mode, num_classes, dim, alpha):
        super().__init__()
        check_choice("augmentation", mode, AUG_MODES)
        self.mode, self.alpha = mode, alpha
        self.register_buffer("prototypes", torch.zeros(num_classes, dim), persistent=False)
        self.register_buffer("counts", torch.zeros(num_classes), persistent=False)

    @property
    def active(self):
        return self.training and self.mode != "none"

    @torch.no_grad()
    def update_prototypes(self, features, labels):
        n = torch.bincount(labels, minlength=self.counts.numel()).to(self.counts.dtype)
        sums = torch.zeros_like(self.prototypes).index_add_(0, labels, features.float())
        seen = n > 0
        self.counts += n
        # running mean: m <- m + (sum - n*m) / count
        delta = (sums - n.unsqueeze(1) * self.prototypes) / self.counts.clamp(min=1).unsqueeze(1)
        self.prototypes[seen] += delta[seen]

    def forward(self, features, labels):
        """Augmented normalised features (batch, d); the input unchanged when inactive."""
        if not self.active:
            return features
        if self.mode == "mixup":
            return mix(features, features[same_class_partners(labels)], self.alpha)
        self.update_prototypes(features, labels)
        protos = F.normalize(self.prototypes[labels], dim=-1).to(features.dtype)
        return mix(features, protos, self.alpha)
