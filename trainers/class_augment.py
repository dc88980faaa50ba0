"""Class-wise visual augmentation: new image features made only from
features of the same class (never across classes), used as extra training
positives for that class's prompt; off at evaluation.

Where the same-class partner comes from (``partners``):

- ``memory`` (default): a per-class memory of the frozen features of every
  training image (test-time transform), filled once before training. Every
  sample whose class has another training image gets a partner, whatever the
  batch size: with CoCoOp's batch of 4, a partner inside the batch exists for
  only about 1% of samples on most base splits.
- ``batch``: partners from the batch itself (``mixup``) or running means of
  the features seen so far (``prototype``), kept as the ablation.

``mode``: ``mixup`` mixes a feature with one partner feature (a random other
training image of its class); ``prototype`` mixes it with its class prototype
(memory: the mean of the class's other training images; batch: the running
mean of the class's features seen so far). The mixing coefficient is
lam ~ Beta(alpha, alpha); the mix is renormalised.

``forward`` returns the augmented features and a bool mask of the samples that
had a partner; a sample without one is returned unchanged and should be left
out of the augmentation loss (else that loss only re-weights its CE).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from toolbox.errors import check_choice

AUG_MODES = ("none", "mixup", "prototype")
PARTNER_SOURCES = ("memory", "batch")


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
    """Same-class feature augmentation (see the module docstring).

    Buffers are not part of the saved weights (they depend on the class list,
    and a model trained on base classes must load for new ones). The memory is
    rebuilt from the frozen encoder before training, also on --resume; the
    trainer keeps the batch prototypes in its checkpoints' training state.
    """

    def __init__(self, mode, num_classes, dim, alpha, partners="memory"):
        super().__init__()
        check_choice("augmentation", mode, AUG_MODES)
        check_choice("augmentation partners", partners, PARTNER_SOURCES)
        self.mode, self.alpha, self.partners = mode, alpha, partners
        self.num_classes = num_classes
        self.register_buffer("prototypes", torch.zeros(num_classes, dim), persistent=False)
        self.register_buffer("counts", torch.zeros(num_classes), persistent=False)
        self.memory = None  # (N, d) frozen training features, row i = training item i

    @property
    def active(self):
        return self.training and self.mode != "none"

    @property
    def needs_memory(self):
        return self.mode != "none" and self.partners == "memory" and self.memory is None

    # ---- the per-class memory ---------------------------------------------------

    @torch.no_grad()
    def fill_memory(self, features, labels):
        """Store the frozen, normalised features of every training item (row i
        = item i of the training set) with their labels."""
        if features.size(0) != labels.numel():
            raise ValueError(f"{features.size(0)} features for {labels.numel()} labels")
        dev = self.prototypes.device
        self.memory = F.normalize(features.float(), dim=-1).to(dev)
        self.memory_labels = labels.to(dev).long()
        order = torch.argsort(self.memory_labels, stable=True)
        count = torch.bincount(self.memory_labels, minlength=self.num_classes)
        start = torch.cumsum(count, 0) - count
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=dev)
        self.memory_order = order  # rows sorted by class
        self.class_start, self.class_count = start, count
        self.memory_rank = rank - start[self.memory_labels]  # row's place within its class
        self.class_sum = torch.zeros(self.num_classes, self.memory.size(1),
                                     device=dev).index_add_(0, self.memory_labels, self.memory)

    def _memory_partners(self, labels, index):
        """(partner features, partnered mask) from the memory; ``index`` (rows
        of the samples themselves, excluded) may be None for samples that are
        not training items."""
        labels = labels.to(self.memory_labels.device)
        n = self.class_count[labels]
        if index is not None:
            index = index.to(labels.device)
            if not torch.equal(self.memory_labels[index], labels):
                raise ValueError("batch indices do not match the training items of the memory")
            n_other = n - 1
        else:
            n_other = n
        partnered = n_other > 0
        if self.mode == "mixup":
            # a uniform draw among the class's other rows (rows sorted by class)
            pick = torch.rand(labels.numel(), device=labels.device) * n_other.clamp(min=1)
            pick = torch.minimum(pick.long(), (n_other - 1).clamp(min=0))
            if index is not None:  # step over the sample's own row
                pick = pick + (pick >= self.memory_rank[index]).long()
            position = (self.class_start[labels] + pick).clamp(max=self.memory.size(0) - 1)
            others = self.memory[self.memory_order[position]]  # unused where not partnered
        else:  # prototype: mean of the class's other training images
            total = self.class_sum[labels]
            if index is not None:
                total = total - self.memory[index]
            others = F.normalize(total, dim=-1)
        return others, partnered

    # ---- batch partners (the ablation) ------------------------------------------

    @torch.no_grad()
    def update_prototypes(self, features, labels):
        n = torch.bincount(labels, minlength=self.counts.numel()).to(self.counts.dtype)
        sums = torch.zeros_like(self.prototypes).index_add_(0, labels, features.float())
        seen = n > 0
        self.counts += n
        # running mean: m <- m + (sum - n*m) / count
        delta = (sums - n.unsqueeze(1) * self.prototypes) / self.counts.clamp(min=1).unsqueeze(1)
        self.prototypes[seen] += delta[seen]

    def _batch_partners(self, features, labels):
        partner = same_class_partners(labels)
        in_batch = partner != torch.arange(labels.numel(), device=labels.device)
        if self.mode == "mixup":
            return features[partner], in_batch
        seen_before = self.counts[labels] > 0
        self.update_prototypes(features, labels)
        protos = F.normalize(self.prototypes[labels], dim=-1).to(features.dtype)
        return protos, in_batch | seen_before

    def forward(self, features, labels, index=None):
        """(augmented normalised features (batch, d), partnered (batch,) bool).

        Inactive (evaluation, or mode none): the input unchanged, no partners.
        A sample without a partner keeps its feature unchanged.
        """
        if not self.active:
            return features, torch.zeros_like(labels, dtype=torch.bool)
        if self.partners == "memory":
            if self.memory is None:
                raise RuntimeError("fill_memory() must run before memory augmentation")
            others, partnered = self._memory_partners(labels, index)
            others = others.to(features.device, features.dtype)
            partnered = partnered.to(features.device)
        else:
            others, partnered = self._batch_partners(features, labels)
        mixed = mix(features, others, self.alpha)
        return torch.where(partnered.view(-1, 1), mixed, features), partnered
