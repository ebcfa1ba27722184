"""Process logging: the main process logs to stdout and ``save_dir/filename``."""
import logging
import os
import sys

_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


def setup_logger(name, save_dir, distributed_rank, filename="log.txt"):
    """Configure logger ``name`` (level DEBUG) and return it.

    Only rank 0 gets handlers, so other ranks stay quiet below WARNING. An
    empty ``save_dir`` means no log file. Calling it again replaces the
    handlers this function added before instead of duplicating every line.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    for handler in [h for h in logger.handlers if getattr(h, "_atss_core", False)]:
        logger.removeHandler(handler)
        handler.close()
    if distributed_rank > 0:
        return logger

    formatter = logging.Formatter(_FORMAT)
    handlers = [logging.StreamHandler(stream=sys.stdout)]
    if save_dir:
        os.makedirs(save_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(save_dir, filename)))
    for handler in handlers:
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(formatter)
        handler._atss_core = True
        logger.addHandler(handler)
    return logger
