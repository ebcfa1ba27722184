"""One process of test_distributed.py's "no gt on one rank" check (run by torchrun, gloo, 2 processes).

For every registered dense head: a DDP training step where rank 0's images
have gts and rank 1's have none. A head that skips a collective or leaves a
parameter without gradient on the empty rank hangs or raises here; the
process group's 60 s timeout turns a hang into an error.
"""
import datetime
import os
import sys

import torch
import torch.distributed as dist

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # this checkout, as the tools do

from atss_core.config import cfg as base_cfg  # noqa: E402
from atss_core.engine.trainer import progress_listeners  # noqa: E402
from atss_core.modeling.dense_heads import DENSE_HEADS  # noqa: E402
from atss_core.modeling.detector import build_detection_model  # noqa: E402
from atss_core.structures.bounding_box import BoxList  # noqa: E402
from atss_core.structures.image_list import to_image_list  # noqa: E402


def head_cfg(flag):
    cfg = base_cfg.clone()
    cfg.merge_from_file(os.path.join(ROOT, "configs", "quickstart", "atss_toy.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ATSS_ON = False
    cfg.MODEL[flag] = True
    return cfg


def targets_of(rank):
    boxes = [[4.0, 6.0, 40.0, 50.0], [30.0, 10.0, 60.0, 30.0]] if rank == 0 else []
    target = BoxList(torch.tensor(boxes).reshape(-1, 4), (64, 64))
    target.add_field("labels", torch.tensor([1, 2][: len(boxes)], dtype=torch.int64))
    return [target, target]


def main():
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    rank = dist.get_rank()
    for flag in sorted(DENSE_HEADS):
        torch.manual_seed(0)
        model = build_detection_model(head_cfg(flag))
        for module in progress_listeners(model):
            module.set_train_progress(0, 10)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.001)
        images = to_image_list([torch.randn(3, 64, 64), torch.randn(3, 64, 64)], 32)
        for _ in range(2):
            losses = ddp(images, targets_of(rank))
            total = sum(losses.values())
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
        assert torch.isfinite(total), (flag, losses)
        print(f"rank {rank} {flag} ok {total.detach().item():.4f}", flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
