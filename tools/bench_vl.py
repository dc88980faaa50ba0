"""``tools/bench.py --mode vl-prompts``: step time and memory of methods with a
prompted image tower, each also with activation checkpointing of that tower
(GRAD_CHECKPOINT True, where the trainer has the key), as ratios against the first
method given (e.g. a text-only prompt method), on random weights of real
architectures (e.g. vit_b16 and vit_l14) with synthetic batches.

Wall time per step and the process's CPU time per step (all threads; steadier than
the wall clock on a shared machine) are both shown. CPU memory is the process's peak RSS minus its RSS after the trainer was built
("training MB": activations, gradients, optimizer state); CUDA reports
torch.cuda.max_memory_allocated over the timed steps.
"""
from tabulate import tabulate

from tools.bench import method_setting, run_worker, supports_grad_checkpoint


def vl_prompts_bench(args, archs):
    rows = []
    for arch in archs:
        base = None
        for method in args.methods:
            decl, variant, _ = method_setting(method, arch, args.tasks)
            label = decl.table_label(variant)
            for ckpt in ((False, True) if supports_grad_checkpoint(method, arch) else (False,)):
                r = run_worker(method, arch, args, grad_checkpoint=ckpt)
                if args.device == "cuda":
                    mem = r["peak_mb"]
                else:
                    mem = r["peak_mb"] - r["after_build_mb"]
                cpu_ms = r.get("cpu_ms_per_step", float("nan"))
                if base is None:
                    base = (r["ms_per_step"], cpu_ms, max(mem, 1e-9))
                rows.append([arch, label + (" +ckpt" if ckpt else ""),
                             f"{r['ms_per_step']:.0f}", f"{r['ms_per_step'] / base[0]:.2f}",
                             f"{cpu_ms:.0f}", f"{cpu_ms / base[1]:.2f}",
                             f"{mem:.0f}", f"{mem / base[2]:.2f}", f"{r['trainable']:,}"])
                print(" | ".join(rows[-1]), flush=True)
    mem = "peak GPU MB" if args.device == "cuda" else "training MB (peak RSS - after build)"
    print(f"\n{args.tasks} task(s) x {args.classes} classes, batch {args.batch}, {args.steps} "
          f"timed steps, device {args.device}, {args.threads} thread(s), random weights; "
          f"ratios against the first method ({args.methods[0]}) on the same arch")
    print(tabulate(rows, headers=["arch", "method", "ms/step", "time ratio", "CPU ms/step",
                                  "CPU ratio", mem, "memory ratio", "trainable params"],
                   tablefmt="github", disable_numparse=True))
