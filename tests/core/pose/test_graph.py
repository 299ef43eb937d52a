import networkx as nx
import pytest
import torch

from vitruvian.core.errors import PoseFormatError
from vitruvian.core.pose import Part, Person, build_pose_graph, load_pose, node_features, part_subgraph, to_edge_index


def _part(fmt, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Part(fmt, torch.rand(k, 3, generator=g) * torch.tensor([512.0, 512.0, 1.0]))


def _wholebody():
    return Person(
        body=_part("coco17", 17), feet=_part("feet6", 6), face=_part("face68", 68),
        left_hand=_part("hand21", 21, 1), right_hand=_part("hand21", 21, 2),
    )


def _aux():
    return Person(body=_part("coco18", 18), face=_part("face70", 70), left_hand=_part("hand21", 21, 1), right_hand=_part("hand21", 21, 2))


class TestBuildPoseGraph:
    @pytest.mark.parametrize(
        "person, nodes, edges, components",
        [
            (Person(body=_part("coco18", 18)), 18, 17, 1),
            (Person(body=_part("body25", 25)), 25, 24, 1),
            (Person(body=_part("coco17", 17)), 17, 19, 1),
            (Person(body=_part("mediapipe33", 33)), 33, 35, 3),  # MediaPipe's table: head, mouth, body apart
            (Person(left_hand=_part("hand21", 21)), 21, 20, 1),
            (Person(face=_part("face70", 70)), 70, 77, 1),
            # 19 body + 2 feet + 73 face + 2 × 20 hand bones + 9 links (wrists, ankles → toes/heels, nose)
            (_wholebody(), 133, 143, 1),
            # 17 + 77 + 40 bones + 3 links (two wrists, nose)
            (_aux(), 130, 137, 1),
        ],
    )
    def test_cardinality(self, person, nodes, edges, components):
        G = build_pose_graph(person)
        assert (G.number_of_nodes(), G.number_of_edges()) == (nodes, edges)
        assert nx.number_connected_components(G) == components

    def test_value_attributes(self):
        person = _wholebody()
        G = build_pose_graph(person)
        node = G.nodes["left_hand", 8]
        x, y, c = person.left_hand.keypoints[8].tolist()
        assert node == {"part": "left_hand", "index": 8, "name": "index_tip", "x": x, "y": y, "confidence": c}
        assert G.edges[("body", 9), ("left_hand", 0)] == {"part": "link", "bone": 0}  # left wrist ↔ hand wrist
        assert G.edges[("left_hand", 0), ("left_hand", 1)]["part"] == "left_hand"
        assert G.graph["formats"]["feet"] == "feet6"

    def test_value_min_confidence_real_astronaut(self, astronaut):
        person = load_pose({"pose_33": astronaut["pose_33"], "size": astronaut["size"]}).pose[0].people[0]
        G = build_pose_graph(person, min_confidence=0.3)
        kept = {i for i, (_, _, c) in enumerate(astronaut["pose_33"]) if c >= 0.3}
        assert {i for _, i in G.nodes} == kept
        assert all(u[1] in kept and v[1] in kept for u, v in G.edges)
        assert ("body", 27) not in G  # the ankles are below the frame, visibility 0.008

    def test_exception(self):
        with pytest.raises(PoseFormatError, match="person must be a Person, got dict"):
            build_pose_graph({})
        with pytest.raises(PoseFormatError, match=r"min_confidence must be in \[0, 1\], got 2"):
            build_pose_graph(_aux(), min_confidence=2)


class TestPartSubgraph:
    def test_value_hands_and_face(self):
        G = build_pose_graph(_aux())
        hand = part_subgraph(G, "right_hand")
        assert (hand.number_of_nodes(), hand.number_of_edges()) == (21, 20)
        assert {d["part"] for _, d in hand.nodes(data=True)} == {"right_hand"}
        face = part_subgraph(G, "face")
        assert (face.number_of_nodes(), face.number_of_edges()) == (70, 77)
        assert part_subgraph(G, "feet").number_of_nodes() == 0
        hand.remove_node(("right_hand", 0))
        assert ("right_hand", 0) in G  # a copy, not a view

    def test_exception(self):
        with pytest.raises(PoseFormatError, match="part must be one of body, feet, face, left_hand, right_hand, got 'hand'"):
            part_subgraph(build_pose_graph(_aux()), "hand")


class TestTensors:
    def test_smoke(self):
        G = build_pose_graph(_wholebody())
        ei, x = to_edge_index(G), node_features(G)
        assert ei.dtype == torch.int64 and ei.shape == (2, 2 * 143)
        assert x.dtype == torch.float32 and x.shape == (133, 3)
        assert to_edge_index(G, both_directions=False).shape == (2, 143)

    def test_value_rows_line_up(self):
        G = build_pose_graph(_aux())
        nodes = list(G.nodes)
        ei, x = to_edge_index(G, both_directions=False), node_features(G)
        for (i, j), (u, v) in zip(ei.T.tolist(), G.edges):
            assert (nodes[i], nodes[j]) == (u, v)
        for i, n in enumerate(nodes):
            assert x[i].tolist() == [G.nodes[n]["x"], G.nodes[n]["y"], G.nodes[n]["confidence"]]
        # Both directions: the second half mirrors the first.
        both = to_edge_index(G)
        assert torch.equal(both[:, ei.shape[1]:], ei.flip(0))

    def test_value_subgraph_indices_are_local(self):
        hand = part_subgraph(build_pose_graph(_aux()), "left_hand")
        ei = to_edge_index(hand)
        assert int(ei.max()) == 20 and int(ei.min()) == 0

    def test_value_empty(self):
        G = nx.Graph()
        assert to_edge_index(G).shape == (2, 0) and node_features(G).shape == (0, 3)

    def test_exception(self):
        with pytest.raises(PoseFormatError, match="features must be among x, y, confidence"):
            node_features(build_pose_graph(_aux()), ("z",))
