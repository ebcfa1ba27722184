"""do_train on a toy model: NaN guard, checkpoint contents, clipping, progress, TensorBoard scalars, AMP scaler."""
import pytest
import torch
from torch import nn

from atss_core.engine.trainer import do_train
from atss_core.solver import WarmupMultiStepLR
from atss_core.utils.checkpoint import Checkpointer


class LinearLosses(nn.Module):
    """loss_a = w . g (gradient g), loss_b = |w|^2 / 2; ``poison`` maps iteration -> "loss" or "grad"."""

    def __init__(self, g=(3.0, 4.0, 0.0), poison=None):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))
        self.g = torch.tensor(g)
        self.poison = poison or {}
        self.progress = []

    def set_train_progress(self, iters_done, max_iter):
        self.progress.append((iters_done, max_iter))

    def forward(self, images, targets):
        iteration = len(self.progress)
        loss_b = (self.w**2).sum() / 2
        if self.poison.get(iteration) == "loss":
            loss_b = loss_b + float("nan")
        w = self.w
        if self.poison.get(iteration) == "grad":
            w = w + 0 * w
            w.register_hook(lambda grad: grad * float("inf"))
        return {"loss_a": (w * self.g).sum(), "loss_b": loss_b}


def loader(n):
    return [(torch.zeros(1), [torch.zeros(1)], (i,)) for i in range(n)]


def train(model, n, tmp_path, period=0, lr=1.0, clip=0.0, data_loader=None, **kwargs):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = WarmupMultiStepLR(optimizer, (100,), warmup_iters=0)
    checkpointer = Checkpointer(model, optimizer, scheduler, save_dir=str(tmp_path), save_to_disk=True)
    do_train(model, data_loader or loader(n), optimizer, scheduler, checkpointer, "cpu", period,
             {"iteration": 0}, clip_grad_norm=clip, **kwargs)
    return optimizer


def test_nan_loss_stops_before_the_update_and_keeps_the_last_checkpoint(tmp_path):
    model = LinearLosses(poison={3: "loss"})
    with pytest.raises(FloatingPointError, match=r"iteration 3: \{'loss_a': .*'loss_b': nan\}"):
        train(model, 6, tmp_path, period=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000002.pth"]
    saved = torch.load(tmp_path / "model_0000002.pth", weights_only=True)
    assert saved["iteration"] == 2
    assert torch.equal(model.w.detach(), saved["model"]["w"])  # iteration 3 did not step


def test_non_finite_weights_are_never_saved(tmp_path):
    model = LinearLosses(poison={2: "grad"})  # finite loss, infinite gradient at iteration 2
    with pytest.raises(FloatingPointError, match=r"non-finite weights after iteration 2 .*\['w'\]"):
        train(model, 4, tmp_path, period=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000001.pth"]
    assert (tmp_path / "last_checkpoint").read_text().endswith("model_0000001.pth")


@pytest.mark.parametrize("clip, step", [(0.0, [-3.0, -4.0, 0.0]), (1.0, [-0.6, -0.8, 0.0]), (10.0, [-3.0, -4.0, 0.0])])
def test_clip_grad_norm(tmp_path, clip, step):
    # first step from w = 0: the gradient is g = (3, 4, 0), norm 5; lr 1
    model = LinearLosses()
    train(model, 1, tmp_path, clip=clip)
    assert model.w.detach().tolist() == pytest.approx(step)


class RecordingWriter:
    def __init__(self):
        self.added, self.writes = [], []

    def add(self, **scalars):
        self.added.append(scalars)

    def write(self, step):
        self.writes.append(step)


class SamplerState:
    def state_at(self, iteration):
        return {"seed": 5, "pass_start": iteration - iteration % 3}


class StatefulLoader(list):
    batch_sampler = SamplerState()


def test_progress_scalars_and_checkpoint_contents(tmp_path):
    model = LinearLosses()
    writer = RecordingWriter()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scheduler = WarmupMultiStepLR(optimizer, (2,), gamma=0.1, warmup_iters=0)
    checkpointer = Checkpointer(model, optimizer, scheduler, save_dir=str(tmp_path), save_to_disk=True)
    do_train(model, StatefulLoader(loader(5)), optimizer, scheduler, checkpointer, "cpu", 4,
             {"iteration": 0, "categories": ["a"]}, log_period=2, event_writer=writer)

    assert model.progress == [(i, 5) for i in range(5)]  # C22: iterations done before each forward
    assert writer.writes == [2, 4, 5]
    assert [round(a["lr"], 6) for a in writer.added] == [0.5, 0.5, 0.05, 0.05, 0.05]  # the lr each step used
    first = writer.added[0]
    assert set(first) == {"loss", "loss_a", "loss_b", "lr", "time", "data_time", "max_mem_mb"}
    assert first["loss"] == pytest.approx(0.0) and first["max_mem_mb"] > 0
    # second iteration: w = -0.5 g, so loss_a = -0.5 |g|^2 = -12.5, loss_b = |w|^2 / 2 = 3.125
    assert writer.added[1]["loss_a"] == pytest.approx(-12.5)
    assert writer.added[1]["loss_b"] == pytest.approx(3.125)
    # host floats: the writer never holds a device tensor (no extra sync per iteration)
    assert all(type(v) is float for a in writer.added for v in a.values())

    ckpt = torch.load(tmp_path / "model_0000004.pth", weights_only=True)
    assert ckpt["iteration"] == 4 and ckpt["categories"] == ["a"]
    assert ckpt["sampler"] == {"seed": 5, "pass_start": 3}
    (states,) = ckpt["rng_states"]  # one process
    assert set(states) == {"python", "numpy", "torch", "cuda"}
    assert torch.load(tmp_path / "model_final.pth", weights_only=True)["iteration"] == 5
    assert ckpt["scheduler"]["last_epoch"] == 4


def test_float16_training_checkpoints_the_scaler(tmp_path):
    model = LinearLosses()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = WarmupMultiStepLR(optimizer, (100,), warmup_iters=0)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0, growth_interval=2)
    checkpointer = Checkpointer(model, optimizer, scheduler, save_dir=str(tmp_path), save_to_disk=True, scaler=scaler)
    do_train(model, loader(4), optimizer, scheduler, checkpointer, "cpu", 0, {"iteration": 0},
             dtype="float16", scaler=scaler)
    # finite steps every iteration: the scale doubles every 2 of them
    assert torch.load(tmp_path / "model_final.pth", weights_only=True)["scaler"]["scale"] == 32.0
    # steps use the unscaled gradient g + w: w <- 0.9 w - 0.1 g, so after 4 steps w = -(1 - 0.9^4) g
    assert model.w.tolist() == pytest.approx([-0.3439 * 3, -0.3439 * 4, 0.0], rel=1e-5)
