"""List the registered methods (their declarations in trainers/*.py), or answer
what the scripts ask of them.

    python tools/methods.py                     # a table: name, trainer, variants, ...
    python tools/methods.py --filter "NAME*" --json
    python tools/methods.py --comparison        # compare_all.sh's default: NAME:VARIANTS
    python tools/methods.py --protocol METHOD base2new
                                # TRAINER<TAB>SCHEDULE<TAB>TINY SCHEDULE for scripts/protocols.sh
"""
import argparse
import glob
import json
import os
import os.path as osp
import sys
import warnings

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

from toolbox.errors import UserError, one_line  # noqa: E402
from toolbox.methods import get_method, image_encoder_of, load_methods  # noqa: E402


def comparison_entries(names=None, environ=os.environ):
    """['NAME:V1,V2', ...] of the methods compare_all.sh runs: ``names`` (default: every
    method declared in_comparison), each with the variants of $<NAME>_VARIANTS (or its
    declared other names), else its declared comparison variants, else its default."""
    methods = load_methods()
    chosen = [get_method(n) for n in names] if names else \
        [m for m in methods.values() if m.in_comparison]
    out = []
    for m in chosen:
        env = next((environ[k] for k in (f"{m.name.upper()}_VARIANTS",) + tuple(m.variants_env)
                    if environ.get(k)), "")
        variants = env.split() or list(m.comparison_variants) or [m.default_variant]
        for v in variants:
            m.check_variant(v)
        out.append(f"{m.name}:{','.join(variants)}")
    return out


def _index_file():
    """A cache of every method's protocol schedules, keyed by the trainer files' names,
    sizes and modification times (a protocol step asks once per script call; without
    it each call imported torch and every trainer, seconds of CPU, for one line)."""
    import hashlib
    import tempfile

    files = sorted(glob.glob(osp.join(ROOT, "trainers", "*.py")) +
                   [osp.join(ROOT, "toolbox", "methods.py")])
    key = hashlib.sha256(repr([(f, os.stat(f).st_mtime_ns, os.stat(f).st_size)
                               for f in files]).encode()).hexdigest()[:16]
    return osp.join(tempfile.gettempdir(), f"toolbox-protocol-schedules-{key}.json")


def _schedules():
    """{method: {protocol: [trainer, real, tiny]}} for every registered method."""
    out = {}
    for name, m in load_methods().items():
        out[name] = {}
        for protocol in m.protocols:
            schedule = m.protocol_schedule
            if isinstance(schedule, dict):
                schedule = schedule.get(protocol) or schedule.get("default")
            if schedule and protocol != "fewshot":
                out[name][protocol] = [m.trainer, *schedule]
    return out


def protocol_schedule(name, protocol):
    """(trainer, real schedule, tiny schedule) a method runs in a generalisation
    protocol: configs/trainers/<trainer>/<backbone>_<schedule>.yaml."""
    path = _index_file()
    try:
        with open(path) as f:
            index = json.load(f)
    except (OSError, ValueError):
        index = _schedules()
        from toolbox.utils import atomic_write

        try:
            atomic_write(path, lambda f: f.write(json.dumps(index)))
        except OSError:
            pass  # no cache: answered all the same
    entry = index.get(str(name).strip().lower())
    if entry is not None and protocol in entry:
        return tuple(entry[protocol])
    load_methods()
    m = get_method(name)
    if protocol not in m.protocols or not m.protocol_schedule:
        raise UserError(f"method {m.name} does not declare the {protocol} protocol; methods "
                        "that do: " + " ".join(n for n, x in load_methods().items()
                                               if protocol in x.protocols and x.protocol_schedule))
    schedule = m.protocol_schedule
    if isinstance(schedule, dict):  # {protocol: (real, tiny)}
        schedule = schedule.get(protocol) or schedule.get("default")
    real, tiny = schedule
    return m.trainer, real, tiny


def rows(pattern="*"):
    out = []
    for name, m in load_methods().items():
        import fnmatch
        if not fnmatch.fnmatch(name, pattern):
            continue
        from toolbox.engine import TRAINER_REGISTRY
        trainer_cls = TRAINER_REGISTRY.get(m.trainer)
        contract = image_encoder_of(trainer_cls)
        out.append(dict(name=name, trainer=m.trainer, label=m.label,
                        variants=list(m.variants) or [m.variant_help],
                        default_variant=m.default_variant, multi_task=m.multi_task,
                        protocols=list(m.protocols), in_comparison=m.in_comparison,
                        image_encoder=contract.describe()))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--filter", default="*", help="shell-style pattern on method names")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.add_argument("--comparison", nargs="*", metavar="METHOD",
                   help="print compare_all.sh's grid entries (default methods: those declared "
                   "in the comparison)")
    p.add_argument("--protocol", nargs=2, metavar=("METHOD", "PROTOCOL"),
                   help="print TRAINER<TAB>SCHEDULE<TAB>TINY SCHEDULE of METHOD in PROTOCOL")
    args = p.parse_args(argv)
    try:
        if args.comparison is not None:
            print(" ".join(comparison_entries(args.comparison)))
            return 0
        if args.protocol:
            print("\t".join(protocol_schedule(*args.protocol)))
            return 0
        table = rows(args.filter)
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(table, indent=1))
        return 0
    from tabulate import tabulate

    print(tabulate([[r["name"], r["trainer"], r["label"], " ".join(r["variants"])[:50],
                     "yes" if r["multi_task"] else "", " ".join(r["protocols"]),
                     r["image_encoder"]] for r in table],
                   headers=["method", "trainer", "label", "variants", "multi-task", "protocols",
                            "image encoder"], tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
