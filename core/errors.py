"""The pack's exception tree (networkx style): one root, domain errors beneath it.

Messages follow ``"<function>: <arg> must be <expectation>, got <actual>"`` plus a
hint for predictable mistakes, so that a ComfyUI node error tells the user what to fix.
"""

__all__ = ["VitruvianError", "PoseFormatError", "ModelNotFoundError", "ConfigError", "DatasetError", "NodeInputError"]


class VitruvianError(Exception):
    """Root of every error this pack raises on purpose."""


class PoseFormatError(VitruvianError, ValueError):
    """Keypoint data that cannot be read: wrong lengths, NaN, unknown format, bad canvas."""


class ModelNotFoundError(VitruvianError, FileNotFoundError):
    """A model file the user named is not where we looked.

    Parameters
    ----------
    what : str
        What was looked for, e.g. ``"pose adapter 'x.safetensors'"``.
    searched : list of str
        Every folder that was searched, so the user can put the file in one of them.
    """

    def __init__(self, what: str, searched: list[str]):
        self.what = what
        self.searched = list(searched)
        where = "\n  ".join(self.searched) or "(no folders configured)"
        super().__init__(f"{what} not found; searched:\n  {where}")


class ConfigError(VitruvianError, ValueError):
    """A training or node configuration value outside its valid range or set."""


class DatasetError(VitruvianError, ValueError):
    """A dataset that fails validation; the message lists every bad record."""


class NodeInputError(VitruvianError, ValueError):
    """A node input that does not fit its declared type (a wrong object on a link, a NaN image, an unknown
    option), raised before the node does any work.

    Parameters
    ----------
    node : str
        The node id, e.g. ``"VitruvianScoreRegions"``.
    name : str
        The input's name.
    problem : str
        What was expected, what came and the fix.
    """

    def __init__(self, node: str, name: str, problem: str):
        self.node, self.name, self.problem = node, name, problem
        super().__init__(f"{node}: input '{name}': {problem}")
