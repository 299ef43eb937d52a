"""Datasets: metadata.jsonl validation, items, shared augmentation, Pick-a-Pic parquet streaming, loaders."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitruvian.core.errors import DatasetError
from vitruvian.trainers.data import (JsonlDataset, PickapicDataset, collate, make_loader, open_dataset,
                                     validate_dataset)
from vitruvian.trainers.data.items import geometry_for, plan_augmentation, read_quality_map, warp_boxes

DATA = Path(__file__).parents[1] / "data"
ASTRONAUT, CAMERA = "trainer_astronaut_face.png", "trainer_camera_face.png"  # 96 x 72, see tests/data/README.md
FACE_A, FACE_C = [26.5, 13.5, 78.5, 65.5], [19.5, 16, 57.5, 54]


def write_jsonl(folder: Path, records: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def pair_folder(tmp_path) -> Path:
    folder = tmp_path / "pairs"
    folder.mkdir()
    for name in (ASTRONAUT, CAMERA):
        shutil.copy(DATA / name, folder / name)
    np.save(folder / "q_chosen.npy", np.full((36, 48), 0.25, dtype=np.float32))
    records = [{"prompt": f"portrait {i}", "chosen": ASTRONAUT, "rejected": CAMERA,
                "face_boxes": {"chosen": [FACE_A], "rejected": [FACE_C]}, "chosen_quality": "q_chosen.npy"}
               for i in range(5)]
    return write_jsonl(folder, records)


def open_pairs(folder, resolution=64, flip=True, crop=True, seed=0) -> JsonlDataset:
    return open_dataset(folder, resolution=resolution, random_flip=flip, random_crop=crop, seed=seed)


# ---- validation ---------------------------------------------------------------------------------------


def test_smoke_validate(pair_folder):
    records = validate_dataset(pair_folder)
    assert len(records) == 5 and all(r.is_pair for r in records)
    r = records[0]
    assert r.line == 1 and r.sizes == ((96, 72), (96, 72)) and r.source == "generated"
    assert r.boxes["face_boxes"] == ((tuple(FACE_A),), (tuple(FACE_C),)) and r.boxes["hand_boxes"] == ((), ())
    assert r.quality[0].endswith("q_chosen.npy") and r.quality[1] is None


def test_exception_every_bad_line_in_one_error(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    for name in (ASTRONAUT, CAMERA):
        shutil.copy(DATA / name, folder / name)
    (folder / "broken.png").write_bytes(b"not an image at all")
    np.save(folder / "hot.npy", np.full((4, 4), 2.0, dtype=np.float32))
    ok = {"prompt": "p", "chosen": ASTRONAUT, "rejected": CAMERA}
    write_jsonl(folder, [
        ok,                                                                   # 1 fine
        '{"prompt": "p", "chosen": ',                                         # 2 bad JSON
        {**ok, "rejected": "missing.png"},                                    # 3 missing file
        {**ok, "chosen": "broken.png"},                                       # 4 unreadable image
        {**ok, "face_boxes": [[10, 10, 120, 40]]},                            # 5 box outside the 96 x 72 image
        {**ok, "hand_boxes": {"rejected": [[30, 10, 30, 20]]}},               # 6 x1 <= x0
        {**ok, "mask": "m.png"},                                              # 7 unknown key
        {"chosen": ASTRONAUT, "rejected": CAMERA},                            # 8 missing prompt
        {"prompt": "p", "image": ASTRONAUT},                                  # 9 single-image among pairs
        {**ok, "chosen_quality": "hot.npy"},                                  # 10 map out of [0, 1]
        {**ok, "chosen_source": "painted"},                                   # 11 bad source
        "",                                                                   # blank lines are skipped
        {**ok, "face_boxes": [[1, 2, 3]]},                                    # 13 malformed box
    ])
    with pytest.raises(DatasetError) as e:
        validate_dataset(folder)
    msg = str(e.value)
    expected = {
        2: "not valid JSON", 3: "rejected: file not found 'missing.png'",
        4: "chosen: cannot read 'broken.png' as an image", 5: "face_boxes[0] must lie inside the 96x72 image",
        6: "hand_boxes[rejected][0] must have x0 < x1 and y0 < y1", 7: "unknown key(s) 'mask'; valid keys for pair "
        "records: prompt, chosen, rejected, chosen_source, face_boxes, hand_boxes, chosen_quality, rejected_quality",
        8: "missing prompt", 9: "is a single-image record but", 10: "chosen_quality: 'hot.npy' must hold finite "
        "values in [0, 1], got range [2.0, 2.0]", 11: "chosen_source must be one of generated, real, reconstructed",
        13: "face_boxes[0] must be 4 finite numbers",
    }
    for line, fragment in expected.items():
        assert f"\n  line {line}: {fragment}" in msg, (line, msg)
    assert "  line 1: " not in msg and "  line 12: " not in msg and "got 11 bad line(s)" in msg


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_exception_empty_file(tmp_path, content):
    (tmp_path / "metadata.jsonl").write_text(content)
    with pytest.raises(DatasetError, match="must hold one JSON record per line, got an empty file"):
        validate_dataset(tmp_path)


def test_exception_folder_kind(tmp_path):
    with pytest.raises(DatasetError, match="data must be an existing folder, got .*nowhere"):
        open_pairs(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "img.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"metadata.jsonl .* or Pick-a-Pic style \*.parquet files, got .* "
                                           r"containing img.png, notes.txt"):
        open_pairs(tmp_path)
    with pytest.raises(DatasetError, match="containing img.png"):
        validate_dataset(tmp_path)


def test_shared_box_list_and_single_images(tmp_path):
    folder = tmp_path / "singles"
    folder.mkdir()
    shutil.copy(DATA / ASTRONAUT, folder / ASTRONAUT)
    Image.fromarray(np.full((72, 96), 128, np.uint8)).save(folder / "q.png")
    write_jsonl(folder, [{"prompt": "astronaut", "image": ASTRONAUT, "face_boxes": [FACE_A], "quality": "q.png"}])
    (rec,) = validate_dataset(folder)
    assert not rec.is_pair and rec.source == "real" and rec.boxes["face_boxes"] == ((tuple(FACE_A),),)
    item = open_pairs(folder, flip=False, crop=False)[0]
    assert item["pixels"].shape == (1, 3, 64, 64) and item["quality"].shape == (1, 1, 64, 64)
    assert torch.allclose(item["quality"], torch.full_like(item["quality"], 128 / 255), atol=1e-6)
    pairs = write_jsonl(tmp_path / "shared", [{"prompt": "p", "chosen": ASTRONAUT, "rejected": ASTRONAUT,
                                                "hand_boxes": [[0, 0, 10, 10]]}])
    shutil.copy(DATA / ASTRONAUT, pairs / ASTRONAUT)
    assert validate_dataset(pairs)[0].boxes["hand_boxes"] == (((0.0, 0.0, 10.0, 10.0),),) * 2


def test_quality_map_formats(tmp_path):
    grey16 = io.BytesIO()
    Image.fromarray(np.full((5, 7), 65535, np.uint16)).save(grey16, "PNG")
    assert read_quality_map(grey16.getvalue(), "q16.png").max() == 1.0
    rgb = io.BytesIO()
    Image.new("RGB", (4, 4)).save(rgb, "PNG")
    with pytest.raises(ValueError, match="must be a greyscale PNG .* got mode RGB"):
        read_quality_map(rgb.getvalue(), "q.png")
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="cannot read 'q.npy' as a numeric .npy array"):
        read_quality_map(pickled.getvalue(), "q.npy")
    stacked = io.BytesIO()
    np.save(stacked, np.zeros((1, 3, 5), np.float32))
    assert read_quality_map(stacked.getvalue(), "q.npy").shape == (3, 5)
    with pytest.raises(ValueError, match="must be a .npy or .png quality map, got a .jpg file"):
        read_quality_map(b"", "q.jpg")


# ---- items --------------------------------------------------------------------------------------------


def test_item_layout(pair_folder):
    ds = open_pairs(pair_folder)
    item = ds[(0, 1)]
    assert set(item) == {"key", "prompt", "pixels", "source", "face_boxes", "hand_boxes", "quality", "aug", "decoded"}
    assert item["decoded"] is True
    assert item["prompt"] == "portrait 1" and item["source"] == "generated"
    assert item["pixels"].shape == (2, 3, 64, 64) and item["pixels"].dtype == torch.float32
    assert item["pixels"].min() >= -1 and item["pixels"].max() <= 1 and item["pixels"].std() > 0.1
    assert [b.shape[1] for b in item["face_boxes"]] == [4, 4] and [len(b) for b in item["hand_boxes"]] == [0, 0]
    assert item["quality"].shape == (2, 1, 64, 64)
    assert torch.allclose(item["quality"][0], torch.tensor(0.25)) and torch.all(item["quality"][1] == 1)
    flip, cx, cy = item["aug"]
    assert isinstance(flip, bool) and 0 <= cx <= 85 - 64 and cy == 0  # 96 x 72 -> 85 x 64 after resizing
    grey = ds[(0, 0)]["pixels"][1]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])  # greyscale photo -> RGB


def test_item_deterministic_and_key_is_content(pair_folder):
    a, b = open_pairs(pair_folder), open_pairs(pair_folder)
    for index in [(0, 0), (3, 2)]:
        x, y = a[index], b[index]
        assert x["key"] == y["key"] and x["aug"] == y["aug"] and torch.equal(x["pixels"], y["pixels"])
    assert len({a[(0, i)]["key"] for i in range(5)}) == 5  # prompts differ
    assert len({a[(e, 0)]["aug"] for e in range(8)}) > 1  # new draws per epoch
    key = a[0]["key"]
    img = Image.open(pair_folder / CAMERA)
    img.putpixel((0, 0), 255 - img.getpixel((0, 0)))
    img.save(pair_folder / CAMERA)
    assert open_pairs(pair_folder)[0]["key"] != key  # image bytes are part of the key


def _square_image(size, box, value=255):
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    x0, y0, x1, y1 = box
    arr[y0:y1, x0:x1] = value
    return Image.fromarray(arr)


def test_augmentation_keeps_boxes_and_maps_aligned(tmp_path):
    folder = tmp_path / "aligned"
    folder.mkdir()
    box = [70, 20, 110, 52]  # in the 128 x 80 image
    _square_image((128, 80), box).save(folder / "w.png")
    _square_image((256, 160), [2 * v for v in box], 200).save(folder / "l.png")  # same scene, twice the size
    qmap = np.zeros((40, 64), np.float32)  # half resolution of the chosen image
    qmap[10:26, 35:55] = 1.0
    np.save(folder / "q.npy", qmap)
    write_jsonl(folder, [{"prompt": "p", "chosen": "w.png", "rejected": "l.png", "chosen_quality": "q.npy",
                          "face_boxes": {"chosen": [box], "rejected": [[2 * v for v in box]]}}])
    ds = open_pairs(folder, resolution=48, flip=True, crop=True, seed=3)
    flips = set()
    for epoch in range(12):
        item = ds[(epoch, 0)]
        flips.add(item["aug"][0])
        for i in range(2):
            white = item["pixels"][i].mean(0) > 0.0  # the square is bright, the rest -1
            boxes = item["face_boxes"][i]
            assert boxes.shape == (1, 4)
            x0, y0, x1, y1 = boxes[0].tolist()
            inside = torch.zeros_like(white)
            inside[round(y0):round(y1), round(x0):round(x1)] = True
            iou = (white & inside).sum() / (white | inside).sum()
            assert iou > 0.9, (epoch, i, iou, boxes)
        bright = item["quality"][0, 0] > 0.5
        chosen_white = item["pixels"][0].mean(0) > 0.0
        assert (bright & chosen_white).sum() / (bright | chosen_white).sum() > 0.85, epoch
        assert torch.all(item["quality"][1] == 1)
        assert (item["pixels"][0] - item["pixels"][1]).abs().mean() < 0.1  # the partner got the same geometry
    assert flips == {True, False}


def test_box_transform_values():
    g = geometry_for((200, 100), (200, 100), (True, 10, 0), 50)  # resize 200x100 -> 100x50, crop x 10..60
    out = warp_boxes(((20, 10, 60, 50), (190, 0, 200, 10)), g)
    # scaled (10, 5, 30, 25) -> shifted (0, 5, 20, 25) -> mirrored in 50: (30, 5, 50, 25); the 2nd box is cropped away
    assert torch.allclose(out, torch.tensor([[30.0, 5.0, 50.0, 25.0]]))
    rng = np.random.default_rng(0)
    assert plan_augmentation((200, 100), 50, rng, random_flip=False, random_crop=False) == (False, 25, 0)


# ---- collate and the map-style loader -----------------------------------------------------------------


def test_collate_layout(pair_folder, tmp_path):
    ds = open_pairs(pair_folder)
    batch = collate([ds[0], ds[1], ds[2]])
    assert batch["pixels"].shape == (3, 2, 3, 64, 64) and batch["quality"].shape == (3, 2, 1, 64, 64)
    assert len(batch["key"]) == len(batch["prompt"]) == len(batch["aug"]) == len(batch["source"]) == 3
    assert len(batch["face_boxes"]) == 3 and all(len(b) == 2 for b in batch["face_boxes"])
    without = dict(ds[0], quality=None)
    assert torch.all(collate([without, ds[1]])["quality"][0] == 1)
    assert collate([without])["quality"] is None
    with pytest.raises(ValueError, match="collate: items must be a non-empty list"):
        collate([])
    with pytest.raises(ValueError, match=r"same \(N, 3, R, R\) shape"):
        collate([ds[0], dict(ds[1], pixels=ds[1]["pixels"][:1])])


def _take(loader, n):
    return [next(loader) for _ in range(n)]


def _signature(batch):
    return [(k, a) for k, a in zip(batch["key"], batch["aug"])]


def test_loader_resume_equals_uninterrupted(pair_folder):
    ds = open_pairs(pair_folder)
    full = _take(make_loader(ds, batch_size=2, seed=7), 9)  # 18 samples: 3.6 epochs of 5
    for k in (1, 3, 6):
        resumed = _take(make_loader(ds, batch_size=2, seed=7, start_index=2 * k), 9 - k)
        for a, b in zip(full[k:], resumed):
            assert _signature(a) == _signature(b) and torch.equal(a["pixels"], b["pixels"])
    keys = [key for b in full for key in b["key"]]
    assert sorted(keys[:5]) == sorted(keys[5:10]) and keys[:5] != keys[5:10]  # every epoch once, reshuffled
    other_seed = [key for b in _take(make_loader(ds, batch_size=2, seed=8), 5) for key in b["key"]]
    assert other_seed != keys[:10]


@pytest.mark.parametrize("world_size", [2, 3])
def test_loader_ddp_shards_disjoint(pair_folder, world_size):
    ds = open_pairs(pair_folder)
    per_rank = len(ds) // world_size
    shards = [[k for b in _take(make_loader(ds, batch_size=1, seed=1, rank=r, world_size=world_size), per_rank)
               for k in b["key"]] for r in range(world_size)]
    seen = [k for s in shards for k in s]
    assert len(seen) == len(set(seen)) == per_rank * world_size


def test_loader_workers_match_main_process(pair_folder):
    ds = open_pairs(pair_folder)
    plain = _take(make_loader(ds, batch_size=2, seed=5, start_index=4), 4)
    workers = _take(make_loader(ds, batch_size=2, seed=5, start_index=4, num_workers=2), 4)
    assert [_signature(b) for b in plain] == [_signature(b) for b in workers]


def test_exception_loader_arguments(pair_folder):
    ds = open_pairs(pair_folder)
    with pytest.raises(ValueError, match="make_loader: batch_size must be an integer >= 1, got 0"):
        make_loader(ds, batch_size=0, seed=0)
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size=2\), got 2"):
        make_loader(ds, batch_size=1, seed=0, rank=2, world_size=2)
    with pytest.raises(DatasetError, match=r"at least world_size \(8\) samples, got 5"):
        make_loader(ds, batch_size=1, seed=0, rank=0, world_size=8)


# ---- Pick-a-Pic parquet --------------------------------------------------------------------------------

ROWS, GROUP = 384, 24  # 16 row groups; labels cycle 1, 0, 0.5 so a third are ties and each group keeps 16


def _jpeg(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), (value, value, value)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def pickapic(tmp_path_factory) -> Path:
    """Rows i: caption "row i"; the winner is white and the loser black; noise columns are never read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("pickapic")
    white, black = _jpeg(255), _jpeg(0)
    labels = [(1.0, 0.0, 0.5)[i % 3] for i in range(ROWS)]
    jpg_0 = [black if lab == 0.0 else white for lab in labels]
    jpg_1 = [white if lab == 0.0 else black for lab in labels]
    noise = [np.random.default_rng(i).bytes(2000) for i in range(ROWS)]
    half = ROWS // 2
    for part, rows in enumerate((slice(0, half), slice(half, ROWS))):
        table = pa.table({"caption": [f"row {i}" for i in range(ROWS)][rows], "jpg_0": jpg_0[rows],
                          "jpg_1": jpg_1[rows], "label_0": labels[rows], "best_image_uid": noise[rows]})
        pq.write_table(table, folder / f"train-{part:05d}.parquet", row_group_size=GROUP)
    return folder


def _kept_rows():
    return {f"row {i}" for i in range(ROWS) if i % 3 != 2}


def test_parquet_ties_dropped_winner_first(pickapic):
    ds = open_dataset(pickapic, resolution=16, random_flip=True, random_crop=True, seed=0)
    assert isinstance(ds, PickapicDataset) and validate_dataset(pickapic) == []
    stream = iter(ds)
    epoch = [next(stream) for _ in range(len(_kept_rows()))]
    assert {it["prompt"] for it in epoch} == _kept_rows()  # ties dropped, every other row once
    for it in epoch:
        assert it["pixels"].shape == (2, 3, 16, 16) and it["source"] == "generated" and it["quality"] is None
        assert it["pixels"][0].mean() > 0.9 and it["pixels"][1].mean() < -0.9  # winner first
        assert [len(b) for b in it["face_boxes"]] == [0, 0]
    assert [it["prompt"] for it in epoch[:20]] != [f"row {i}" for i in sorted(_kept_rows(), key=lambda s: int(s[4:]))][:20]


def test_parquet_streams_one_row_group_at_a_time(pickapic):
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(pickapic.glob("*.parquet"))
    meta = [pq.ParquetFile(f).metadata for f in files]
    group_bytes = max(m.row_group(g).total_byte_size for m in meta for g in range(m.num_row_groups))
    total_bytes = sum(m.row_group(g).total_byte_size for m in meta for g in range(m.num_row_groups))
    ds = PickapicDataset(files, resolution=16, random_flip=False, random_crop=False, seed=0, read_rows=8)
    before, peak, reads = pa.total_allocated_bytes(), 0, []
    for n, _ in enumerate(ds, start=1):
        peak = max(peak, pa.total_allocated_bytes() - before)
        reads.append(ds.rows_read)
        if n == 2 * len(_kept_rows()):
            break
    assert reads[0] == 8  # the first item needed one pyarrow batch, not a file
    assert max(np.diff(reads)) <= 8  # rows arrive 8 at a time
    assert reads[-1] == 2 * ROWS  # two epochs read every row exactly twice
    assert peak < 4 * group_bytes < total_bytes / 3, (peak, group_bytes, total_bytes)


def test_parquet_resume_and_shards(pickapic):
    ds = open_dataset(pickapic, resolution=16, random_flip=True, random_crop=True, seed=0)
    full = _take(make_loader(ds, batch_size=8, seed=2), 40)  # 320 samples > 256 per epoch
    for k in (5, 33):
        resumed = _take(make_loader(ds, batch_size=8, seed=2, start_index=8 * k), 40 - k)
        assert [_signature(b) for b in full[k:]] == [_signature(b) for b in resumed]
    per_rank = len(_kept_rows()) // 2  # 16 row groups split 8 / 8, 16 kept rows each
    shards = [{p for b in _take(make_loader(ds, batch_size=8, seed=2, rank=r, world_size=2), per_rank // 8)
               for p in b["prompt"]} for r in (0, 1)]
    assert not shards[0] & shards[1] and shards[0] | shards[1] == _kept_rows()


def test_parquet_workers_resume(pickapic):
    ds = open_dataset(pickapic, resolution=16, random_flip=True, random_crop=False, seed=0)
    full = _take(make_loader(ds, batch_size=4, seed=1, num_workers=2), 12)
    resumed = _take(make_loader(ds, batch_size=4, seed=1, start_index=4 * 5, num_workers=2), 7)
    assert [_signature(b) for b in full[5:]] == [_signature(b) for b in resumed]
    assert len({p for b in full for p in b["prompt"]}) == 48  # no worker repeats another's rows


def test_exception_parquet_schema(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"caption": ["a"], "jpg_0": [b"x"], "label_0": ["1"]}), tmp_path / "a.parquet")
    (tmp_path / "b.parquet").write_bytes(b"garbage")
    with pytest.raises(DatasetError) as e:
        open_dataset(tmp_path, resolution=16, random_flip=False, random_crop=False, seed=0)
    msg = str(e.value)
    assert "a.parquet: columns must be" in msg and "jpg_1 (missing)" in msg and "label_0 (string)" in msg
    assert "b.parquet: cannot read as parquet" in msg
