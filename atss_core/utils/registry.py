"""Name -> builder maps for the swappable parts (backbones, dense heads)."""


class Registry(dict):
    """A dict whose ``register`` decorator refuses duplicate names.

    >>> BACKBONES = Registry("backbone")
    >>> @BACKBONES.register("R-50-FPN-RETINANET")
    ... def build(cfg): ...
    """

    def __init__(self, kind, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kind = kind

    def register(self, name):
        def deco(fn):
            if name in self:
                raise KeyError(f"{self.kind} '{name}' is already registered")
            self[name] = fn
            return fn

        return deco

    def __missing__(self, name):
        known = ", ".join(sorted(self)) or "none"
        raise KeyError(f"unknown {self.kind} '{name}'; registered: {known}")
