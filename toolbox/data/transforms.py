"""Image transforms built from ``cfg.INPUT`` (as dassl.data.transforms)."""
import torch
from torchvision.transforms import (
    CenterCrop, ColorJitter, Compose, GaussianBlur, Normalize, RandomApply,
    RandomCrop, RandomGrayscale, RandomHorizontalFlip, RandomResizedCrop,
    Resize, ToTensor,
)
from torchvision.transforms import InterpolationMode

from ..errors import UserError

AVAI_CHOICES = [
    "random_flip", "random_resized_crop", "normalize", "instance_norm", "random_crop",
    "random_translation", "center_crop", "cutout", "imagenet_policy", "cifar10_policy",
    "svhn_policy", "randaugment", "randaugment_fixmatch", "randaugment2", "gaussian_noise",
    "colorjitter", "randomgrayscale", "gaussian_blur",
]
SUPPORTED = {"random_flip", "random_resized_crop", "normalize", "random_crop", "center_crop",
             "cutout", "gaussian_noise", "colorjitter", "randomgrayscale", "gaussian_blur"}

INTERPOLATION_MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


class Cutout:
    """Zero ``n_holes`` square patches of side ``length`` in a tensor image."""

    def __init__(self, n_holes=1, length=16):
        self.n_holes, self.length = n_holes, length

    def __call__(self, img):
        h, w = img.shape[1:]
        mask = torch.ones(h, w)
        for _ in range(self.n_holes):
            y, x = torch.randint(h, ()).item(), torch.randint(w, ()).item()
            y1, y2 = max(0, y - self.length // 2), min(h, y + self.length // 2)
            x1, x2 = max(0, x - self.length // 2), min(w, x + self.length // 2)
            mask[y1:y2, x1:x2] = 0
        return img * mask


class GaussianNoise:
    def __init__(self, mean=0.0, std=0.15, p=0.5):
        self.mean, self.std, self.p = mean, std, p

    def __call__(self, img):
        if torch.rand(()) > self.p:
            return img
        return img + torch.randn_like(img) * self.std + self.mean


def build_transform(cfg, is_train=True, choices=None):
    """Train: RandomResizedCrop/flip/ToTensor/Normalize as listed in
    INPUT.TRANSFORMS. Test: Resize(max(size)), CenterCrop(size), ToTensor,
    Normalize."""
    if cfg.INPUT.NO_TRANSFORM:
        print("Note: no transform is applied!")
        return None
    choices = cfg.INPUT.TRANSFORMS if choices is None else choices
    for choice in choices:
        if choice not in AVAI_CHOICES:
            raise UserError(f"unknown INPUT.TRANSFORMS entry '{choice}'; choose from {SUPPORTED}")
        if choice not in SUPPORTED:
            raise UserError(f"INPUT.TRANSFORMS entry '{choice}' is not implemented in toolbox; "
                            f"use one of {sorted(SUPPORTED)}")
    if cfg.INPUT.INTERPOLATION not in INTERPOLATION_MODES:
        raise UserError(f"unknown INPUT.INTERPOLATION '{cfg.INPUT.INTERPOLATION}'; "
                        f"choose from {sorted(INTERPOLATION_MODES)}")
    interp = INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]
    size = tuple(cfg.INPUT.SIZE)
    normalize = Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD)
    tfm = []
    if is_train:
        if "random_resized_crop" in choices:
            tfm.append(RandomResizedCrop(size, scale=tuple(cfg.INPUT.RRCROP_SCALE),
                                         interpolation=interp))
        elif "random_crop" in choices:
            tfm += [Resize(size, interpolation=interp),
                    RandomCrop(size, padding=cfg.INPUT.CROP_PADDING)]
        else:
            tfm.append(Resize(size, interpolation=interp))
        if "random_flip" in choices:
            tfm.append(RandomHorizontalFlip())
        if "colorjitter" in choices:
            tfm.append(ColorJitter(cfg.INPUT.COLORJITTER_B, cfg.INPUT.COLORJITTER_C,
                                   cfg.INPUT.COLORJITTER_S, cfg.INPUT.COLORJITTER_H))
        if "randomgrayscale" in choices:
            tfm.append(RandomGrayscale(p=cfg.INPUT.RGS_P))
        if "gaussian_blur" in choices:
            tfm.append(RandomApply([GaussianBlur(cfg.INPUT.GB_K)], p=cfg.INPUT.GB_P))
        tfm.append(ToTensor())
        if "cutout" in choices:
            tfm.append(Cutout(cfg.INPUT.CUTOUT_N, cfg.INPUT.CUTOUT_LEN))
        if "normalize" in choices:
            tfm.append(normalize)
        if "gaussian_noise" in choices:
            tfm.append(GaussianNoise(cfg.INPUT.GN_MEAN, cfg.INPUT.GN_STD))
    else:
        tfm += [Resize(max(size), interpolation=interp), CenterCrop(size), ToTensor()]
        if "normalize" in choices:
            tfm.append(normalize)
    return Compose(tfm)
