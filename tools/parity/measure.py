"""Measure the seed objectives against their official code (docs/methods.md, "Parity with the official code").

Not a test and not imported by the tests. Nothing official lives in this repository: the script reads the
few functions and loss statements it needs from local checkouts *at run time*, writes them to a scratch
folder (default ``/tmp/vitruvian-parity``, outside the repository), imports them from there and runs them
and Vitruvian's code on the same seeded random tensors, in float64 and float32. It prints one table per
seed (max abs / relative differences).

Usage (each DIR is a checkout or a bare git dir, whose HEAD is read; any subset may be given)::

    .venv/bin/python tools/parity/measure.py \\
        --diffusion-dpo DIR   # SalesforceAIResearch/DiffusionDPO  (train.py)
        --diffusers DIR       # huggingface/diffusers  (examples/research_projects/diffusion_dpo/train_diffusion_dpo.py)
        --patchdpo DIR        # hqhQAQ/PatchDPO  (train_patchdpo.py)
        --fairhuman DIR       # PRIS-CV/FairHuman  (LoRA script + weighting_strategy/weight_methods.py; needs scipy)
        --grpose DIR          # XiangchenYin/GRPose  (gcn_lib/)

FairHuman's solver needs scipy, which Vitruvian does not depend on: install it outside the venv, e.g.
``pip install --target /tmp/parity_deps scipy`` and run with ``PYTHONPATH=/tmp/parity_deps``.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import torch

DTYPES = (torch.float64, torch.float32)


# -- reading the official code --------------------------------------------------------------------------------------
@dataclass
class Checkout:
    """A local official repository: a work tree or a bare git dir (HEAD)."""

    path: Path

    def read(self, rel: str) -> str:
        f = self.path / rel
        if f.is_file():
            return f.read_text(encoding="utf-8")
        return subprocess.run(["git", "--git-dir", str(self.path), "show", f"HEAD:{rel}"], check=True,
                              capture_output=True, text=True).stdout

    @property
    def commit(self) -> str:
        for cmd in (["git", "--git-dir", str(self.path), "rev-parse", "HEAD"],
                    ["git", "-C", str(self.path), "rev-parse", "HEAD"]):
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode == 0:
                return out.stdout.strip()
        return "unknown"


def top_level_defs(source: str, names: list[str]) -> tuple[str, list[str]]:
    """The source text of the named top-level functions/classes, and their line ranges."""
    tree = ast.parse(source)
    lines = source.splitlines()
    parts, where = [], []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            parts.append("\n".join(lines[start - 1:node.end_lineno]))
            where.append(f"{node.name} L{start}-{node.end_lineno}")
    missing = set(names) - {w.split()[0] for w in where}
    if missing:
        raise SystemExit(f"not found in the official source: {sorted(missing)}")
    return "\n\n\n".join(parts), where


def statements(source: str, start: str, end: str, *, skip_calls: tuple[str, ...] = ()) -> tuple[str, str]:
    """The assignments between the first line containing ``start`` and the next containing ``end``.

    ``with`` bodies and an ``if``'s first branch are flattened; assignments that call a name in ``skip_calls``
    (a network forward) are left out, the caller provides their result. Returns (code, "La-b").
    """
    lines = source.splitlines()
    a = next(i for i, line in enumerate(lines) if start in line)
    b = next(i for i in range(a, len(lines)) if end in lines[i])
    while True:  # extend to the end of a statement spanning several lines
        chunk = [ln for ln in lines[a:b + 1] if not ln.strip().startswith("#")]
        block = textwrap.dedent("\n".join(chunk))
        try:
            tree = ast.parse(block)
            break
        except SyntaxError:
            b += 1

    def calls(node) -> set[str]:
        out = set()
        for n in ast.walk(node):
            if isinstance(n, ast.Call):
                f = n.func
                while isinstance(f, ast.Attribute):
                    f = f.value
                if isinstance(f, ast.Call):
                    f = f.func
                if isinstance(f, ast.Name):
                    out.add(f.id)
        return out

    kept: list[str] = []

    def visit(body):
        for node in body:
            if isinstance(node, ast.With):
                visit(node.body)
            elif isinstance(node, ast.If):
                visit(node.body)
            elif isinstance(node, (ast.Assign, ast.AugAssign)) and not (calls(node) & set(skip_calls)):
                kept.append(ast.get_source_segment(block, node))

    visit(tree.body)
    return "\n".join(kept), f"L{a + 1}-{b + 1}"


def write_module(scratch: Path, name: str, header: str, body: str):
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / f"{name}.py"
    path.write_text(header + "\n" + body + "\n", encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"_parity_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def as_function(name: str, params: str, code: str, returns: str) -> str:
    return f"def {name}({params}):\n" + textwrap.indent(code, "    ") + f"\n    return {returns}\n"


def diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(max |a − b|, max |a − b| / max |a|)."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    d = float((a - b).abs().max())
    return d, d / max(float(a.abs().max()), 1e-300)


def row(*cells) -> None:
    print("| " + " | ".join(c if isinstance(c, str) else f"{c:.2e}" for c in cells) + " |")


class Args:
    def __init__(self, **kw):
        self.__dict__.update(kw)


# -- 1. Diffusion-DPO -------------------------------------------------------------------------------------------------
def dpo(official: Checkout | None, diffusers: Checkout | None, scratch: Path) -> None:
    from vitruvian.core.objectives.losses import denoise_error, dpo_loss

    def ours(model_pred, ref_pred, target, beta, convention):
        # the lines of trainers/objectives/dpo.py DPO.__call__ after the two forwards
        with torch.no_grad():
            ref_err = denoise_error(ref_pred, target)
        err = denoise_error(model_pred, target)
        err_w, err_l = err.chunk(2)
        ref_w, ref_l = ref_err.chunk(2)
        per_pair, _ = dpo_loss(err_w, err_l, ref_w, ref_l, beta=beta, convention=convention)
        return per_pair.mean()

    runs = []
    header = "import torch\nimport torch.nn.functional as F\n"
    if official is not None:
        code, where = statements(official.read("train.py"), "model_losses = (model_pred - target)",
                                 "loss = -1 * F.logsigmoid(inside_term)", skip_calls=("ref_unet", "unet"))
        mod = write_module(scratch, "official_diffusion_dpo", f"# from DiffusionDPO@{official.commit} train.py {where}\n"
                           + header, as_function("loss_fn", "model_pred, ref_pred, target, args", code, "loss"))
        print(f"\nDiffusion-DPO official: SalesforceAIResearch/DiffusionDPO@{official.commit} train.py {where}")
        runs.append(("DiffusionDPO train.py, beta_dpo 5000", mod.loss_fn, 5000.0, "official"))
    if diffusers is not None:
        rel = "examples/research_projects/diffusion_dpo/train_diffusion_dpo.py"
        code, where = statements(diffusers.read(rel), "model_losses = F.mse_loss(model_pred.float()",
                                 "loss = -1 * F.logsigmoid(args.beta_dpo * logits)", skip_calls=("ref_unet", "unet"))
        mod = write_module(scratch, "official_diffusers_dpo", f"# from diffusers@{diffusers.commit} {rel} {where}\n"
                           + header, as_function("loss_fn", "model_pred, ref_preds, target, args", code, "loss"))
        print(f"diffusers: huggingface/diffusers@{diffusers.commit} {rel} {where}")
        runs.append(("diffusers script, beta_dpo 2500", mod.loss_fn, 2500.0, "diffusers"))
        runs.append(("diffusers 2500 vs ours official 5000", mod.loss_fn, 2500.0, ("official", 5000.0)))
    if not runs:
        return
    print("\n| comparison | dtype | loss (official) | abs Δ loss | rel Δ loss | max abs Δ ∂/∂pred | rel Δ ∂/∂pred |")
    print("|---|---|---|---|---|---|---|")
    for label, fn, beta, conv in runs:
        for dtype in DTYPES:
            g = torch.Generator().manual_seed(0)
            B, shape = 4, (4, 64, 64)
            target = torch.randn(2 * B, *shape, generator=g, dtype=torch.float64)
            ref = target + 0.4 * torch.randn(2 * B, *shape, generator=g, dtype=torch.float64)
            pred0 = ref + 0.02 * torch.randn(2 * B, *shape, generator=g, dtype=torch.float64)
            target, ref, pred0 = target.to(dtype), ref.to(dtype), pred0.to(dtype)
            p1 = pred0.clone().requires_grad_(True)
            l1 = fn(p1, ref, target, Args(beta_dpo=beta))
            l1.backward()
            our_conv, our_beta = conv if isinstance(conv, tuple) else (conv, beta)
            p2 = pred0.clone().requires_grad_(True)
            l2 = ours(p2, ref, target, our_beta, our_conv)
            l2.backward()
            row(label, str(dtype).removeprefix("torch."), f"{float(l1.detach()):.6f}", *diff(l1.detach(), l2.detach()),
                *diff(p1.grad, p2.grad))


# -- 2. PatchDPO ------------------------------------------------------------------------------------------------------
def patchdpo(official: Checkout, scratch: Path) -> None:
    from vitruvian.core.objectives.losses import denoise_error
    from vitruvian.trainers.objectives.patch_dpo import pair_quality_weights

    src = official.read("train_patchdpo.py")
    defs, where_defs = top_level_defs(src, ["weighted_mse_loss"])
    code, where = statements(src, 'target_rmap = batch["target_rmap"]', "loss = weighted_mse_loss(")
    mod = write_module(scratch, "official_patchdpo",
                       f"# from PatchDPO@{official.commit} train_patchdpo.py {where_defs} {where}\nimport torch\n\n" + defs,
                       as_function("loss_fn", "noise_pred, noise, batch", code, "loss"))
    print(f"\nPatchDPO official: hqhQAQ/PatchDPO@{official.commit} train_patchdpo.py {', '.join(where_defs)}, {where}")

    def ours(pred, target, quality, B, h, w):
        # the lines of trainers/objectives/patch_dpo.py PatchDPO.__call__ for form="weighted", norm="all"
        batch = {"latents": torch.zeros(B, 2, 4, h, w, dtype=pred.dtype)}
        w_w, w_l = pair_quality_weights(batch, (h, w), "weighted", quality)
        weights = torch.cat([w_w, w_l])
        return denoise_error(pred, target, weights, "all").mean()

    print("\n| maps | dtype | loss (official) | abs Δ loss | rel Δ loss | max abs Δ ∂/∂pred | rel Δ ∂/∂pred |")
    print("|---|---|---|---|---|---|---|")
    for case in ("target_map = gene_map = q_l, q_w = 1", "target_map ≥ gene_map, q_w = (1−target)/(1−gene)"):
        for dtype in DTYPES:
            g = torch.Generator().manual_seed(1)
            B, h, w = 4, 64, 64
            noise = torch.randn(B, 4, h, w, generator=g, dtype=torch.float64).repeat(2, 1, 1, 1)  # shared ε
            pred0 = noise + 0.3 * torch.randn(2 * B, 4, h, w, generator=g, dtype=torch.float64)
            gene = torch.rand(B, h, w, generator=g, dtype=torch.float64)
            if case.startswith("target_map ="):
                target_map, q_w = gene, torch.ones_like(gene)
            else:
                target_map = gene + (1 - gene) * torch.rand(B, h, w, generator=g, dtype=torch.float64)
                q_w = (1 - target_map) / (1 - gene)
            noise, pred0, gene, target_map, q_w = (t.to(dtype) for t in (noise, pred0, gene, target_map, q_w))
            p1 = pred0.clone().requires_grad_(True)
            l1 = mod.loss_fn(p1, noise, {"target_rmap": target_map, "contra_rmap": gene})
            l1.backward()
            quality = torch.stack([q_w, gene], dim=1)[:, :, None]  # (B, 2, 1, h, w): [chosen, rejected]
            p2 = pred0.clone().requires_grad_(True)
            l2 = ours(p2, noise, quality, B, h, w)
            l2.backward()
            row(case, str(dtype).removeprefix("torch."), f"{float(l1.detach()):.6f}", *diff(l1.detach(), l2.detach()),
                *diff(p1.grad, p2.grad))


# -- 3. FairHuman -----------------------------------------------------------------------------------------------------
def fairhuman(official: Checkout, scratch: Path) -> None:
    from accelerate import Accelerator

    from vitruvian.core.objectives.losses import denoise_error
    from vitruvian.core.objectives.mpd import fair_weights, fixed_point_residual
    from vitruvian.trainers.objectives.mpd import MPD, MultiTaskOutput, region_masks

    script = "examples/text_to_image/train_text_to_image_lora_sdxl_mpd_fair.py"
    src = official.read(script)
    global_code, w1 = statements(src, 'loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")',
                                 'loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")')
    mask_code, w2 = statements(src, 'mask_hand = batch["mask_hand_values"]', "mask_hand_latents = torch.cat(")
    loss_code, w3 = statements(src, "global_loss = loss", "losses = torch.stack(")
    solve_code, w4 = statements(src, "alpha=2.0", "g, GTG, w_cpu=fg.get_weighted_loss(")
    wm = official.read("weighting_strategy/weight_methods.py")
    defs, where_defs = top_level_defs(wm, ["WeightMethod", "FairGrad"])
    header = (f"# from FairHuman@{official.commit} {script} {w1} {w2} {w3} {w4}; weight_methods.py {where_defs}\n"
              "from abc import abstractmethod\nfrom typing import List, Tuple, Union\nimport numpy as np\nimport torch\n"
              "import torch.nn.functional as F\nfrom scipy.optimize import least_squares\n\n" + defs + "\n\n")
    body = as_function("losses_fn", "model_pred, target, batch, model_input, weight_dtype",
                       "\n".join([global_code, mask_code, loss_code]), "losses")
    body += "\n\n" + as_function("solve_fn", "losses, params_to_optimize, accelerator", solve_code, "(g, GTG, w_cpu)")
    mod = write_module(scratch, "official_fairhuman", header, body)
    print(f"\nFairHuman official: PRIS-CV/FairHuman@{official.commit} {script} {w1} (global), {w2} (masks), "
          f"{w3} (masked losses), {w4} (FairGrad call); weighting_strategy/weight_methods.py {', '.join(where_defs)}")

    accelerator = Accelerator(cpu=True)
    R, h = 256, 32

    def setup(dtype, with_hands: bool):
        g = torch.Generator().manual_seed(2)
        torch.manual_seed(2)
        net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.SiLU(),
                                  torch.nn.Conv2d(8, 4, 3, padding=1)).to(dtype)
        x = torch.randn(2, 4, h, h, generator=g, dtype=torch.float64).to(dtype)
        target = torch.randn(2, 4, h, h, generator=g, dtype=torch.float64).to(dtype)
        faces = [torch.tensor([[40.0, 32.0, 104.0, 112.0]]), torch.tensor([[150.0, 20.0, 200.0, 90.0]])]
        hands = [torch.tensor([[10.0, 180.0, 60.0, 240.0], [190.0, 150.0, 250.0, 200.0]]), torch.tensor([[64.0, 128.0, 120.0, 176.0]])]
        if not with_hands:
            hands = [torch.zeros(0, 4), torch.zeros(0, 4)]

        def raster(boxes):  # the released masks: RGB rectangles, after ToTensor + Normalize(0.5): 1 inside, -1 outside
            m = -torch.ones(len(boxes), 3, R, R, dtype=dtype)
            for i, bs in enumerate(boxes):
                for x0, y0, x1, y1 in bs.int().tolist():
                    m[i, :, y0:y1, x0:x1] = 1.0
            return m

        batch_official = {"mask_face_values": raster(faces), "mask_hand_values": raster(hands)}
        batch_ours = {"face_boxes": faces, "hand_boxes": hands}
        return net, x, target, batch_official, batch_ours

    def official_run(dtype, with_hands):
        net, x, target, batch, _ = setup(dtype, with_hands)
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # the released FairGrad allocates G with torch.Tensor (the default dtype)
        try:
            pred = net(x)
            losses = mod.losses_fn(pred, target, batch, x, dtype)
            _, GTG, w = mod.solve_fn(losses, list(net.parameters()), accelerator)
        finally:
            torch.set_default_dtype(default)
        return losses.detach(), torch.as_tensor(w), [p.grad.clone() for p in net.parameters()], GTG

    def ours_run(dtype, with_hands, empty_task):
        net, x, target, _, batch = setup(dtype, with_hands)
        pred = net(x)
        # the lines of trainers/objectives/mpd.py MPD.__call__ after the forward (dilate 0: the boxes are final)
        per = {"global": denoise_error(pred, target)}
        for kind in ("face", "hand"):
            m = region_masks(batch, kind, R, (h, h), dilate=0.0, device=x.device)
            if m is not None:
                per[kind] = denoise_error(pred, target, m * 5.0**2, norm="all")
        tasks = {k: v.mean() for k, v in per.items()}
        combiner = MPD(empty_task=empty_task)
        out = MultiTaskOutput(loss=sum(tasks.values()), per_sample=sum(per.values()).detach(), metrics={}, tasks=tasks)
        combiner.backward(out, list(net.parameters()), accelerator, step=0)
        w = torch.tensor([combiner.weights.get(n, 0.0) for n in ("global", "face", "hand")], dtype=torch.float64)
        losses = torch.stack([tasks.get(n, torch.zeros(())).detach().double() for n in ("global", "face", "hand")])
        return losses, w, [p.grad.clone() for p in net.parameters()]

    flat = lambda grads: torch.cat([t.reshape(-1).double() for t in grads])  # noqa: E731
    print("\n| case | dtype | Δ losses (abs) | w official | Δ w (rel) | solver alone: Δ w (rel) | "
          "fixed-point residual on the official A: official / ours | combined grad: max abs Δ | rel Δ |")
    print("|---|---|---|---|---|---|---|---|---|")
    for dtype in DTYPES:
        dt = str(dtype).removeprefix("torch.")
        lo, wo, go, GTG = official_run(dtype, True)
        lu, wu, gu = ours_run(dtype, True, "official")
        A = torch.as_tensor(GTG, dtype=torch.float64)
        res = f"{float(fixed_point_residual(A, torch.as_tensor(wo))):.1e} / {float(fixed_point_residual(A, wu)):.1e}"
        alone = diff(wo, fair_weights(A))[1]  # our solver on the official Gram matrix
        row("3 tasks", dt, diff(lo, lu)[0], "[" + ", ".join(f"{v:.4g}" for v in wo.tolist()) + "]",
            diff(wo, wu)[1], alone, res, *diff(flat(go), flat(gu)))
        lo, wo, go, GTG = official_run(dtype, False)
        alone = diff(wo[:2], fair_weights(torch.as_tensor(GTG, dtype=torch.float64)[:2, :2]))[1]
        for mode in ("official", "drop"):
            lu, wu, gu = ours_run(dtype, False, mode)
            ratio = flat(go).norm() / flat(gu).norm()
            d = diff(wo[:2], wu[:2])[1]
            row(f"hand mask empty, ours mpd_empty_task={mode} (‖g_off‖/‖g_ours‖ = {float(ratio):.6f})", dt,
                diff(lo, lu)[0], "[" + ", ".join(f"{v:.4g}" for v in wo.tolist()) + "]", d, alone, "(w_hand → ∞ officially)",
                *diff(flat(go), flat(gu)))


# -- 4. GRPose ----------------------------------------------------------------------------------------------------------
def grpose(official: Checkout, scratch: Path) -> None:
    from vitruvian.core.pose_adapter.graph_conv import EdgeConv, knn_indices

    parts, wheres = [], []
    for rel, names in (("gcn_lib/torch_nn.py", ["act_layer", "norm_layer", "BasicConv", "batched_index_select"]),
                       ("gcn_lib/torch_edge.py", ["pairwise_distance", "part_pairwise_distance", "xy_pairwise_distance",
                                                  "dense_knn_matrix", "xy_dense_knn_matrix", "DenseDilated",
                                                  "DenseDilatedKnnGraph"]),
                       ("gcn_lib/torch_vertex.py", ["EdgeConv2d", "GraphConv2d", "DyGraphConv2d"])):
        text, where = top_level_defs(official.read(rel), names)
        parts.append(text)
        wheres.append(f"{rel}: {', '.join(where)}")
    header = (f"# from GRPose@{official.commit}: {'; '.join(wheres)}\nimport math\nimport torch\nfrom torch import nn\n"
              "import torch.nn.functional as F\nfrom torch.nn import Sequential as Seq, Linear as Lin, Conv2d\n\n")
    mod = write_module(scratch, "official_grpose", header, "\n\n\n".join(parts))
    print(f"\nGRPose official: XiangchenYin/GRPose@{official.commit}: " + "; ".join(wheres))

    print("\n| B, C, h×w, k | dtype | rows with another kNN set | max abs Δ out | rel Δ out | max abs Δ ∂/∂x | rel Δ ∂/∂x "
          "| max abs Δ ∂/∂W (in-group) | rel |")
    print("|---|---|---|---|---|---|---|---|---|")
    for B, C, side in ((2, 64, 32), (2, 32, 64)):
        for dtype in DTYPES:
            torch.manual_seed(3)
            theirs = mod.DyGraphConv2d(C, C, kernel_size=9, dilation=1, conv="edge", act="relu", norm=None,
                                       bias=True).to(dtype)
            conv = theirs.gconv.nn[0]  # Conv2d(2C, C, 1, groups=4)
            groups, (o, i_per) = conv.groups, conv.weight.shape[:2]
            ours = EdgeConv(C, C, k=9).to(dtype)
            dense = torch.zeros(o, 2 * C, dtype=dtype)
            for gidx in range(groups):  # the grouped weight as a block-diagonal dense one
                rows = slice(gidx * o // groups, (gidx + 1) * o // groups)
                dense[rows, gidx * i_per:(gidx + 1) * i_per] = conv.weight.detach()[rows, :, 0, 0]
            with torch.no_grad():
                ours.linear.weight.copy_(dense[..., None])
                ours.linear.bias.copy_(conv.bias)
            x0 = torch.randn(B, C, side, side, generator=torch.Generator().manual_seed(4), dtype=torch.float64).to(dtype)
            x1, x2 = x0.clone().requires_grad_(True), x0.clone().requires_grad_(True)
            y1 = theirs(x1)
            y2 = ours(x2.reshape(B, C, side * side)).reshape(B, C, side, side)
            up = torch.randn(y1.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(dtype)
            (y1 * up).sum().backward()
            (y2 * up).sum().backward()
            with torch.no_grad():
                edge = theirs.dilated_knn_graph(x0.reshape(B, C, -1, 1))[0]  # (B, N, k)
                mine = knn_indices(x0.reshape(B, C, -1), 9)
                other = int((edge.sort(-1).values != mine.sort(-1).values).any(-1).sum())
            gw = ours.linear.weight.grad[..., 0]
            gw_in = torch.stack([gw[gidx * o // groups:(gidx + 1) * o // groups, gidx * i_per:(gidx + 1) * i_per]
                                 for gidx in range(groups)]).reshape(o, i_per)
            row(f"{B}, {C}, {side}×{side}, 9", str(dtype).removeprefix("torch."), f"{other} / {B * side * side}",
                *diff(y1.detach(), y2.detach()), *diff(x1.grad, x2.grad), *diff(conv.weight.grad[:, :, 0, 0], gw_in))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("diffusion-dpo", "diffusers", "patchdpo", "fairhuman", "grpose"):
        p.add_argument(f"--{name}", type=Path, help="checkout or bare git dir")
    p.add_argument("--scratch", type=Path, default=Path("/tmp/vitruvian-parity"),
                   help="where the extracted official code is written (outside the repository)")
    args = p.parse_args(argv)
    repo = Path(__file__).resolve().parents[2]
    if args.scratch.resolve().is_relative_to(repo):
        raise SystemExit("--scratch must lie outside the repository (the official code is not committed)")
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}")
    checkout = {k: Checkout(v) if v else None for k, v in vars(args).items()}
    if checkout["diffusion_dpo"] or checkout["diffusers"]:
        dpo(checkout["diffusion_dpo"], checkout["diffusers"], args.scratch)
    if checkout["patchdpo"]:
        patchdpo(checkout["patchdpo"], args.scratch)
    if checkout["fairhuman"]:
        fairhuman(checkout["fairhuman"], args.scratch)
    if checkout["grpose"]:
        grpose(checkout["grpose"], args.scratch)


if __name__ == "__main__":
    main()
