"""Skeleton graphs with networkx: joints are nodes, bones are edges.

A person becomes one undirected graph. Node keys are ``(part, index)`` tuples, e.g.
``("left_hand", 8)``; each node has the attributes ``part``, ``index``, ``name`` (canonical
joint name), ``x``, ``y`` and ``confidence``. Each edge has ``part`` (the part whose bone it
is, or ``"link"`` for the bones joining parts, such as body wrist to hand wrist) and ``bone``
(the bone's position in its format's table, or in :data:`~.formats.PART_LINKS`).

Functions take the graph first (networkx style). Node order is deterministic: parts in
:data:`~.formats.PART_NAMES` order, keypoint index ascending; :func:`to_edge_index` and
:func:`node_features` both follow it, so their rows line up.

Shape:
    - edge index: ``(2, E)`` int64
    - node features: ``(N, F)`` float32
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..errors import PoseFormatError
from .formats import PART_LINKS, PART_NAMES, get_format
from .keypoints import Person

if TYPE_CHECKING:  # networkx costs ~0.2 s to import; ComfyUI imports every pack at start
    import networkx as nx

__all__ = ["build_pose_graph", "part_subgraph", "to_edge_index", "node_features", "NODE_FEATURES"]

#: Node attributes :func:`node_features` may stack.
NODE_FEATURES = ("x", "y", "confidence")


def build_pose_graph(person: Person, *, min_confidence: float = 0.0) -> nx.Graph:
    """The skeleton of one person as a networkx graph.

    Parameters
    ----------
    person : Person
        Any combination of parts and formats.
    min_confidence : float, optional
        Joints with confidence below this are left out, with their bones (default 0: keep all).

    Returns
    -------
    G : nx.Graph
        Nodes ``(part, index)``; ``G.graph["formats"]`` maps each present part to its format.

    Examples
    --------
    >>> from vitruvian.core.pose import Part, Person
    >>> G = build_pose_graph(Person(body=Part("coco18", torch.ones(18, 3))))
    >>> G.number_of_nodes(), G.number_of_edges()
    (18, 17)
    """
    if not isinstance(person, Person):
        raise PoseFormatError(f"build_pose_graph: person must be a Person, got {type(person).__name__}")
    if not 0 <= min_confidence <= 1:
        raise PoseFormatError(f"build_pose_graph: min_confidence must be in [0, 1], got {min_confidence}")
    import networkx as nx

    G = nx.Graph(formats={name: part.format for name, part in person.parts()})
    for name, part in person.parts():
        fmt = get_format(part.format)
        for i, (x, y, c) in enumerate(part.keypoints.tolist()):
            if c >= min_confidence:
                G.add_node((name, i), part=name, index=i, name=fmt.joints[i], x=x, y=y, confidence=c)
        for b, (i, j) in enumerate(fmt.bones):
            if (name, i) in G and (name, j) in G:
                G.add_edge((name, i), (name, j), part=name, bone=b)
    for b, (part_a, joint_a, part_b, joint_b) in enumerate(PART_LINKS):
        a, b_node = _node_of(person, part_a, joint_a), _node_of(person, part_b, joint_b)
        if a in G and b_node in G:
            G.add_edge(a, b_node, part="link", bone=b)
    return G


def _node_of(person: Person, part: str, joint: str):
    p = getattr(person, part)
    if p is None:
        return None
    joints = get_format(p.format).joints
    return (part, joints.index(joint)) if joint in joints else None


def part_subgraph(G: nx.Graph, part: str) -> nx.Graph:
    """The joints of one part and the bones among them (a copy; links to other parts dropped).

    Parameters
    ----------
    G : nx.Graph
        From :func:`build_pose_graph`.
    part : str
        One of ``body``, ``feet``, ``face``, ``left_hand``, ``right_hand``.

    Returns
    -------
    nx.Graph
        Empty when the person has no such part.
    """
    if part not in PART_NAMES:
        raise PoseFormatError(f"part_subgraph: part must be one of {', '.join(PART_NAMES)}, got {part!r}")
    nodes = [n for n, d in G.nodes(data=True) if d.get("part") == part]
    H = G.subgraph(nodes).copy()
    H.graph["formats"] = {k: v for k, v in G.graph.get("formats", {}).items() if k == part}
    return H


def to_edge_index(G: nx.Graph, *, both_directions: bool = True) -> torch.Tensor:
    """Bones as a ``(2, E)`` int64 tensor of node positions (in ``G``'s node order).

    Parameters
    ----------
    G : nx.Graph
    both_directions : bool, optional
        True (default): every bone appears as i→j and j→i, the PyTorch Geometric convention for
        undirected graphs, so E = 2 × bones. False: one column per bone, E = bones.

    Returns
    -------
    torch.Tensor
        ``(2, E)`` int64; ``(2, 0)`` for a graph without edges.
    """
    position = {n: i for i, n in enumerate(G.nodes)}
    pairs = [(position[u], position[v]) for u, v in G.edges]
    if both_directions:
        pairs = pairs + [(v, u) for u, v in pairs]
    if not pairs:
        return torch.zeros(2, 0, dtype=torch.int64)
    return torch.tensor(pairs, dtype=torch.int64).T.contiguous()


def node_features(G: nx.Graph, features: tuple[str, ...] = NODE_FEATURES) -> torch.Tensor:
    """Stack node attributes into ``(N, F)`` float32, rows in ``G``'s node order.

    Parameters
    ----------
    G : nx.Graph
    features : tuple of str, optional
        Attribute names, default ``("x", "y", "confidence")``.
    """
    unknown = [f for f in features if f not in NODE_FEATURES]
    if unknown:
        raise PoseFormatError(f"node_features: features must be among {', '.join(NODE_FEATURES)}, got {unknown}")
    rows = [[d[f] for f in features] for _, d in G.nodes(data=True)]
    if not rows:
        return torch.zeros(0, len(features), dtype=torch.float32)
    return torch.tensor(rows, dtype=torch.float32)
