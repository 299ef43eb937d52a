"""trainers.jobs without ComfyUI: job folders, states read from disk, and real job processes training the tiny
diffusers model (finish + publish, cancel + resume, a second job waiting for the first, a failing job)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from vitruvian.trainers.jobs import JobNotFoundError, JobStateError, JobStore, check_job_id, read_status
from vitruvian.trainers.jobs.files import JOB_FILE, OUT_DIR, RUN_FILE, log_tail, write_json
from vitruvian.trainers.jobs.process import module_command, pid_alive, process_start_time, spawn
from vitruvian.core.pairs import PairRecord, append_pairs

from ..tiny import tiny_diffusers_folder


def make_pairs(folder, n: int = 3):
    g = torch.Generator().manual_seed(0)
    append_pairs(folder, [PairRecord("a person waving", torch.rand(3, 32, 32, generator=g),
                                     torch.rand(3, 32, 32, generator=g)) for _ in range(n)])
    return folder


def tiny_settings(data, **extra) -> dict:
    return {"base": str(tiny_diffusers_folder()), "data": str(data), "steps": 3, "resolution": 64, "rank": 2,
            "alpha": 2, "checkpoint_every": 1, "learning_rate": 1e-4, **extra}


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# ------------------------------------------------------------------------------------------ fast


def test_job_ids_are_never_paths():
    assert check_job_id("20251012-153000-a1b2c3", "t") == "20251012-153000-a1b2c3"
    for bad in ("../x", "20251012-153000-a1b2c3/..", "20251012-153000-A1B2C3", "", None, 7):
        with pytest.raises(ValueError, match="job id must look like 20251012-153000-a1b2c3"):
            check_job_id(bad, "t")


def test_create_and_find(tmp_path):
    store = JobStore(tmp_path / "jobs")
    first = store.create("dpo", {"base": "b", "data": "d", "steps": 3}, publish=tmp_path / "loras" / "x-{id}.safetensors")
    second = store.create("dpo", {"base": "b", "data": "d", "steps": 3, "name": "mine"})
    assert first != second and store.ids()[0] == second and store.latest() == second
    job = json.loads((store.job_dir(first) / JOB_FILE).read_text())
    assert job["settings"]["out"] == str((tmp_path / "jobs" / first / OUT_DIR).resolve())
    assert job["settings"]["name"] == "vitruvian" and job["publish"].endswith(f"x-{first}.safetensors")
    assert store.status(second).state == "starting" and store.status(second).name == "mine"
    with pytest.raises(JobNotFoundError, match="does not exist"):
        store.job_dir("20000101-000000-000000")
    with pytest.raises(ValueError, match="settings must include base, data, steps, got no steps"):
        store.create("dpo", {"base": "b", "data": "d"})
    with pytest.raises(ValueError, match="must not set out"):
        store.create("dpo", {"base": "b", "data": "d", "steps": 1, "out": "/tmp"})


def _ended_job(tmp_path, run: dict, *, final: bool, steps_done: int, cancel=None, output=None):
    """A job folder as a job process would leave it (the process is a finished ``true``)."""
    store = JobStore(tmp_path / "jobs")
    job_id = store.create("dpo", {"base": "b", "data": "d", "steps": 3}, output=output)
    folder = store.job_dir(job_id)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    started = process_start_time(proc.pid)
    proc.wait()
    job = json.loads((folder / JOB_FILE).read_text())
    job.update(pid=proc.pid, pid_started=started, cancel_requested=cancel)
    write_json(folder / JOB_FILE, job)
    out = folder / OUT_DIR
    out.mkdir()
    (out / "progress.jsonl").write_text("".join(json.dumps({"step": s, "loss": 0.69, "eta": 0}) + "\n"
                                                for s in range(1, steps_done + 1)))
    if final:
        (out / (output or {}).get("file", "vitruvian.safetensors")).write_bytes(b"x" * 10)
    write_json(folder / RUN_FILE, {"attempt": 1, **run})
    return store, job_id


def test_never_finished_when_nothing_trained(tmp_path):
    store, job_id = _ended_job(tmp_path, {"started": time.time() - 5, "returncode": 0}, final=False, steps_done=0)
    status = store.status(job_id)
    assert status.state == "failed" and "no LoRA was written" in status.error and "0/3 steps" in status.error


def test_stale_final_lora_is_not_success(tmp_path):
    store, job_id = _ended_job(tmp_path, {"started": time.time() + 100, "returncode": 0}, final=True, steps_done=3)
    status = store.status(job_id)
    assert status.state == "failed" and "older than this run" in status.error


def test_jobs_of_other_outputs_are_judged_by_their_file(tmp_path):
    """A scorer job finishes on <name>-scorer.safetensors, fails without it, and is no LoRA to hot-load."""
    scorer = {"kind": "scorer", "file": "vitruvian-scorer.safetensors"}
    store, job_id = _ended_job(tmp_path, {"started": time.time() - 5, "returncode": 0}, final=True, steps_done=3,
                               output=scorer)
    status = store.status(job_id)
    assert status.state == "finished" and status.output_kind == "scorer"
    assert status.lora.endswith("vitruvian-scorer.safetensors")
    with pytest.raises(JobStateError, match="trains a scorer .dpo., not a LoRA"):
        store.lora_path(job_id)
    store, job_id = _ended_job(tmp_path / "b", {"started": time.time() - 5, "returncode": 0}, final=False,
                               steps_done=3, output=scorer)
    status = store.status(job_id)
    assert status.state == "failed" and "no scorer was written (vitruvian-scorer.safetensors is missing)" in status.error


def test_finished_and_vanished_states(tmp_path):
    store, job_id = _ended_job(tmp_path, {"started": time.time() - 5, "returncode": 0}, final=True, steps_done=3)
    assert store.status(job_id).state == "finished"
    store, job_id = _ended_job(tmp_path / "b", {"started": time.time() - 5}, final=False, steps_done=1)
    status = store.status(job_id)
    assert status.state == "failed" and "without reporting an exit code" in status.error
    store, job_id = _ended_job(tmp_path / "c", {"started": time.time() - 5}, final=False, steps_done=1, cancel=1.0)
    assert store.status(job_id).state == "cancelled"


def test_pid_liveness_checks_the_start_time():
    me, started = os.getpid(), process_start_time(os.getpid())
    assert pid_alive(me, started)
    assert not pid_alive(me, started - 100)  # same number, another process (a reused pid)
    assert not pid_alive(None, None)


def test_log_tail_resolves_progress_bars(tmp_path):
    log = tmp_path / "train.log"
    log.write_bytes(b"first\nbar 1%\rbar 50%\rbar 100%\n\nlast line\n")
    assert log_tail(log, 2) == "bar 100%\nlast line"
    assert log_tail(tmp_path / "missing.log") == "" and log_tail(log, 0) == ""


def test_module_command_runs_the_pack_under_any_folder_name(tmp_path):
    """The bootstrap imports the pack folder as ``vitruvian`` even when the folder has another name."""
    from vitruvian.trainers.jobs.store import PACK_DIR

    link = tmp_path / "ComfyUI-Vitruvian"
    link.symlink_to(PACK_DIR, target_is_directory=True)
    argv = module_command("vitruvian.trainers.jobs.files", pack_dir=link)
    assert argv[0] == sys.executable and "-c" == argv[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(argv[:3] + [str(link), "vitruvian.trainers.jobs.launcher"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 2 and "usage: python -m vitruvian.trainers.jobs.launcher" in done.stderr
    with pytest.raises(ValueError, match="module must be a module of the pack"):
        module_command("os", pack_dir=link)


def test_job_processes_wait_passively_unless_told(tmp_path):
    """OpenMP threads of a job must not spin on cores that ComfyUI and the browser need (spawn's docstring)."""
    show = [sys.executable, "-c", "import os; print(os.environ.get('OMP_WAIT_POLICY'))"]
    unset = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for env, expected in ((unset, "PASSIVE"), ({**unset, "OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE")):
        log = tmp_path / f"{expected}.log"
        assert spawn(show, cwd=tmp_path, log_path=log, env=env).wait(timeout=60) == 0
        assert log.read_text().split() == [expected]


# ------------------------------------------------------------------------------------------ real jobs


@pytest.mark.slow
def test_cancel_keeps_a_checkpoint_and_resume_finishes(tmp_path):
    store = JobStore(tmp_path / "jobs")
    data = make_pairs(tmp_path / "pairs")
    job_id = store.create("dpo", tiny_settings(data, steps=400))
    store.start(job_id)
    deadline = time.monotonic() + 600
    while store.status(job_id).step < 1:
        assert time.monotonic() < deadline and not store.status(job_id).ended, store.status(job_id).log
        time.sleep(0.2)
    # another process with a store of its own (a restarted ComfyUI) sees the job running and cancels it
    probe = (f"from vitruvian.trainers.jobs import JobStore; s = JobStore({str(store.root)!r}); "
             f"print(s.status({job_id!r}).state, s.cancel({job_id!r}).state)")
    asked = time.monotonic()
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split()[0] == "running", done.stdout + done.stderr
    assert done.stdout.split()[1] in ("cancelling", "cancelled")
    status = store.wait(job_id, timeout=120, poll=0.2)
    assert time.monotonic() - asked < 60, "cancel took more than a minute"
    assert status.state == "cancelled" and 1 <= status.step < 400
    checkpoints = sorted((store.job_dir(job_id) / OUT_DIR / "checkpoints").glob("step-*"))
    assert checkpoints and checkpoints[-1].name == f"step-{status.step}"
    assert "stopped by SIGTERM" in status.log
    stopped_at = status.step
    store.resume(job_id, steps=stopped_at + 2)
    status = store.wait(job_id, timeout=600)
    assert status.state == "finished", status.log
    assert status.attempt == 2 and status.step == stopped_at + 2
    assert "resumed from" in status.log


def test_cancel_while_waiting_for_the_device_ends_the_wait(tmp_path):
    """The launcher's handler only records the cancel; the lock wait sees it and ends with 143."""
    from filelock import FileLock

    from vitruvian.trainers.jobs.files import DEVICE_LOCK

    store = JobStore(tmp_path / "jobs")
    job_id = store.create("dpo", tiny_settings(make_pairs(tmp_path / "pairs"), steps=1))
    with FileLock(str(store.root / DEVICE_LOCK)):  # another job holds the device
        store.start(job_id)
        deadline = time.monotonic() + 60
        while store.status(job_id).state != "waiting" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.status(job_id).state == "waiting"
        time.sleep(0.5)  # well inside the lock wait
        store.cancel(job_id)
        status = store.wait(job_id, timeout=60, poll=0.1)
    run = json.loads((store.job_dir(job_id) / RUN_FILE).read_text())
    assert status.state == "cancelled" and status.step == 0, status.log
    assert (run["returncode"], run["error"]) == (143, "stopped by SIGTERM before training started")
    assert "launcher: stopped by SIGTERM before training started" in status.log


@pytest.mark.slow
def test_jobs_finish_publish_and_a_second_one_waits_its_turn(tmp_path):
    store = JobStore(tmp_path / "jobs")
    data = make_pairs(tmp_path / "pairs")
    first = store.create("dpo", tiny_settings(data, steps=3), publish=tmp_path / "loras" / "vitruvian" / "t-{id}.safetensors")
    second = store.create("dpo", tiny_settings(data, steps=2, seed=1))
    store.start(first)
    while store.status(first).state in ("starting", "waiting"):
        time.sleep(0.1)
    store.start(second)
    states, first_steps_while_second_trains = set(), set()
    while not store.status(second).ended:
        one, two = store.status(first), store.status(second)
        states.add(two.state)
        if two.state == "running":
            first_steps_while_second_trains.add(one.step)
        time.sleep(0.2)
    # the second job waited for the device lock and trained only once the first had done all its steps
    assert "waiting" in states and first_steps_while_second_trains == {3}, (states, first_steps_while_second_trains)

    one = store.wait(first, timeout=60)
    assert one.state == "finished", one.log
    assert one.step == 3 and [s for s, _ in one.losses] == [1, 2, 3]
    assert one.published == str(tmp_path / "loras" / "vitruvian" / f"t-{first}.safetensors")
    assert sha(one.published) == sha(one.lora) and one.lora.endswith("vitruvian.safetensors")
    assert store.lora_path(first, 2).name == "vitruvian-step2.safetensors"
    assert store.lora_path(first, 3).name == "vitruvian-step3.safetensors"
    assert store.lora_path(first).name == "vitruvian.safetensors"  # newest: the final file, written last
    with pytest.raises(FileNotFoundError, match="has no LoRA for step 7; it has steps 1, 2, 3 and the final one"):
        store.lora_path(first, 7)
    with pytest.raises(JobStateError, match="already finished its 3 steps"):
        store.resume(first)

    two = store.status(second)
    assert two.state == "finished", two.log
    assert store.job_dir(first) != store.job_dir(second) and one.lora != two.lora
    assert sha(one.lora) != sha(two.lora) and store.status(first).state == "finished"


@pytest.mark.slow
def test_failed_job_reports_the_trainer_error(tmp_path):
    store = JobStore(tmp_path / "jobs")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metadata.jsonl").write_text('{"prompt": "x", "chosen": "missing.png", "rejected": "b.png"}\n')
    job_id = store.create("dpo", tiny_settings(tmp_path / "broken"))
    store.start(job_id)
    status = store.wait(job_id, timeout=600)
    assert status.state == "failed"
    assert status.error.startswith("exit code 2: validate_dataset: every line of") and "line 1" in status.error
    assert "missing.png" in status.log and read_status(store.job_dir(job_id)).state == "failed"
