"""A checkpoint made for another architecture is reported, not a crash deep in torch (issue 3 item 11).

The loading code is utils/checkpoint.py; this pins the user-facing outcome for
a config that does not match the weights: a readable error naming the keys and
both shapes when evaluating, and a log that reports the skipped keys when
initialising for fine-tuning.
"""
import os

import pytest
import torch

from atss_core.config import cfg as default_cfg
from atss_core.modeling.detector import build_detection_model
from atss_core.utils.checkpoint import DetectronCheckpointer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _toy_cfg(*opts):
    cfg = default_cfg.clone()
    cfg.merge_from_file(os.path.join(ROOT, "configs", "quickstart", "atss_toy.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


def test_weights_of_a_wider_resnet18(tmp_path, caplog):
    torch.manual_seed(0)
    path = tmp_path / "r18.pth"
    source = build_detection_model(_toy_cfg()).state_dict()
    torch.save({"model": source, "iteration": 7}, path)
    other = _toy_cfg(  # half the backbone width
        "MODEL.RESNETS.STEM_OUT_CHANNELS", "16", "MODEL.RESNETS.WIDTH_PER_GROUP", "16",
        "MODEL.RESNETS.RES2_OUT_CHANNELS", "16",
    )
    model = build_detection_model(other)
    checkpointer = DetectronCheckpointer(other, model, save_dir=str(tmp_path))
    # evaluation-style loading: every tensor must fit
    with pytest.raises(ValueError) as e:
        checkpointer.load(str(path), use_latest=False)
    message = str(e.value)
    assert "Error(s) in loading state_dict" not in message  # torch's own, deep error
    mismatch = "backbone.body.stem.conv1.weight (16, 3, 7, 7) <- backbone.body.stem.conv1.weight (32, 3, 7, 7)"
    assert mismatch in message  # the key with the model's and the checkpoint's shape
    # initialising for fine-tuning: the same tensors are skipped and reported, the rest loads
    stem_before = model.backbone.body.stem.conv1.weight.clone()
    with caplog.at_level("INFO"):
        assert checkpointer.load_weights(str(path)) == {"iteration": 7}
    assert "skipped" in caplog.text and mismatch in caplog.text
    assert torch.equal(model.backbone.body.stem.conv1.weight, stem_before)
    assert torch.equal(model.rpn.head.cls_logits.weight, source["rpn.head.cls_logits.weight"])  # the head fits
