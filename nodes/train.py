"""Training from the graph: a background trainer job per Train node, and its LoRA hot-loaded into MODEL/CLIP.

generate → score → Collect Pairs (``nodes.pairs``) → **Train** (a job: its own Python process) →
**Load Job LoRA** (in memory, re-read when a newer checkpoint appears) → sample again → Compare.

Choices, written once here:

- A job outlives the prompt that started it and a restart of ComfyUI; its state is on disk under
  ``output/vitruvian/jobs``, listed by the web panel and ``GET /vitruvian/jobs``.
- With ``wait`` on, Train shows a progress bar and cancelling the prompt cancels the job (SIGTERM: the
  trainer finishes its step and keeps a checkpoint; ``resume`` = the job id continues it). A job that
  fails, or ends without training what was asked, is a node error with the reason and the log tail.
- Jobs of one ComfyUI train one at a time (a second waits for the first); ComfyUI's models are unloaded
  before a job starts so the two do not fight for memory.
- Final LoRAs are copied to ``models/loras/vitruvian/<name>-<job id>.safetensors``: the stock
  LoraLoader lists them without a restart. Objectives that train something else publish where its node
  looks: ``train-scorer`` to ``models/vitruvian/scorers/vitruvian/`` (Score Regions lists
  ``facescore:vitruvian/…``), ``pose-adapter`` to ``models/vitruvian/pose_adapters/vitruvian/``.
- Train is cached like any node: the same inputs on an unchanged dataset (its metadata.jsonl's size and
  mtime are part of the fingerprint) give the same job back instead of training again; new pairs, or
  another seed, start a new job.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading

from ..core.errors import NodeInputError, VitruvianError
from ..trainers.jobs import JobNotFoundError, JobStateError, JobStatus, check_job_id
from ..trainers.jobs.store import format_setting
from ..trainers.config_values import MAX_NAME_BYTES
from . import _train_host as host
from ._comfy import VitruvianNode, category, io, ui
from .pairs import DEFAULT_DATASET

__all__ = ["NODES", "JobFailedError"]

log = logging.getLogger("vitruvian")


class JobFailedError(VitruvianError, RuntimeError):
    """A training job failed, was cancelled, or ended without training what was asked."""


def _objectives() -> list[str]:
    try:
        from ..trainers.registry import names as objective_names

        return list(objective_names())
    except Exception:  # a broken trainer install must not hide the pack's other nodes; the job will say why
        log.exception("Vitruvian: the trainer's objectives did not import; offering only 'dpo'")
        return ["dpo"]


def _checkpoints() -> list[str]:
    import folder_paths

    return folder_paths.get_filename_list("checkpoints")


def _files(folder: str) -> list[str]:
    """"none" and the files ComfyUI lists in ``folder`` (diffusion_models, vae)."""
    import folder_paths

    return ["none", *folder_paths.get_filename_list(folder)]


def _component_paths(where: str, diffusion_model: str, text_encoders: str, vae_name: str) -> dict:
    """The trainer's base / text_encoders / vae for a diffusion-model base (Flux.1, Chroma, SD3.5), each resolved
    inside ComfyUI's own model folders; {} when ``diffusion_model`` is "none" (the checkpoint is the base)."""
    import folder_paths

    for input_name, value in (("diffusion_model", diffusion_model), ("text_encoders", text_encoders),
                              ("vae_name", vae_name)):
        if not isinstance(value, str):
            raise NodeInputError(where, input_name, f"a file name (or 'none') is expected, got {type(value).__name__} "
                                 f"{value!r}; pick a file from the list or leave the default")
    if diffusion_model in ("none", ""):
        if text_encoders.strip() or vae_name not in ("none", ""):
            raise NodeInputError(where, "diffusion_model", "a diffusion model is expected when text_encoders or "
                                 f"vae_name are set (they complete it), got 'none' with text_encoders="
                                 f"{text_encoders!r} and vae_name={vae_name!r}; pick the diffusion model or clear them")
        return {}
    base = folder_paths.get_full_path("diffusion_models", diffusion_model)
    if base is None:
        raise NodeInputError(where, "diffusion_model", f"a file listed in models/diffusion_models is expected, got "
                             f"{diffusion_model!r}; refresh the node or put the file there")
    names = [n.strip() for n in text_encoders.split(",") if n.strip()]
    encoders = []
    for name in names:
        path = folder_paths.get_full_path("text_encoders", name)
        if path is None:
            raise NodeInputError(where, "text_encoders", f"comma-separated file names listed in models/text_encoders "
                                 f"are expected (e.g. clip_l.safetensors,t5xxl_fp16.safetensors), got {name!r}, "
                                 "which is not there")
        encoders.append(path)
    if not encoders:
        raise NodeInputError(where, "text_encoders", "the diffusion model's text-encoder files are expected (Flux.1: "
                             "clip_l.safetensors,t5xxl_fp16.safetensors; Chroma: t5xxl_fp16.safetensors), got none")
    vae = folder_paths.get_full_path("vae", vae_name) if vae_name not in ("none", "") else None
    if vae is None:
        raise NodeInputError(where, "vae_name", f"the diffusion model's VAE, a file listed in models/vae, is expected "
                             f"(Flux.1, Chroma: ae.safetensors), got {vae_name!r}")
    return {"base": base, "text_encoders": encoders, "vae": vae}


def _parse_extra(extra: str, where: str) -> dict:
    if not isinstance(extra, str):
        raise ValueError(f"{where}: extra must be text with one key=value per line, got {type(extra).__name__}")
    settings = {}
    for n, line in enumerate(extra.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{where}: extra line {n} must be key=value (a trainer setting), got {line!r}")
        settings[key.strip()] = value.strip()
    return settings


def _wait(job_id: str, steps: int) -> JobStatus:
    """Wait with a progress bar; a cancelled prompt cancels the job (and waits for its checkpoint)."""
    import comfy.model_management as mm
    import comfy.utils

    store = host.store()
    bar = comfy.utils.ProgressBar(max(1, steps))
    shown = [None]

    def update(status: JobStatus) -> None:
        mm.throw_exception_if_processing_interrupted()
        value = (min(status.step, max(1, status.steps)), max(1, status.steps))
        if value != shown[0]:  # a progress message per new step, not per poll
            shown[0] = value
            bar.update_absolute(*value)

    try:
        return store.wait(job_id, poll=0.5, on_update=update)
    except mm.InterruptProcessingException:
        store.cancel(job_id)
        try:
            host.send_status(store.wait(job_id, poll=0.25, timeout=120))
        except TimeoutError:
            pass
        raise


class VitruvianTrain(VitruvianNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VitruvianTrain",
            display_name="Train LoRA as a Job (Vitruvian)",
            category=category("train"),
            description="Start the headless trainer (any objective) on a dataset as a background job and return "
            "its id at once, or wait for it with a progress bar. Cancel from the Vitruvian jobs panel (or cancel "
            "the prompt while waiting); resume with the job id. The final LoRA appears in the LoRA list as "
            "vitruvian/<name>-<job id>.",
            inputs=[
                io.String.Input("data", default=DEFAULT_DATASET, tooltip="Dataset folder (link Collect Pairs' data), "
                                "relative to the output folder or inside output/input/temp."),
                io.Combo.Input("ckpt_name", options=_checkpoints(), tooltip="The base model to train on (a checkpoint file)."),
                io.Combo.Input("objective", options=_objectives(), default="dpo"),
                io.Int.Input("steps", default=200, min=1, max=1_000_000),
                io.Int.Input("resolution", default=512, min=64, max=4096, step=8),
                io.Int.Input("batch_size", default=1, min=1, max=1024),
                io.Float.Input("learning_rate", default=1e-5, min=1e-7, max=1.0, step=1e-6),
                io.Int.Input("rank", default=8, min=1, max=1024),
                io.Float.Input("alpha", default=8.0, min=0.01, max=4096.0, step=0.5),
                io.Float.Input("beta", default=5000.0, min=0.0, max=1e7, step=100.0, tooltip="DPO beta (official convention)."),
                io.Int.Input("checkpoint_every", default=50, min=1, max=1_000_000,
                             tooltip="A checkpoint (and a LoRA the hot-loader can show) every N steps."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1),
                io.String.Input("name", default="vitruvian", tooltip=f"LoRA file name stem (letters, digits, '.', "
                                f"'_', '-'; at most {MAX_NAME_BYTES} bytes)."),
                io.Boolean.Input("wait", default=False, tooltip="Wait for the job (progress bar; cancelling the prompt "
                                 "cancels the job). Off: return the job id at once."),
                io.String.Input("extra", multiline=True, default="",
                                tooltip="More trainer settings, one key=value per line (see vitruvian-train --help)."),
                io.String.Input("resume", default="", tooltip="A job id to continue from its last checkpoint "
                                "(steps may be raised); the other inputs are then ignored."),
                io.Combo.Input("diffusion_model", options=_files("diffusion_models"), default="none", optional=True,
                               tooltip="Train a Flux.1 / Chroma / SD3.5 diffusion model from models/diffusion_models "
                               "instead of ckpt_name (then set text_encoders and vae_name)."),
                io.String.Input("text_encoders", default="", optional=True,
                                tooltip="For a diffusion model: its text-encoder files in models/text_encoders, comma-"
                                "separated (Flux.1: clip_l.safetensors,t5xxl_fp16.safetensors)."),
                io.Combo.Input("vae_name", options=_files("vae"), default="none", optional=True,
                               tooltip="For a diffusion model: its VAE in models/vae (Flux.1, Chroma: ae.safetensors)."),
            ],
            outputs=[io.String.Output(display_name="job_id"), io.String.Output(display_name="lora_name"),
                     io.String.Output(display_name="status")],
            is_output_node=True,
        )

    @classmethod
    def fingerprint_inputs(cls, data="", **kwargs):
        # New pairs in the dataset (same folder name) must start a new job.
        try:
            st = os.stat(os.path.join(str(host.resolve_folder(data, "VitruvianTrain", "data")), "metadata.jsonl"))
            return (st.st_mtime_ns, st.st_size)
        except (OSError, ValueError):
            return ""

    @classmethod
    def execute(cls, data, ckpt_name, objective, steps, resolution, batch_size, learning_rate, rank, alpha, beta,
                checkpoint_every, seed, name, wait, extra, resume, diffusion_model="none", text_encoders="",
                vae_name="none") -> io.NodeOutput:
        where = "VitruvianTrain"
        store = host.store()
        if not isinstance(resume, str):
            raise ValueError(f"{where}: resume must be a job id or empty, got {type(resume).__name__}")
        if resume.strip():
            job_id = check_job_id(resume.strip(), where)
            try:
                store.job_dir(job_id)
                if not store.status(job_id, log_lines=0).ended:
                    raise JobStateError(f"it is {store.status(job_id, log_lines=0).state}; cancel it first")
            except (JobNotFoundError, JobStateError) as e:
                raise ValueError(f"{where}: resume must name an ended job of this ComfyUI, got {job_id}: {e}") from None
            host.free_models()
            store.resume(job_id, steps=steps, env=host.job_env())
        else:
            components = _component_paths(where, diffusion_model, text_encoders, vae_name)
            job_id = cls._start(where, data, ckpt_name, objective, dict(
                steps=steps, resolution=resolution, batch_size=batch_size, learning_rate=learning_rate, rank=rank,
                alpha=alpha, beta=beta, checkpoint_every=checkpoint_every, seed=seed, name=name), extra, components)
        host.watch(job_id)
        status = store.status(job_id)
        if wait:
            status = _wait(job_id, status.steps)
            if status.state != "finished":
                reason = status.error or f"it was {status.state} at step {status.step}/{status.steps}"
                hint = (f"its last checkpoint is kept; continue it with resume={job_id}" if status.state == "cancelled"
                        else "fix the cause above and queue again")
                raise JobFailedError(
                    f"{where}: job {job_id} did not finish: {reason}\n{hint}; job folder {store.job_dir(job_id)}"
                    f"\n--- log tail ---\n{status.log}")
        published = status.published or host.publish_path(status.name, status.output_kind).replace("{id}", job_id)
        lora_name = host.lora_list_name(published) if status.output_kind == "LoRA" else ""
        report = status.summary()
        if status.output_kind != "LoRA":
            report += f"; trains a {status.output_kind}, published as {published}"
        return io.NodeOutput(job_id, lora_name, report, ui=ui.PreviewText(report))

    @classmethod
    def _start(cls, where, data, base, objective, values, extra, components=None) -> str:
        import folder_paths

        from ..trainers.config import TrainConfig, load_config
        from ..trainers.data import validate_dataset
        from ..trainers.registry import output as objective_output

        folder = host.resolve_folder(data, where, "data")
        name = values["name"]
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise NodeInputError(where, "name", f"a file name stem of at most {MAX_NAME_BYTES} bytes is expected (the "
                                 f"LoRA is saved as <name>-<job id>.safetensors), got {len(name.encode('utf-8'))} "
                                 "bytes; pick a short name")
        names = _objectives()
        if objective not in names:
            raise ValueError(f"{where}: objective must be one of {', '.join(names)}, got {objective!r}")
        if components:
            settings = {"data": str(folder), **components, **values}
        else:
            path = folder_paths.get_full_path("checkpoints", base) if isinstance(base, str) and base else None
            if path is None:
                raise ValueError(f"{where}: ckpt_name must be a checkpoint file listed in models/checkpoints, got {base!r}")
            settings = {"base": path, "data": str(folder), **values}
        given = _parse_extra(extra, where)
        for key in ("out", "resume"):
            if key in given:
                raise ValueError(f"{where}: extra must not set {key}; jobs choose their own folder (use the resume input)")
        path_keys = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("path")}
        for key in path_keys & set(given):  # paths typed in the web UI stay inside ComfyUI's folders
            given[key] = host.confine_paths(given[key], where, f"extra ({key})")
        settings.update(given)
        # The same dataclass and dataset checks the CLI runs: a bad value fails here, before any job starts.
        load_config(objective, None, [f"{k}={format_setting(v)}" for k, v in settings.items()]
                    + [f"out={host.jobs_root() / 'check'}"])
        validate_dataset(folder)
        host.free_models()
        store = host.store()
        kind, file = objective_output(objective)
        name = str(settings["name"])
        job_id = store.create(objective, settings, publish=host.publish_path(name, kind), origin="comfyui",
                              output={"kind": kind, "file": file.format(name=name)})
        store.start(job_id, env=host.job_env())
        return job_id


_lora_cache: dict = {}
_lora_lock = threading.Lock()


class VitruvianLoadJobLoRA(VitruvianNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VitruvianLoadJobLoRA",
            display_name="Load Job LoRA (Vitruvian)",
            category=category("train"),
            description="Apply a training job's LoRA to MODEL (and CLIP) in memory: the newest checkpoint, a chosen "
            "step, or the final one; also while the job trains (a newer checkpoint is read on the next run).",
            inputs=[
                io.Model.Input("model"),
                io.String.Input("job", default="latest", tooltip="A job id (link Train's job_id) or 'latest'."),
                io.String.Input("step", default="newest", tooltip="'newest' (the last LoRA written) or a step number."),
                io.Float.Input("strength_model", default=1.0, min=-10.0, max=10.0, step=0.01),
                io.Float.Input("strength_clip", default=1.0, min=-10.0, max=10.0, step=0.01),
                io.Clip.Input("clip", optional=True),
            ],
            outputs=[io.Model.Output(display_name="model"), io.Clip.Output(display_name="clip"),
                     io.String.Output(display_name="info")],
        )

    @classmethod
    def _path(cls, job: str, step: str):
        where = "VitruvianLoadJobLoRA"
        store = host.store()
        job = job.strip() if isinstance(job, str) else ""
        job_id = store.latest() if job == "latest" else check_job_id(job, where)
        if job_id is None:
            raise ValueError(f"{where}: job is 'latest' but there are no jobs in {store.root} yet; start one with Train")
        try:
            store.job_dir(job_id)
        except JobNotFoundError:
            raise ValueError(f"{where}: job {job_id} does not exist in {store.root}; use a job id the Train node "
                             "returned (or the jobs panel lists), or 'latest'") from None
        text = (step or "").strip() if isinstance(step, str) else ""
        if text != "newest" and not text.isdigit():
            raise ValueError(f"{where}: step must be 'newest' or a step number, got {step!r}")
        try:
            return job_id, store.lora_path(job_id, "newest" if text == "newest" else int(text))
        except JobStateError as e:  # a job that trains a scorer or a pose adapter
            raise ValueError(f"{where}: job must be a LoRA training job, got: {e}; load a scorer in Score Regions "
                             "(facescore:vitruvian/…), a pose adapter with Load Pose Adapter") from None

    @classmethod
    def fingerprint_inputs(cls, job=None, step=None, **kwargs):
        # A new checkpoint under the same job and step choice must be read again.
        try:
            _, path = cls._path(job, step)
            st = os.stat(path)
            return (str(path), st.st_mtime_ns, st.st_size)
        except Exception:
            return float("nan")

    @classmethod
    def execute(cls, model, job, step, strength_model, strength_clip, clip=None) -> io.NodeOutput:
        import comfy.lora
        import comfy.lora_convert
        import comfy.sd
        import comfy.utils

        where = "VitruvianLoadJobLoRA"
        job_id, path = cls._path(job, step)
        st = os.stat(path)
        key = (str(path), st.st_mtime_ns, st.st_size)
        with _lora_lock:
            if key not in _lora_cache:
                _lora_cache.clear()
                _lora_cache[key] = comfy.utils.load_torch_file(str(path), safe_load=True)
            lora = _lora_cache[key]
        key_map = comfy.lora.model_lora_keys_unet(model.model, {})
        if clip is not None:
            key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, key_map)
        modules = {k.rsplit(".lora_down.weight", 1)[0] for k in lora if k.endswith(".lora_down.weight")}
        matched = comfy.lora.load_lora(comfy.lora_convert.convert_lora(dict(lora)), key_map, log_missing=False)
        if not matched:
            raise ValueError(f"{where}: the LoRA {path.name} of job {job_id} matches no layer of this MODEL (0 of "
                             f"{len(modules)} modules); was it trained on another base model?")
        new_model, new_clip = comfy.sd.load_lora_for_models(model, clip, lora, strength_model, strength_clip)
        info = f"job {job_id}: {path.name} ({len(matched)} of {len(modules)} modules patched)"
        return io.NodeOutput(new_model, new_clip, info, ui=ui.PreviewText(info))


NODES = [VitruvianTrain, VitruvianLoadJobLoRA]

from . import routes  # noqa: E402  (registers the /vitruvian/jobs routes once the nodes load)

routes.register()
