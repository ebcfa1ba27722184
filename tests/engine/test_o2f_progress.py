"""O2F's soft-label scale T reaches the head through the trainer's generic ``set_train_progress``
(spec C22, o2f.md §9.3-9.4): a run resumed from a checkpoint uses, at every iteration, the T
and the losses of an uninterrupted run, and T is not part of the checkpoint."""
import os

import pytest
import torch

from atss_core.config import cfg as base_cfg
from atss_core.engine.trainer import do_train
from atss_core.modeling.detector import build_detection_model
from atss_core.solver import WarmupMultiStepLR
from atss_core.structures.bounding_box import BoxList
from atss_core.structures.image_list import to_image_list
from atss_core.utils.checkpoint import Checkpointer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_ITER, CHECKPOINT = 4, 2


class Batches:
    """Fixed batches, iterated from ``start`` as the training sampler does on resume."""

    def __init__(self, batches, start=0):
        self.batches, self.start = batches, start

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches[self.start:])


def _batches():
    g = torch.Generator().manual_seed(0)
    batches = []
    for i in range(MAX_ITER):
        images = to_image_list([torch.randn(3, 64, 64, generator=g) for _ in range(2)], 32)
        targets = []
        for j in range(2):
            target = BoxList(torch.tensor([[4.0 + i, 6, 40, 50 - j], [30, 10, 60, 30 + i]]), (64, 64))
            target.add_field("labels", torch.tensor([1, 3]))
            targets.append(target)
        batches.append((images, targets, (2 * i, 2 * i + 1)))
    return batches


def _model(mode):
    """The toy O2F detector with T over 2 "epochs" of 2 iterations; records (T, losses) per step."""
    cfg = base_cfg.clone()
    cfg.merge_from_file(os.path.join(ROOT, "configs", "quickstart", "o2f_toy.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.O2F.SCHEDULE_EPOCHS = 2
    cfg.MODEL.O2F.SCHEDULE_MODE = mode
    torch.manual_seed(0)
    model = build_detection_model(cfg)
    steps = []
    def record(head, args, out):
        steps.append((head.soft_t, {k: v.item() for k, v in out[1].items()}))

    model.rpn.register_forward_hook(record)
    return model, steps


def _train(model, out_dir, resume_from=None):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
    scheduler = WarmupMultiStepLR(optimizer, (100,), warmup_iters=0)
    checkpointer = Checkpointer(model, optimizer, scheduler, save_dir=str(out_dir), save_to_disk=True)
    arguments = {"iteration": 0}
    if resume_from is not None:
        arguments["iteration"] = checkpointer.resume(str(resume_from))["iteration"]
    loader = Batches(_batches(), arguments["iteration"])
    do_train(model, loader, optimizer, scheduler, checkpointer, "cpu", CHECKPOINT, arguments)


@pytest.mark.parametrize(
    "mode, expected", [("epoch", [0.6, 0.6, 0.2, 0.2]), ("linear", [0.6, 0.6 - 0.4 / 3, 0.6 - 0.8 / 3, 0.2])]
)
def test_resumed_run_uses_the_t_of_an_uninterrupted_run(mode, expected, tmp_path):
    full, full_steps = _model(mode)
    _train(full, tmp_path / "full")
    assert [t for t, _ in full_steps] == pytest.approx(expected)

    checkpoint = tmp_path / "full" / f"model_{CHECKPOINT:07d}.pth"
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["iteration"] == CHECKPOINT
    assert set(saved["model"]) == set(full.state_dict())  # T is a plain attribute, not a buffer

    resumed, resumed_steps = _model(mode)
    assert resumed.rpn.soft_t == 0.6
    _train(resumed, tmp_path / "resumed", resume_from=checkpoint)
    assert [t for t, _ in resumed_steps] == pytest.approx(expected[CHECKPOINT:])
    for (_, got), (_, want) in zip(resumed_steps, full_steps[CHECKPOINT:]):
        assert got == pytest.approx(want, rel=1e-5)
