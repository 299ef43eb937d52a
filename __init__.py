"""Vitruvian: ComfyUI nodes and a headless trainer for anatomically right people.

This file is both the ComfyUI entry point (ComfyUI imports the folder and calls
:func:`comfy_entrypoint`) and the top of the pip package ``vitruvian``. It imports
nothing heavy: ComfyUI imports every pack at start-up, and ``import vitruvian`` must
stay cheap for headless users. The node modules (which import ComfyUI's ``comfy_api``)
are loaded only when ComfyUI asks for the node list.
"""

__version__ = "0.1.0"

WEB_DIRECTORY = "./web"  # the training-jobs panel (web/vitruvian_jobs.js)


async def comfy_entrypoint():
    """Return the pack's ``ComfyExtension`` (ComfyUI V3 entry point)."""
    from .nodes import extension

    return extension()
