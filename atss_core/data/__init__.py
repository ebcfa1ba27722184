from .build import build_dataset, make_batch_data_sampler, make_data_loader, make_data_sampler

__all__ = ["build_dataset", "make_batch_data_sampler", "make_data_loader", "make_data_sampler"]
