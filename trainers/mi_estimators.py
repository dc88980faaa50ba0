"""Mutual-information estimators between two views of the same classes.

Row ``i`` of both views belongs to class ``i``; InfoNCE treats the pair as the
positive and every other class of the other view as a negative. ``log(n) -
loss`` lower-bounds the mutual information between the views, so minimising
the loss maximises that bound.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from toolbox.errors import check_choice

MI_ESTIMATORS = ("infonce", "critic")
# both: the mean of the two directions (symmetric); a_to_b: each row of ``a``
# picks its class among the rows of ``b``; b_to_a: the other way
MI_DIRECTIONS = ("both", "a_to_b", "b_to_a")


def infonce_mi_loss(a, b, temperature, direction="both"):
    """InfoNCE between row-aligned normalised views ``a``, ``b`` (n, d),
    symmetric (``both``) or in one direction."""
    logits = (a @ b.t()) / temperature
    target = torch.arange(a.size(0), device=a.device)
    if direction == "a_to_b":
        return F.cross_entropy(logits, target)
    if direction == "b_to_a":
        return F.cross_entropy(logits.t(), target)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


class CriticHead(nn.Module):
    """A small residual MLP applied to one view before the cosine score.

    The last layer starts at zero, so a fresh critic scores exactly like plain
    cosine similarity and only departs from it as far as training asks.
    """

    def __init__(self, dim, hidden=None):
        super().__init__()
        hidden = hidden or max(dim // 4, 8)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x):
        return F.normalize(x + self.fc2(F.relu(self.fc1(x))), dim=-1)


class MIEstimator(nn.Module):
    """``infonce`` on cosine similarities, or ``critic``: InfoNCE on the
    cosine similarities after a learnable head per view."""

    def __init__(self, kind, dim, temperature, direction="both", hidden=None):
        super().__init__()
        check_choice("MI estimator", kind, MI_ESTIMATORS)
        check_choice("MI direction", direction, MI_DIRECTIONS)
        self.kind = kind
        self.temperature = temperature
        self.direction = direction
        if kind == "critic":
            self.soft_head = CriticHead(dim, hidden)
            self.hand_head = CriticHead(dim, hidden)

    @property
    def learnable(self):
        return self.kind == "critic"

    def forward(self, soft, hand):
        soft, hand = soft.float(), hand.float()
        if self.learnable:
            soft, hand = self.soft_head(soft), self.hand_head(hand)
        return infonce_mi_loss(soft, hand, self.temperature, self.direction)
