"""``toy_cli``: run tools/train_net.py and tools/test_net.py as subprocesses on a tiny toy dataset.

16 training images in batches of 4 (4 iterations per pass), 64 px, every
batch padded to 128x128 (so that a batch split over processes pads alike),
a log line and TensorBoard write every iteration, one thread per process.
"""
import glob
import os
import socket
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from atss_core.data.datasets.toy_shapes import ensure_toy_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "quickstart", "atss_toy.yaml")

CATALOG = """
import os

ROOT = {root!r}


class DatasetCatalog:
    @staticmethod
    def get(name):
        split = name[len("toy16_"):]
        return dict(factory="COCODataset", args=dict(
            root=os.path.join(ROOT, split), ann_file=os.path.join(ROOT, "annotations", "toy_shapes_%s.json" % split)))
"""

OPTS = [
    "MODEL.DEVICE", "cpu", "DATASETS.TRAIN", "('toy16_train',)", "DATASETS.TEST", "('toy16_val',)",
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MIN_SIZE_TEST", "64", "DATALOADER.SIZE_DIVISIBILITY", "128",
    "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "4", "TEST.IMS_PER_BATCH", "4",
    "SOLVER.BASE_LR", "0.01", "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "(1000,)", "SOLVER.LOG_PERIOD", "1",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_scalars(event_file):
    """{tag: {step: value}} of one TensorBoard event file."""
    acc = EventAccumulator(event_file)
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


class ToyCli:
    def __init__(self, root):
        self.catalog = str(root / "toy16_catalog.py")
        ensure_toy_dataset(str(root / "toy"), num_train=16, num_val=4, seed=3, size=64)
        (root / "toy16_catalog.py").write_text(CATALOG.format(root=str(root / "toy")))
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")

    root = ROOT

    @staticmethod
    def torchrun(processes):
        """Arguments that start a script with torchrun on ``processes`` local processes."""
        return ["-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={processes}",
                "--master_addr=127.0.0.1", f"--master_port={free_port()}"]

    def train_args(self, out_dir, *opts, flags=("--skip-test",), processes=1):
        launcher = self.torchrun(processes) if processes > 1 else []
        return (launcher + ["tools/train_net.py", "--config-file", CONFIG, *flags, "PATHS_CATALOG", self.catalog,
                            "OUTPUT_DIR", str(out_dir)] + OPTS + list(opts))

    def test_args(self, out_dir, weight, *opts):
        return (["tools/test_net.py", "--config-file", CONFIG, "PATHS_CATALOG", self.catalog,
                 "OUTPUT_DIR", str(out_dir), "MODEL.WEIGHT", str(weight)] + OPTS + list(opts))

    def popen(self, args):
        return subprocess.Popen([sys.executable] + args, cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def run(self, args, timeout=300):
        proc = subprocess.run([sys.executable] + args, cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        return out

    @staticmethod
    def scalars(out_dir):
        """{tag: {step: value}} of the newest event file in ``out_dir``."""
        return read_scalars(max(glob.glob(os.path.join(out_dir, "events.out.tfevents.*")), key=os.path.getmtime))


@pytest.fixture(scope="session")
def toy_cli(tmp_path_factory):
    return ToyCli(tmp_path_factory.mktemp("toy16"))
