"""``tools/bench.py --mode ddp-text``: what splitting the class prompts over DDP ranks
gives on the text side of a training step.

For each method of ``--methods`` (registered methods that encode class prompts per
step) on synthetic tasks at a registered architecture's shapes (random weights;
``--tasks`` x ``--classes`` classes, e.g. 1 x 1000 for an ImageNet-sized single task,
44 x 36 = 1,584 for a FewShot-44-sized suite), three settings
are timed side by side, in rounds (A B C, A B C, ...) so that a change of machine load
hits all of them:

- ``1 proc``: one process, the whole global batch;
- ``N proc, no split``: N gloo processes (one rank's share of the batch each), every
  rank encoding all the class prompts its batch needs (``ClipTrainer.split_text`` off);
- ``N proc, split``: the same with each rank encoding its share of the classes and the
  features gathered with their gradients (the default under torchrun).

Reported per step (median over the timed steps of all rounds, rank 0's clock, ranks
synchronised before and after each step): the wall time of the whole training step and of
the text side alone (the class features for the step's classes, forward and backward),
and the CPU time rank 0's process spent on the text side (all its threads, gloo's
included): the work a rank does, which a loaded machine does not change as much as the
wall time. Every process
has ``--threads`` torch threads (default 1), so N processes use N cores; on a machine
with fewer free cores than processes the split cannot pay off. The gradients of the
split and unsplit settings are checked equal on the first step (to 1e-5 of each
gradient's largest entry: summing over ranks rounds differently).
"""
import contextlib
import io
import json
import os
import os.path as osp
import socket
import statistics
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, method, args, split, out):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(args.threads)
    if rank > 0:
        sys.stdout = open(os.devnull, "w")
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world)
    try:
        from toolbox.engine import distributed as ddp
        from tools.bench import build_bench_trainer

        with contextlib.redirect_stdout(io.StringIO()):  # the build's messages
            trainer, cfg, tasks = build_bench_trainer(method, args)
        trainer.split_text = split
        g = torch.Generator().manual_seed(0)
        res = tuple(cfg.INPUT.SIZE)

        def batch():
            task = torch.randint(args.tasks, (args.batch,), generator=g)
            label = task * args.classes + torch.randint(args.classes, (args.batch,), generator=g)
            image = torch.randn(args.batch, 3, *res, generator=g)
            start, stop = ddp.share_bounds(args.batch)  # (0, batch) in one process
            trainer.grad_weight = (stop - start) / args.batch
            return {"img": image[start:stop], "label": label[start:stop],
                    "task": task[start:stop]}, task[start:stop]

        params = [p for n in trainer.get_model_names()
                  for p in trainer._models[n].parameters() if p.requires_grad]

        def text_side(task):
            """Forward and backward of the step's class features alone."""
            classes = trainer.batch_classes(task)
            feats = trainer.text_features(classes)
            trainer.model_zero_grad()
            trainer.ddp_weighted(feats.sum()).backward()
            trainer.sync_gradients()

        step_ms, text_ms, text_cpu_ms, grads = [], [], [], None
        for i in range(args.steps + 1):  # the first step warms up, untimed
            b, task = batch()
            ddp.barrier()
            t0 = time.perf_counter()
            trainer.forward_backward(b)
            ddp.barrier()
            t1 = time.perf_counter()
            if i == 0:  # the global-batch gradient of the first step
                grads = [p.grad.detach().clone() for p in params]
            c1 = time.process_time()
            text_side(task)
            c2 = time.process_time()
            ddp.barrier()
            t2 = time.perf_counter()
            if i > 0:
                step_ms.append(1000 * (t1 - t0))
                text_ms.append(1000 * (t2 - t1))
                text_cpu_ms.append(1000 * (c2 - c1))
        if rank == 0:
            torch.save({"step_ms": step_ms, "text_ms": text_ms, "text_cpu_ms": text_cpu_ms,
                        "grads": grads}, out)
    finally:
        if world > 1:
            dist.destroy_process_group()


def run_setting(method, args, world, split, out):
    import torch.multiprocessing as mp

    if world == 1:
        _rank_main(0, 1, 0, method, args, split, out)
    else:
        mp.spawn(_rank_main, args=(world, _free_port(), method, args, split, out),
                 nprocs=world, join=True)


def ddp_text_bench(args):
    import torch
    from tabulate import tabulate

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    settings = [("1 proc", 1, False), (f"{args.nproc} proc, no split", args.nproc, False),
                (f"{args.nproc} proc, split", args.nproc, True)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            times = {name: ([], [], []) for name, _, _ in settings}
            first = {}
            for rnd in range(args.rounds):
                for name, world, split in settings:
                    out = osp.join(tmp, f"{method}-{rnd}-{world}-{split}.pt")
                    run_setting(method, args, world, split, out)
                    r = torch.load(out, weights_only=True)
                    times[name][0].extend(r["step_ms"])
                    times[name][1].extend(r["text_ms"])
                    times[name][2].extend(r["text_cpu_ms"])
                    first.setdefault(name, r["grads"])
            ref = first[settings[0][0]]
            for name, _, _ in settings:
                # relative to each gradient's scale: summing over ranks rounds differently
                same = all(float((a - b).abs().max()) <= 1e-5 * float(a.abs().max()) + 1e-8
                           for a, b in zip(ref, first[name]))
                if not same:
                    raise SystemExit(f"error: {method} {name}: first-step gradients differ "
                                     "from the one-process run")
            base = [statistics.median(t) for t in times[settings[0][0]]]
            for name, _, _ in settings:
                row = [method, name]
                for value, ref in zip((statistics.median(t) for t in times[name]), base):
                    row += [f"{value:.0f}", f"{value / ref:.2f}"]
                rows.append(row)
    print(f"arch {args.arch} (random weights), {args.tasks} tasks x {args.classes} classes, "
          f"global batch {args.batch}, {args.threads} thread(s) per process, "
          f"{args.rounds} rounds x {args.steps} timed steps; first-step gradients of every "
          "setting equal to the one-process run (1e-5)")
    print(tabulate(rows, headers=["method", "setting", "step ms", "vs 1 proc", "text side ms",
                                  "vs 1 proc", "text CPU ms rank 0", "vs 1 proc"],
                   tablefmt="github", disable_numparse=True))
    print(json.dumps({"rows": rows}))
