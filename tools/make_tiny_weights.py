#!/usr/bin/env python
"""Regenerate the shipped digits-pretrained tiny CLIP weights.

    python tools/make_tiny_weights.py                 # both models, into trainers/weights/
    python tools/make_tiny_weights.py --check         # rebuild in memory, compare with the shipped files

Pre-trains tiny-vit-digits and tiny-rn-digits from their seeded init
(trainers/tiny_clip.py: 300 AdamW steps on the sklearn digits, one thread),
writes the compact files and prints their sha256 for SHIPPED_SHA256. Floating
point on another CPU type rounds differently, so a file made there differs
slightly from the shipped one; the shipped file is what makes the demo the same
everywhere.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402

from toolbox.utils import atomic_write  # noqa: E402
from trainers import tiny_clip  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--names", nargs="+", default=["tiny-vit-digits", "tiny-rn-digits"],
                   choices=[n for n in tiny_clip.TINY_NAMES if n.endswith("-digits")])
    p.add_argument("--out-dir", default=tiny_clip.WEIGHTS_DIR)
    p.add_argument("--check", action="store_true",
                   help="write nothing; report whether a rebuild here equals the shipped weights")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    same = True
    for name in args.names:
        state = tiny_clip.pretrained_state(name)
        packed = tiny_clip.pack_state(name, state)
        n_rows = len(packed["token_rows"])
        if args.check:
            shipped = tiny_clip.load_shipped(name)
            diff = max((state[k] - shipped[k]).abs().max().item() for k in state
                       if state[k].is_floating_point())
            ok = tiny_clip.state_digest(state) == tiny_clip.state_digest(shipped)
            same &= ok
            print(f"{name}: {'identical to' if ok else f'max |diff| {diff:.3g} from'} the shipped "
                  f"weights")
            continue
        path = osp.join(args.out_dir, f"{name}.pt")
        atomic_write(path, lambda f: torch.save(packed, f), mode="wb")
        print(f"{name}: {path} ({osp.getsize(path) / 1e6:.2f} MB, {n_rows} token rows changed)")
        print(f'    "{name}": "{tiny_clip.file_sha256(path)}",')
        print(f"    weights digest {tiny_clip.state_digest(state)}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
