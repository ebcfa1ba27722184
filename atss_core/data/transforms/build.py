"""``build_transforms``: the cfg -> transform pipeline mapping (framework spec 5.3)."""
from . import transforms as T


def train_min_sizes(cfg):
    """Shorter-side candidates for training: the inclusive MIN_SIZE_RANGE_TRAIN if set, else MIN_SIZE_TRAIN."""
    rng = tuple(cfg.INPUT.MIN_SIZE_RANGE_TRAIN)
    if len(rng) != 2:
        raise ValueError(f"INPUT.MIN_SIZE_RANGE_TRAIN must be (lo, hi) or (-1, -1), got {rng}")
    if rng[0] == -1:
        return tuple(cfg.INPUT.MIN_SIZE_TRAIN)
    lo, hi = rng
    if not 0 < lo <= hi:
        raise ValueError(f"INPUT.MIN_SIZE_RANGE_TRAIN must satisfy 0 < lo <= hi, got {rng}")
    return tuple(range(lo, hi + 1))


def build_transforms(cfg, is_train=True):
    """Resize -> RandomHorizontalFlip -> ToTensor -> Normalize; test time never flips."""
    if is_train:
        min_size, max_size = train_min_sizes(cfg), cfg.INPUT.MAX_SIZE_TRAIN
        flip_prob = cfg.INPUT.HORIZONTAL_FLIP_PROB_TRAIN
    else:
        min_size, max_size, flip_prob = cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, 0.0
    return T.Compose(
        [
            T.Resize(min_size, max_size),
            T.RandomHorizontalFlip(flip_prob),
            T.ToTensor(),
            build_normalize(cfg),
        ]
    )


def build_normalize(cfg):
    """The ``INPUT.PIXEL_MEAN``/``PIXEL_STD``/``TO_BGR255`` normalisation (spec C13)."""
    return T.Normalize(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD, cfg.INPUT.TO_BGR255)
