"""List the registered backbones and whether their weights are present locally.

    python tools/backbones.py                       # all of them
    python tools/backbones.py --filter "open_clip:ViT-B*"
    python tools/backbones.py --family openai --json
    python tools/backbones.py --canonical ViT-B/16  # prints vit_b16

Weights: OpenAI CLIPs in the clip cache ($CLIP_CACHE or ~/.cache/clip), the
digits-pretrained tiny CLIPs there too (trained on first use), OpenCLIP tags
in open_clip's cache (Hugging Face hub cache or ~/.cache/clip).
"""
import argparse
import json
import os.path as osp
import sys
import warnings

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

from toolbox.errors import UserError, one_line  # noqa: E402


class _Backbones:
    """trainers.backbones, imported on first use (it imports torch and the trainers):
    --help answers at once."""

    def __getattr__(self, name):
        import importlib

        return getattr(importlib.import_module("trainers.backbones"), name)


bb = _Backbones()


def weights_status(entry):
    """(status, where) of the weights of ``entry`` on this machine."""
    if entry.family == "tiny":
        path = bb.weights_file(entry.name)
        if path is None:
            return "built in", ""
        return ("present" if osp.isfile(path) else "made on first use"), path
    if entry.family == "openai":
        path = bb.weights_file(entry.name)
        return ("present" if osp.isfile(path) else "missing"), path
    oc = bb._open_clip()
    tags = oc.list_pretrained_tags_by_model(entry.arch)
    if not tags:
        return "PATH only", ""
    cached = [t for t in tags if bb.open_clip_cached_file(entry.arch, t)]
    if cached:
        return "present: " + " ".join(cached), ""
    more = f" +{len(tags) - 3} more" if len(tags) > 3 else ""
    return f"missing (tags: {' '.join(tags[:3])}{more})", ""


def resolve_config(trainer, cfg_name):
    """For scripts: ``<backbone>_<schedule>`` (any alias) -> the canonical
    config name, the config file to use and the MODEL.BACKBONE.NAME override
    ("-" when the file names the backbone itself)."""
    configs = osp.join(ROOT, "configs", "trainers", trainer)
    names = sorted(bb.list_backbones(aliases=True), key=len, reverse=True)
    for n in names:
        if cfg_name == n or cfg_name.startswith(n + "_"):
            canon, rest = bb.canonical_name(n), cfg_name[len(n):]
            own = osp.join(configs, canon + rest + ".yaml")
            if osp.isfile(own):
                return canon + rest, own, "-"
            entry = bb.get_backbone(canon)
            # same schedule, another backbone: the configs differ only in NAME
            # (a tiny OpenCLIP architecture runs the tiny recipe)
            bases = ("tiny_vit",) if entry.tiny else ("vit_b16", "rn50")
            for base in bases:
                f = osp.join(configs, base + rest + ".yaml")
                if osp.isfile(f):
                    return canon + rest, f, canon
            raise UserError(f"no trainer config for {cfg_name} in {configs}")
    raise bb._unknown(cfg_name)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--filter", default="", help="shell-style pattern, e.g. 'open_clip:ViT-B*'")
    p.add_argument("--family", choices=("openai", "open_clip", "tiny"))
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.add_argument("--canonical", metavar="NAME", help="print the canonical name of NAME")
    p.add_argument("--resolve-config", nargs=2, metavar=("TRAINER", "CONFIG_NAME"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        if args.canonical:
            print(bb.canonical_name(args.canonical))
            return 0
        if args.resolve_config:
            print("\t".join(resolve_config(*args.resolve_config)))
            return 0
        rows = []
        for name in bb.list_backbones(args.filter, args.family):
            entry = bb.get_backbone(name)
            status, where = weights_status(entry)
            problem = bb.open_clip_text_problem(entry.arch) if entry.family == "open_clip" else None
            rows.append(dict(name=name, family=entry.family, aliases=list(entry.aliases),
                             prompts="no: " + problem if problem else "yes",
                             weights=status, file=where, description=entry.description))
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    from tabulate import tabulate

    print(tabulate([[r["name"], r["family"], " ".join(r["aliases"]), r["prompts"][:40], r["weights"],
                     r["file"]] for r in rows],
                   headers=["backbone", "family", "aliases", "prompt tuning", "weights", "file"],
                   tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
