"""A checkpoint made for another architecture is reported, not a crash deep in torch (issue 3 item 11).

The loading code is utils/checkpoint.py; this pins the user-facing outcome for
a config that does not match the weights: either a readable error naming the
keys and both shapes, or (when mismatches are skipped for fine-tuning) a log
that reports the skipped keys.
"""
import os

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
    torch.save({"model": build_detection_model(_toy_cfg()).state_dict(), "iteration": 7}, path)
    other = _toy_cfg(  # half the backbone width
        "MODEL.RESNETS.STEM_OUT_CHANNELS", "16", "MODEL.RESNETS.WIDTH_PER_GROUP", "16",
        "MODEL.RESNETS.RES2_OUT_CHANNELS", "16",
    )
    model = build_detection_model(other)
    checkpointer = DetectronCheckpointer(other, model, save_dir=str(tmp_path))
    with caplog.at_level("INFO"):
        try:
            checkpointer.load(str(path), use_latest=False)
        except (ValueError, RuntimeError) as e:
            message = str(e)
            assert "Error(s) in loading state_dict" not in message  # torch's own, deep error
            assert "backbone.body.stem.conv1.weight (16, 3, 7, 7)" in message  # the model's shape
            assert "(32, 3, 7, 7)" in message  # the checkpoint's
        else:
            assert "skip" in caplog.text.lower()
