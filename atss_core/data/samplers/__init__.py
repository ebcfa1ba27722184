from .distributed import DistributedSampler
from .grouped_batch_sampler import GroupedBatchSampler
from .iteration_based_batch_sampler import IterationBasedBatchSampler
from .training import SeededDataset, ShardedBatchSampler

__all__ = [
    "DistributedSampler",
    "GroupedBatchSampler",
    "IterationBasedBatchSampler",
    "SeededDataset",
    "ShardedBatchSampler",
]
