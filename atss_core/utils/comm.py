"""torch.distributed helpers shared by heads, trainer and evaluation.

World size comes from torch.distributed when it is initialised, never from
the WORLD_SIZE environment variable (spec C21). Every helper is a no-op on a
single process, and the reducing helpers must be called on every rank every
iteration (they are collectives).
"""
import torch
import torch.distributed as dist


def is_dist_avail_and_initialized():
    return dist.is_available() and dist.is_initialized()


def get_world_size():
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_rank():
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def is_main_process():
    return get_rank() == 0


def synchronize():
    """Barrier across all processes; no-op when not distributed."""
    if get_world_size() > 1:
        dist.barrier()


def reduce_sum(tensor):
    """Sum of ``tensor`` over all ranks (a new tensor; input untouched)."""
    if get_world_size() == 1:
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def reduce_mean(tensor):
    """Mean of ``tensor`` over all ranks, as a float tensor."""
    return reduce_sum(tensor.float()) / get_world_size()


def all_gather(data):
    """Gather any picklable object from every rank into a list (rank order)."""
    world = get_world_size()
    if world == 1:
        return [data]
    out = [None] * world
    dist.all_gather_object(out, data)
    return out


def reduce_loss_dict(loss_dict):
    """Average a dict of scalar losses over ranks, for logging only.

    Keys are reduced in sorted order so every rank stacks them identically.
    """
    world = get_world_size()
    if world < 2:
        return loss_dict
    with torch.no_grad():
        names = sorted(loss_dict)
        values = torch.stack([loss_dict[k].detach().float() for k in names])
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= world
    return dict(zip(names, values))
