import math

import pytest
import torch

from atss_core.layers import FrozenBatchNorm2d


def _set_stats(bn, weight, bias, mean, var):
    with torch.no_grad():
        bn.weight.fill_(weight)
        bn.bias.fill_(bias)
        bn.running_mean.fill_(mean)
        bn.running_var.fill_(var)


def test_exact_affine_without_eps():
    # framework §12: weight 2, bias 1, mean .5, var 4 -> y = x + 0.5 exactly.
    bn = FrozenBatchNorm2d(3)
    _set_stats(bn, 2.0, 1.0, 0.5, 4.0)
    x = torch.randn(2, 3, 5, 4)
    assert torch.equal(bn(x), x + 0.5)


def test_torchvision_style_eps_breaks_exactness():
    bn = FrozenBatchNorm2d(1, eps=1e-5)
    _set_stats(bn, 2.0, 1.0, 0.5, 4.0)
    x = torch.ones(1, 1, 1, 1)
    expected = 2.0 / math.sqrt(4.0 + 1e-5) * (1.0 - 0.5) + 1.0
    assert bn(x).item() == pytest.approx(expected, rel=1e-7)
    assert bn(x).item() != 1.5


def test_matches_eval_batchnorm():
    ref = torch.nn.BatchNorm2d(4, eps=1e-5).eval()
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-1, 1)
        ref.running_mean.uniform_(-1, 1)
        ref.running_var.uniform_(0.5, 2)
    bn = FrozenBatchNorm2d(4, eps=1e-5)
    bn.load_state_dict(ref.state_dict())  # num_batches_tracked is dropped, not an error
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(bn(x), ref(x))


def test_keys_and_no_training_state():
    bn = FrozenBatchNorm2d(8)
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var"]
    assert list(bn.parameters()) == []


def test_trainable_affine_variant():
    bn = FrozenBatchNorm2d(3, trainable_affine=True)
    assert sorted(bn.state_dict()) == ["bias", "running_mean", "running_var", "weight"]
    assert {n for n, _ in bn.named_parameters()} == {"weight", "bias"}
    _set_stats(bn, 2.0, 1.0, 0.5, 4.0)
    x = torch.randn(1, 3, 2, 2)
    bn(x).sum().backward()
    # d/dweight of sum((x - mean) / sqrt(var) * w + b) = sum(x - mean) / 2 per channel.
    torch.testing.assert_close(bn.weight.grad, (x - 0.5).sum(dim=(0, 2, 3)) / 2)
    torch.testing.assert_close(bn.bias.grad, torch.full((3,), 4.0))
    assert torch.equal(bn.running_var, torch.full((3,), 4.0))  # statistics stay frozen


def test_computes_in_input_dtype():
    bn = FrozenBatchNorm2d(2)
    _set_stats(bn, 2.0, 1.0, 0.5, 4.0)
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    y = bn(x)
    assert y.dtype == torch.float64
    assert torch.equal(y, x + 0.5)
    assert bn(x.to(torch.bfloat16)).dtype == torch.bfloat16
