"""A torch.multiprocessing worker for the DDP loss test, in its own light module so the spawned
processes import only torch and sparsehead.losses, not the whole test module."""
import torch
import torch.distributed as dist

from sparsehead.losses import huang_infonce, moco_v3_loss, vicreg_loss

DDP_LOSSES = {
    "vicreg": lambda a, b: vicreg_loss(a, b),
    "moco_v3": lambda a, b: moco_v3_loss(a, b.detach(), 0.2),
    "huang": lambda a, b: huang_infonce(a, b, 0.5, 0.7),
}


def loss_and_input_grads(name, a, b):
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    loss = DDP_LOSSES[name](a, b)
    ga, gb = torch.autograd.grad(loss, (a, b), allow_unused=True)
    return loss.detach(), ga, torch.zeros_like(b) if gb is None else gb


def worker(rank, world, port, z1, z2, out):
    """Each rank's loss and input gradients on its shard of the batch, stored as numpy arrays."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    n = z1.shape[0] // world
    shard = slice(rank * n, (rank + 1) * n)
    for name in DDP_LOSSES:
        out[f"{name}/{rank}"] = tuple(t.numpy() for t in loss_and_input_grads(name, z1[shard], z2[shard]))
    dist.destroy_process_group()
