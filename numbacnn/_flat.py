"""One flat array per table (parameters, gradients, an optimizer's state) with per-key views.

A training step of a small net is bound by Python launches, not arithmetic: an optimizer
that loops over parameters pays one kernel launch per array, ``zero_grad`` one fill per
gradient. With every parameter a view into one flat array (and every gradient and state
buffer a view into a flat array of the same layout) the update is one kernel call and the
zeroing one fill, whatever the number of parameters.

``FlatTable`` is the dict ``model.params`` and ``model.grads`` are: its values are the live
views (writable in place, as before), and assigning a new array to a key copies it into the
view, so the flat array stays the one the optimizer updates.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from .device import array_device

__all__ = ["Layout", "FlatTable"]


class Layout:
    """Where each key's elements lie in the flat array: ``spans[key] = (start, stop, shape)``,
    in the order the keys were given, with no gaps (``size`` elements in all)."""

    def __init__(self, shapes: Iterable[tuple[str, tuple[int, ...]]]) -> None:
        self.spans: dict[str, tuple[int, int, tuple[int, ...]]] = {}
        at = 0
        for key, shape in shapes:
            n = int(np.prod(shape, dtype=np.int64))
            self.spans[key] = (at, at + n, tuple(int(d) for d in shape))
            at += n
        self.size = at

    def views(self, flat: Any) -> dict[str, Any]:
        """Per-key views into ``flat`` (a NumPy or numba.cuda array of ``size`` elements)."""
        return {k: flat[a:b].reshape(shape) for k, (a, b, shape) in self.spans.items()}

    def zeros(self, backend: Any, dtype: Any) -> Any:
        flat = backend.new((self.size,), dtype)
        backend.fill_zero(flat)
        return flat


class FlatTable(dict):
    """``{key: view}`` over one flat array ``flat``; the set of keys is fixed.

    ``table[key] = array`` writes ``array`` into the existing view (same shape, cast to the
    table's dtype, on its device), so the key keeps pointing into ``flat``: assigning a new
    array cannot detach a parameter from the optimizer. Adding or removing keys raises.
    """

    def __init__(self, layout: Layout, flat: Any, what: str) -> None:
        super().__init__()
        self.layout, self._what = layout, what
        self.rebind(flat)

    def rebind(self, flat: Any) -> None:
        """Point every key at its view of ``flat`` (the table moved to another device)."""
        self.flat = flat
        dict.update(self, self.layout.views(flat))

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self:
            raise KeyError(f"{self._what}: no key {key!r}; the keys are fixed when the model is built "
                           f"(they are {', '.join(self) or 'none'})")
        live = dict.__getitem__(self, key)
        if value is live:
            return
        shape = tuple(getattr(value, "shape", np.shape(value)))
        if shape != tuple(live.shape):
            raise ValueError(f"{self._what}['{key}']: expected an array of shape {tuple(live.shape)}, found "
                             f"{shape}; the model's arrays keep their shapes")
        if isinstance(live, np.ndarray):
            np.copyto(live, _host(value), casting="unsafe")
        elif array_device(value) == "cuda":
            live.copy_to_device(value)
        else:
            live.copy_to_device(np.ascontiguousarray(value, dtype=live.dtype))

    def __delitem__(self, key: str) -> None:
        raise TypeError(f"{self._what}: keys cannot be removed (the model's parameters are fixed)")

    def _fixed(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{self._what}: keys cannot be added or removed (the model's parameters are fixed); "
                        f"write into an array in place, or assign one of the same shape to its key")

    pop = popitem = clear = _fixed

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key in self:
            return dict.__getitem__(self, key)
        return self._fixed()

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __reduce__(self) -> Any:  # a copy or pickle is a plain dict of copies, not views
        return dict, (dict(self),)


def _host(value: Any) -> np.ndarray:
    return value.copy_to_host() if array_device(value) == "cuda" else np.asarray(value)
