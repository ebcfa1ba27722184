"""``ConcatDataset`` that also answers ``get_img_info`` (needed by aspect grouping)."""
import bisect

from torch.utils.data import ConcatDataset as _TorchConcatDataset


class ConcatDataset(_TorchConcatDataset):
    """Concatenation of datasets that share one category list."""

    def __init__(self, datasets):
        super().__init__(datasets)
        names = [getattr(d, "categories", None) for d in self.datasets]
        if any(n != names[0] for n in names[1:]):
            raise ValueError(f"cannot concatenate datasets with different categories: {names}")
        self.categories = names[0]

    def __getitem__(self, idx):
        # The inner dataset returns its own local index; callers need the global one.
        img, target, _ = super().__getitem__(idx)
        return img, target, idx if idx >= 0 else idx + len(self)

    def get_idxs(self, idx):
        """(dataset index, index inside that dataset) of global index ``idx``."""
        if idx < 0:
            idx += len(self)
        dataset_idx = bisect.bisect_right(self.cumulative_sizes, idx)
        sample_idx = idx - (self.cumulative_sizes[dataset_idx - 1] if dataset_idx > 0 else 0)
        return dataset_idx, sample_idx

    def get_img_info(self, idx):
        dataset_idx, sample_idx = self.get_idxs(idx)
        return self.datasets[dataset_idx].get_img_info(sample_idx)
