"""The method registry: each method declares itself once, next to its trainer.

A declaration (a ``Method`` subclass in ``trainers/<method>.py``, registered with
``@register_method``) says everything the rest of the project needs to know about
a method: its script name, trainer, variants and how a variant becomes config keys
and an output folder, its recipe (trainer config) per backbone family and shots, its
label and colour in tables and plots, whether it learns several tasks jointly, the
protocols it supports, and which tables it belongs to. Scripts (scripts/main.sh),
the grid runner, compare.py, check_data and the benches read this registry; nothing
else names a method.

The image-encoder contract is declared on the trainer class itself
(``ImageEncoder``, see below), because the trainer is what reads the feature cache.

This module names no method: ``load_methods()`` imports the project's ``trainers``
package, whose modules register their declarations.
"""
import fnmatch
import importlib
import os.path as osp
import re
from collections import OrderedDict
from dataclasses import dataclass, field

from .errors import UserError

# Okabe-Ito colours (safe for colour-blind readers), by name: a method's ``colour``.
OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky blue": "#56B4E9",
             "bluish green": "#009E73", "yellow": "#F0E442", "blue": "#0072B2",
             "vermillion": "#D55E00", "reddish purple": "#CC79A7", "grey": "#999999"}

PROTOCOLS = ("fewshot", "base2new", "xd", "dg")

CONFIGS = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), "configs")


@dataclass(frozen=True)
class ImageEncoder:
    """A trainer's image-encoder contract: is the image encoder frozen (so its
    features of an image never change) while training, while evaluating?

    Where it is frozen, the feature cache may serve features instead of running the
    encoder; where it is not (prompts inside the image tower, adapters, LoRA), the
    cache must never serve it, since it would hand back the *frozen* model's features
    and the run would report a wrong number. The safe default, for a trainer that
    declares nothing, is "not frozen": no cache."""
    frozen_in_training: bool = False
    frozen_in_evaluation: bool = False

    def frozen(self, phase):
        """``phase``: "train" or "eval"."""
        if phase not in ("train", "eval"):
            raise ValueError(f"phase must be 'train' or 'eval', got {phase!r}")
        return self.frozen_in_training if phase == "train" else self.frozen_in_evaluation

    def describe(self):
        def word(frozen):
            return "frozen" if frozen else "trained/prompted (no cache)"
        return (f"training: {word(self.frozen_in_training)}; "
                f"evaluation: {word(self.frozen_in_evaluation)}")


FROZEN_ENCODER = ImageEncoder(frozen_in_training=True, frozen_in_evaluation=True)
UNDECLARED_ENCODER = ImageEncoder()  # the safe default: never served from the cache


def image_encoder_of(trainer_cls):
    """The contract a trainer class declares in its own body (``image_encoder = ...``);
    undeclared: not frozen. A subclass does not inherit its parent's contract: a
    subclass that prompts the image encoder must not be served cached features
    because its parent's encoder was frozen."""
    contract = vars(trainer_cls).get("image_encoder")
    return contract if isinstance(contract, ImageEncoder) else UNDECLARED_ENCODER


@dataclass
class RunContext:
    """What a recipe may depend on: the dataset config name, shots, the canonical
    backbone name and its family ("tiny", "openai", "open_clip"), whether the dataset
    config is a suite (several tasks), and the protocol."""
    dataset: str
    shots: int
    backbone: str
    family: str = ""
    suite: bool = False
    protocol: str = "fewshot"
    dataset_cfg: dict = field(default_factory=dict)  # the dataset YAML as a dict

    @property
    def tiny(self):
        return self.family == "tiny"

    def dataset_value(self, dotted_key, default=None):
        """A value of the dataset YAML (e.g. "TRAINER.COOP.CTX_INIT"), or ``default``."""
        return _dotted(self.dataset_cfg, dotted_key, default)


@dataclass
class Setting:
    """One run's method part: trainer, trainer config name (a file under
    configs/trainers/<trainer>/, ``<backbone>_<schedule>``), the variant folder,
    KEY VALUE overrides, and the shots the run is stored under (None: the grid's)."""
    trainer: str
    config: str
    variant: str
    opts: list = field(default_factory=list)
    shots: int = None


class Method:
    """Base of a method declaration. Subclass it in the trainer's file, set the
    class attributes, override ``setting`` (and ``parse_variant`` for free-form
    variants), and decorate it with ``@register_method``."""

    name = ""  # script and grid name (lower case): scripts/main.sh NAME ..., --methods NAME
    trainer = ""  # the registered trainer class name (--trainer, the output folder)
    label = ""  # table and plot label of the default variant (e.g. "My-Method")
    colour = "grey"  # an OKABE_ITO name; methods of one family share it
    family = ""  # colour family / grouping in tables (default: the trainer)
    order = 100  # position in tables and plots (smaller first)
    headline = False  # drawn boldest in plots (the project's own method)
    variants = ()  # named variants; () with parse_variant: free form
    default_variant = ""
    variant_help = ""  # one line for --help when variants are free form
    variant_labels = {}  # {variant: table label} where not "<label> (<variant>)"
    multi_task = False  # learns several tasks jointly (one model for a suite)
    protocols = ("fewshot",)  # which of PROTOCOLS it supports
    in_comparison = True  # part of scripts/compare_all.sh's default method list
    comparison_variants = ()  # variants compare_all runs by default (default: default_variant)
    trains = True  # False: nothing is trained (zero-shot): one seed is enough
    quick = False  # cheap to run: part of the benches' default demo grids
    script_args = ()  # names of scripts/main.sh's extra positional arguments after BACKBONE
    script_usage = ""  # one line on those arguments
    variants_env = ()  # other environment names of compare_all's <NAME>_VARIANTS
    # the trainer-config schedule of the generalisation protocols (real, tiny backbones),
    # e.g. ("ep50", "ep10"): configs/trainers/<trainer>/<backbone>_<schedule>.yaml; or a
    # dict {protocol: (real, tiny)} where they differ (the dg protocol evaluates the xd model)
    protocol_schedule = None

    # ---- variants --------------------------------------------------------------

    def parse_variant(self, variant):
        """Check ``variant``; return what ``setting`` needs (default: the name)."""
        if variant in ("", None):
            variant = self.default_variant
        if self.variants and variant not in self.variants:
            raise UserError(f"unknown variant '{variant}' of method {self.name}; choose from "
                            f"{', '.join(self.variants)}")
        if not self.variants and not variant:
            raise UserError(f"method {self.name} needs a variant ({self.variant_help})")
        return variant

    def check_variant(self, variant):
        self.parse_variant(variant)

    def variant_from_args(self, args):
        """The variant that scripts/main.sh's extra positional ``args`` name (the
        method's own script arguments, e.g. a context length and position); default: the
        first argument is the variant."""
        if not args:
            return self.default_variant
        if len(args) > 1:
            raise UserError(f"method {self.name} takes one VARIANT argument after BACKBONE, "
                            f"got {' '.join(args)}")
        return args[0]

    # ---- runs ----------------------------------------------------------------------

    def setting(self, ctx, variant):
        """The Setting of a run: ``ctx`` a RunContext, ``variant`` a checked variant."""
        raise TypeError(f"method {self.name} must define setting()")  # (abstract)

    def schedule(self, ctx, real, tiny="ep10"):
        """``<backbone>_<real>``, or ``<backbone>_<tiny>`` on the tiny backbones."""
        return f"{ctx.backbone}_{tiny if ctx.tiny else real}"

    # ---- tables ----------------------------------------------------------------------

    def table_label(self, variant, config=""):
        """The label of a variant's row in tables and plots."""
        if variant in self.variant_labels:
            return self.variant_labels[variant]
        if variant == self.default_variant or (len(self.variants) == 1 and variant in self.variants):
            return self.label
        return f"{self.label} ({variant})"

    def label_detail(self, variant):
        """Extra words that tell apart two variants sharing a label (default: the variant)."""
        return variant

    @property
    def family_name(self):
        return self.family or self.trainer

    def __repr__(self):
        return f"<method {self.name}: trainer {self.trainer}>"


def _dotted(data, dotted_key, default=None):
    node = data
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def read_yaml(path):
    """A config YAML as a dict, with its ``_BASE_`` files merged underneath (the
    including file wins; toolbox/config.py resolves them); {} when the file does not
    exist."""
    from .config import load_trainer_yaml

    if not osp.isfile(path):
        return {}
    return load_trainer_yaml(path)


def recipe_value(trainer, config, dotted_key, default=None):
    """A value set by the trainer config ``configs/trainers/<trainer>/<config>.yaml``
    (e.g. "TRAINER.COOP.CTX_INIT"), or ``default`` when the recipe does not set it."""
    return _dotted(read_yaml(osp.join(CONFIGS, "trainers", trainer, config + ".yaml")),
                   dotted_key, default)


_METHODS = OrderedDict()


def register_method(cls):
    """Class decorator: register a Method declaration (one per name and trainer)."""
    method = cls() if isinstance(cls, type) else cls
    if not re.fullmatch(r"[a-z][a-z0-9_]*", method.name or ""):
        raise ValueError(f"method name must be lower case letters, digits and _: {method.name!r}")
    if not method.trainer:
        raise ValueError(f"method {method.name} declares no trainer")
    if method.colour not in OKABE_ITO:
        raise ValueError(f"method {method.name}: colour {method.colour!r} is not one of "
                         f"{', '.join(OKABE_ITO)}")
    bad = set(method.protocols) - set(PROTOCOLS)
    if bad:
        raise ValueError(f"method {method.name}: unknown protocol(s) {', '.join(sorted(bad))}")
    old = _METHODS.get(method.name)
    if old is not None and type(old).__qualname__ != type(method).__qualname__:
        raise ValueError(f"method name {method.name!r} is declared twice "
                         f"({type(old).__module__} and {type(method).__module__})")
    _METHODS[method.name] = method
    return cls


def load_methods():
    """Import the project's trainers (which register their declarations); return the
    registry {name: Method} in table order."""
    import warnings

    with warnings.catch_warnings():  # openai-clip's import of pkg_resources
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        importlib.import_module("trainers")
    return methods()


def methods():
    """The registered declarations {name: Method}, in table order."""
    ordered = sorted(_METHODS.values(), key=lambda m: (m.order, m.name))
    return OrderedDict((m.name, m) for m in ordered)


def list_methods(pattern="*", protocol=None):
    """Names of the registered methods matching a shell-style ``pattern`` (and
    supporting ``protocol`` when given)."""
    return [n for n, m in methods().items()
            if fnmatch.fnmatch(n, pattern) and (protocol is None or protocol in m.protocols)]


def get_method(name):
    """The declaration called ``name`` (case-insensitive); a UserError listing the
    registered ones when there is none."""
    key = str(name).strip().lower()
    if key not in _METHODS:
        raise UserError(f"unknown method '{name}'; choose from {', '.join(methods())}")
    return _METHODS[key]


def method_of_trainer(trainer):
    """The declaration whose trainer is ``trainer``, or None (a trainer without one,
    e.g. a ported upstream trainer)."""
    for m in _METHODS.values():
        if m.trainer == trainer:
            return m
    return None
