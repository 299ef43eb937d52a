"""ComfyUI adapters. Each feature area is one module with a ``NODES`` list.

Importing this package imports ComfyUI's ``comfy_api``; headless code never imports it.
"""

import importlib
import logging

from ._comfy import ComfyExtension

__all__ = ["NODE_MODULES", "node_classes", "extension"]

#: Feature-area modules, in menu order. Each defines ``NODES: list[type[io.ComfyNode]]``.
NODE_MODULES = ("pose", "regions", "scoring", "pose_adapter", "refine", "pairs", "train")

log = logging.getLogger("vitruvian")


def node_classes() -> list:
    """Every node class of the pack. A module that fails to import is logged with its traceback
    and the others still load (one broken optional dependency must not hide the whole pack)."""
    classes = []
    for name in NODE_MODULES:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except Exception:
            log.exception("Vitruvian: node module %r failed to import; its nodes are unavailable", name)
            continue
        classes.extend(module.NODES)
    return classes


class VitruvianExtension(ComfyExtension):
    async def get_node_list(self) -> list:
        return node_classes()


def extension() -> VitruvianExtension:
    return VitruvianExtension()
