"""``edge_yolo.train(...)`` and ``edge_yolo.export(...)`` where ``edge_yolo.train`` and
``edge_yolo.export`` are also packages (standard library only).

A package calls :func:`make_callable` on itself: calling the module then calls the function
of the same job in :mod:`edge_yolo.api`, while ``import edge_yolo.train.loop`` and the
package's attributes work as before.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    _api_name: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # resolved at call time: edge_yolo.api imports these packages' modules when it runs
        api = importlib.import_module("edge_yolo.api")
        return getattr(api, self._api_name)(*args, **kwargs)


def make_callable(module_name: str, api_name: str) -> None:
    """Make the module ``module_name`` call ``edge_yolo.api.<api_name>`` when called."""
    module = sys.modules[module_name]
    module.__class__ = _CallableModule
    module._api_name = api_name  # type: ignore[attr-defined]
