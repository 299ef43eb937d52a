"""Run by ``accelerate launch`` in test_ddp.py: train from a JSON config, record each rank's item keys.

Usage: ``accelerate launch --multi_gpu --num_processes 2 ddp_driver.py CONFIG.json`` (on a CPU-only
machine the loop then runs DDP over gloo). Writes
``<out>/keys-rank<r>.json``: the item keys that rank trained on per step, and a hash of its LoRA weights.
"""
import hashlib
import json
import sys
from pathlib import Path

from vitruvian.trainers import train
from vitruvian.trainers.config import TrainConfig


def main() -> None:
    config = TrainConfig.from_dict(json.loads(Path(sys.argv[1]).read_text()))
    seen: dict[int, list[str]] = {}
    rank, digest = [0], [""]

    def record(event):
        seen[event.step] = list(event.keys)
        rank[0] = event.rank
        h = hashlib.sha256()
        for _, p in sorted((n, p) for n, p in event.unet.named_parameters() if p.requires_grad):
            h.update(p.detach().cpu().numpy().tobytes())
        digest[0] = h.hexdigest()

    result = train(config, callbacks=[record])
    Path(config.out, f"keys-rank{rank[0]}.json").write_text(json.dumps({"keys": seen, "lora": digest[0]}))
    print(f"rank {rank[0]}: steps={result.steps} loss={result.final_loss}", flush=True)


if __name__ == "__main__":
    main()
