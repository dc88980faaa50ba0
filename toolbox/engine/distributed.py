"""One run over several processes (``torchrun --nproc_per_node N train.py ...``).

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; ``init_from_env`` then joins the
process group (NCCL on GPUs, gloo on CPU). The trainer uses the helpers below:

- training: every rank walks the single-process loader's global batches in the same
  order and takes its contiguous share of each (``DistributedBatchSampler``); each rank's
  loss is weighted by its share's size (``weighted_loss``, in the trainer's backward) and
  the gradients are summed over ranks, so a step equals the single-process step on the
  whole global batch (a trainer that calls ``loss.backward()`` itself gets the weights
  applied to the gradients instead, ``all_reduce_gradients``);
- evaluation: each rank runs every N-th evaluation batch, the outputs are gathered and
  evaluated in the single-process order;
- the text side (``ClipTrainer.split_over_ranks``): the class prompts a step needs (the
  union over ranks) are split into contiguous shares, each rank encodes its share, and
  ``all_gather_rows`` gives every rank all features, with their gradients: backward sums
  the ranks' gradients of the gathered features and hands each rank its share's rows.
  For that sum to be the gradient of the global-batch mean, each rank's loss is weighted
  by its share of the global batch before backward (``weighted_loss``);
- only rank 0 writes logs, TensorBoard scalars, checkpoints and results.json.

Exactness holds for trainers whose training step draws no random numbers per sample
(context tuning without class sampling, for one); one that does (mixup of features,
sampled negative classes) draws them per rank, so it trains correctly but not
bit-for-bit as one process.
"""
import os
from collections import deque

import torch
import torch.distributed as dist

from ..errors import UserError


def is_distributed():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank():
    return dist.get_rank() if is_distributed() else 0


def get_world_size():
    return dist.get_world_size() if is_distributed() else 1


def is_main_process():
    return get_rank() == 0


def launched_rank():
    """This process's rank as torchrun's environment says, before (or without) joining
    the process group: 0 for a plain ``python train.py``."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return 0
    return int(os.environ.get("RANK", "0") or 0)


def init_from_env(use_cuda=True):
    """Join the process group torchrun describes in the environment; a no-op for a
    plain ``python train.py``. Returns the world size."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or is_distributed():
        return get_world_size()
    cuda = use_cuda and torch.cuda.is_available()
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise UserError(f"torchrun started {world} processes but this machine shows "
                            f"{torch.cuda.device_count()} GPU(s); use --nproc_per_node "
                            f"{torch.cuda.device_count()} or fewer")
        torch.cuda.set_device(local)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return world


def barrier():
    if is_distributed():
        dist.barrier()


def broadcast_rng_state():
    """Give every rank rank 0's torch/numpy/random state, so the samplers of all ranks
    draw the same global batches (called at the start of every epoch)."""
    if not is_distributed():
        return
    from ..utils import get_rng_state, set_rng_state
    state = [get_rng_state() if is_main_process() else None]
    dist.broadcast_object_list(state, src=0)
    if not is_main_process():
        cuda = state[0].get("cuda") if isinstance(state[0], dict) else None
        if cuda is not None and not torch.cuda.is_available():
            state[0] = {k: v for k, v in state[0].items() if k != "cuda"}
        set_rng_state(state[0])


class DistributedBatchSampler(torch.utils.data.Sampler):
    """This rank's contiguous share of each global batch of ``batch_sampler`` (the
    single-process batches, in their order). Shares differ by at most one sample; a
    rank whose share is empty gets the batch's first sample with weight 0. The
    weights (share / global batch size) are queued in ``weights`` in batch order for
    the trainer to pop, one per batch."""

    def __init__(self, batch_sampler, rank=None, world_size=None):
        self.batch_sampler = batch_sampler
        self.rank = get_rank() if rank is None else rank
        self.world = get_world_size() if world_size is None else world_size
        self.weights = deque()

    def __iter__(self):
        self.weights.clear()
        for batch in self.batch_sampler:
            n = len(batch)
            base, extra = divmod(n, self.world)
            start = self.rank * base + min(self.rank, extra)
            share = batch[start:start + base + (1 if self.rank < extra else 0)]
            if share:
                self.weights.append(len(share) / n)
                yield share
            else:
                self.weights.append(0.0)
                yield batch[:1]

    def __len__(self):
        return len(self.batch_sampler)


def shard_train_loader(loader):
    """The same loader over this rank's shares of the global batches."""
    if loader is None or not is_distributed():
        return loader
    if loader.batch_sampler is not None and loader.batch_size is not None:
        global_batches = torch.utils.data.BatchSampler(loader.sampler, loader.batch_size,
                                                       loader.drop_last)
    else:
        global_batches = loader.batch_sampler
    return torch.utils.data.DataLoader(
        loader.dataset, batch_sampler=DistributedBatchSampler(global_batches),
        num_workers=loader.num_workers, collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory, worker_init_fn=loader.worker_init_fn,
        generator=loader.generator)


def batch_weight(loader):
    """The weight of the batch just taken from a sharded loader (1 when not sharded)."""
    sampler = getattr(loader, "batch_sampler", None)
    if isinstance(sampler, DistributedBatchSampler) and sampler.weights:
        return sampler.weights.popleft()
    return 1.0


def share_bounds(n, rank=None, world_size=None):
    """[start, stop) of this rank's contiguous share of ``n`` items (shares differ by at
    most one, the first ranks take the extra ones, as ``DistributedBatchSampler``)."""
    rank = get_rank() if rank is None else rank
    world = get_world_size() if world_size is None else world_size
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def union_of_indices(index, n):
    """Sorted union over ranks of the integer tensor ``index`` (values in [0, n))."""
    mask = torch.zeros(n, dtype=torch.float32, device=index.device)
    mask[index] = 1.0
    if is_distributed():
        dist.all_reduce(mask, op=dist.ReduceOp.MAX)
    return torch.nonzero(mask > 0, as_tuple=False).view(-1)


class _GatherRows(torch.autograd.Function):
    """Forward: the rows of every rank's tensor, concatenated in rank order. Backward:
    the gradient of the concatenation summed over ranks, this rank's rows of it."""

    @staticmethod
    def forward(ctx, mine, sizes):
        ctx.sizes, ctx.rank = sizes, get_rank()
        biggest = max(sizes)
        buf = mine.new_zeros((biggest,) + tuple(mine.shape[1:]))
        buf[:mine.shape[0]] = mine
        parts = [torch.empty_like(buf) for _ in sizes]
        dist.all_gather(parts, buf)
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = sum(ctx.sizes[:ctx.rank])
        return grad[start:start + ctx.sizes[ctx.rank]], None


def all_gather_rows(mine, sizes):
    """Every rank's ``mine`` (rank r has ``sizes[r]`` rows, same trailing shape and dtype
    on all ranks) concatenated in rank order, on every rank; differentiable: the
    gradient reaching rank r's rows is the sum over ranks of the gradients of those rows
    (so every rank's loss must already carry its weight, see ``weighted_loss``)."""
    if not is_distributed():
        return mine
    return _GatherRows.apply(mine, list(sizes))


def weighted_loss(loss, weight):
    """The loss to back-propagate on this rank: weighted by its share of the global
    batch under DDP (the gradients are then summed with weight 1)."""
    return loss * weight if is_distributed() else loss


def all_reduce_gradients(params, weight):
    """grad <- sum over ranks of weight_r * grad_r (each rank's loss is the mean over its
    share, so this is the gradient of the mean over the global batch; weight 1 when the
    losses were weighted before backward). A parameter
    without a gradient on every rank keeps none, as in one process."""
    if not is_distributed():
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    device = params[0].device
    has = torch.tensor([float(p.grad is not None) for p in params], device=device)
    dist.all_reduce(has)
    used = [p for p, h in zip(params, has.tolist()) if h > 0]
    if not used:
        return
    flat = torch.cat([(p.grad.detach().float() if p.grad is not None
                       else torch.zeros(p.numel(), device=p.device)).reshape(-1) * weight
                      for p in used])
    dist.all_reduce(flat)
    offset = 0
    for p in used:
        n = p.numel()
        g = flat[offset:offset + n].view_as(p).to(p.dtype)
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)
        offset += n


def gather_objects(obj):
    """Every rank's ``obj`` as a list in rank order (on every rank)."""
    if not is_distributed():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shard_eval_batches(loader):
    """(index, batch) of this rank's evaluation batches: r, r + N, r + 2N, ... A
    DataLoader is rebuilt over those batches only (no other rank's images are read)."""
    rank, world = get_rank(), get_world_size()
    if isinstance(loader, torch.utils.data.DataLoader) and loader.batch_sampler is not None:
        batches = list(loader.batch_sampler)
        mine = list(range(rank, len(batches), world))
        sub = torch.utils.data.DataLoader(
            loader.dataset, batch_sampler=[batches[i] for i in mine],
            num_workers=loader.num_workers, collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory, worker_init_fn=loader.worker_init_fn)
        return zip(mine, sub)
    return ((i, b) for i, b in enumerate(loader) if i % world == rank)


def cleanup():
    """Leave the process group (end of train.py)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
