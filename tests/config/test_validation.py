"""Bad config input gets an error naming the key (issue 3 item 11)."""
import os

import pytest

from atss_core.config import cfg as default_cfg
from atss_core.config import validation
from atss_core.utils.miscellaneous import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY = os.path.join(ROOT, "configs", "quickstart", "atss_toy.yaml")


def test_unknown_key_on_the_command_line_names_the_nearest_key():
    with pytest.raises(validation.UnknownConfigKeyError) as e:
        load_config(default_cfg.clone(), TOY, ["MODEL.ATSS.TOPKK", "9"])
    assert str(e.value) == "unknown config key 'MODEL.ATSS.TOPKK' in the command line; did you mean 'MODEL.ATSS.TOPK'?"
    # a key in the wrong group still finds its place
    with pytest.raises(KeyError, match=r"'SOLVER.NUM_CLASSES'.*did you mean 'MODEL\.\w+\.NUM_CLASSES'"):
        load_config(default_cfg.clone(), TOY, ["SOLVER.NUM_CLASSES", "4"])


def test_unknown_key_in_a_file_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("MODEL:\n  ATSS:\n    NMS_TRESH: 0.5\n")
    with pytest.raises(KeyError) as e:
        load_config(default_cfg.clone(), str(path), [])
    assert f"'MODEL.ATSS.NMS_TRESH' in {path}; did you mean 'MODEL.ATSS.NMS_TH'?" in str(e.value)
    path.write_text("SOLVR:\n  BASE_LR: 0.1\n")
    with pytest.raises(KeyError, match=r"'SOLVR.BASE_LR'.*did you mean 'SOLVER.BASE_LR'"):
        load_config(default_cfg.clone(), str(path), [])


def test_wrong_type_names_key_value_and_expected_type(tmp_path):
    with pytest.raises(ValueError) as e:
        load_config(default_cfg.clone(), TOY, ["MODEL.ATSS.TOPK", "nine"])
    assert str(e.value) == (
        "config key 'MODEL.ATSS.TOPK' in the command line expects type int (default 9), got str 'nine'"
    )
    # yacs's rule: an int is not a float; the message says what to write
    with pytest.raises(ValueError, match=r"'SOLVER.BASE_LR' .* expects type float .* got int 1 \(write 1.0\)"):
        load_config(default_cfg.clone(), TOY, ["SOLVER.BASE_LR", "1"])
    path = tmp_path / "bad_type.yaml"
    path.write_text("INPUT:\n  MIN_SIZE_TEST: [800]\n")
    with pytest.raises(ValueError, match=rf"'INPUT.MIN_SIZE_TEST' in {path} expects type int .* got list \[800\]"):
        load_config(default_cfg.clone(), str(path), [])


def test_group_given_a_value_is_rejected():
    with pytest.raises(ValueError, match=r"'MODEL.ATSS' in the command line is a group of keys"):
        load_config(default_cfg.clone(), TOY, ["MODEL.ATSS", "4"])


def test_valid_overrides_still_merge():
    cfg = default_cfg.clone()
    # tuple <-> list and string literals decode as in yacs
    load_config(cfg, TOY, ["INPUT.MIN_SIZE_TRAIN", "[96, 128]", "SOLVER.BASE_LR", "0.5", "OUTPUT_DIR", "/tmp/x"])
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (96, 128)
    assert cfg.SOLVER.BASE_LR == 0.5 and cfg.OUTPUT_DIR == "/tmp/x"
    assert cfg.MODEL.ATSS.NUM_CLASSES == 4  # from the file
    assert cfg.is_frozen()


def test_every_shipped_config_passes_the_checks():
    for folder, _, files in os.walk(os.path.join(ROOT, "configs")):
        for name in files:
            if name.endswith(".yaml"):
                validation.merge_from_file(default_cfg.clone(), os.path.join(folder, name))


@pytest.mark.parametrize(
    "flags, namespace",
    [(("ATSS_ON",), "ATSS"), (("DYNAMIC_ATSS_ON",), "ATSS"), (("FCOS_ON",), "FCOS"), (("DW_ON",), "DW"),
     ((), None), (("ATSS_ON", "FCOS_ON"), None)],
)
def test_head_namespace(flags, namespace):
    cfg = default_cfg.clone()
    for flag in flags:
        cfg.MODEL[flag] = True
    assert validation.head_namespace(cfg) == namespace


def test_num_classes_check():
    cfg = default_cfg.clone()
    cfg.MODEL.RETINANET_ON = True
    validation.check_num_classes(cfg, ["c%d" % i for i in range(80)], "coco")  # 81 = 80 + background
    with pytest.raises(ValueError) as e:
        validation.check_num_classes(cfg, ["cat", "dog"], "pets")
    assert str(e.value) == (
        "MODEL.RETINANET.NUM_CLASSES is 81 but dataset 'pets' has 2 categories (cat, dog); "
        "set MODEL.RETINANET.NUM_CLASSES 3 (categories + background)"
    )
