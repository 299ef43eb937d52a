"""Job processes: the command that runs a module of the pack in a new Python, and pid liveness.

**Running the pack's code in a child process.** Inside ComfyUI the pack is a folder in
``custom_nodes`` imported under a name derived from its path (``custom_nodes.ComfyUI-Vitruvian``),
not an installed package, so ``python -m vitruvian.trainers`` would fail there. The child is started as
``python -c BOOTSTRAP <pack folder> <module> <args...>``: the bootstrap imports the pack folder as the
package ``vitruvian`` with ``importlib`` (``spec_from_file_location`` with the folder as its search
location; no ``sys.path`` change, no symlink, any folder name, installed copy or not) and runs the
module with ``runpy`` as ``__main__``. It works the same for a pip install (the folder is
``vitruvian/``) and on every OS.

**Liveness.** A pid alone is not proof: after a restart the number may belong to another process.
A job records its pid with the process's start time (psutil), and is alive only when both match and
the process is not a zombie.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

__all__ = ["BOOTSTRAP", "PACKAGE", "module_command", "spawn", "process_start_time", "pid_alive", "terminate"]

#: The package name the pack is imported under in a job process.
PACKAGE = "vitruvian"

#: ``python -c BOOTSTRAP <pack folder> <module> [args...]`` — import the folder as ``vitruvian``, run
#: ``<module>`` (a dotted name inside it) as ``__main__`` with ``sys.argv = [<module>, args...]``.
BOOTSTRAP = """\
import importlib.util, os, runpy, sys
pack, module = os.path.abspath(sys.argv[1]), sys.argv[2]
spec = importlib.util.spec_from_file_location(
    {package!r}, os.path.join(pack, "__init__.py"), submodule_search_locations=[pack])
package = importlib.util.module_from_spec(spec)
sys.modules[{package!r}] = package
spec.loader.exec_module(package)
sys.argv = [module, *sys.argv[3:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
""".format(package=PACKAGE)


def module_command(module: str, *args: str, pack_dir: str | os.PathLike, python: str | None = None) -> list[str]:
    """``[python, "-c", BOOTSTRAP, pack_dir, module, *args]``; ``module`` must start with ``vitruvian.``.

    Example:
        >>> import os, vitruvian
        >>> cmd = module_command("vitruvian.trainers", "--help", pack_dir=os.path.dirname(vitruvian.__file__), python="py")
        >>> cmd[:2], cmd[4:]
        (['py', '-c'], ['vitruvian.trainers', '--help'])
    """
    if not module.startswith(PACKAGE + "."):
        raise ValueError(f"module_command: module must be a module of the pack ({PACKAGE}.…), got {module!r}")
    pack_dir = Path(pack_dir)
    if not (pack_dir / "__init__.py").is_file():
        raise ValueError(f"module_command: pack_dir must be the pack's folder (with __init__.py), got {str(pack_dir)!r}")
    return [python or sys.executable, "-c", BOOTSTRAP, str(pack_dir.resolve()), module, *map(str, args)]


def spawn(argv: list[str], *, cwd: str | os.PathLike, log_path: str | os.PathLike,
          env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``argv`` (no shell) in its own session, stdin closed, stdout + stderr appended to ``log_path``.

    Its own session (process group on Windows): a Ctrl-C in the parent's terminal does not reach it, and
    it outlives a restart of the parent, which finds it again through its pid and start time.

    The child gets ``OMP_WAIT_POLICY=PASSIVE`` unless ``env`` sets it: a job shares the CPU with ComfyUI
    and the browser showing it, and OpenMP threads that spin-wait between ops (the default) starve them
    and themselves once the CPU is busy. Measured on a loaded 2-core machine (two busy-loop processes plus
    a compile job beside it): a DPO step on the tiny test model took 23.7 s with the default policy and
    0.21 s with PASSIVE (on an idle CPU: 0.19 s and 0.24 s).
    """
    child_env = dict(os.environ if env is None else env)
    child_env["PYTHONUNBUFFERED"] = "1"
    child_env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    kwargs: dict = {}
    if os.name == "nt":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        kwargs["start_new_session"] = True
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, cwd=str(cwd), env=child_env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, close_fds=True, **kwargs)


def process_start_time(pid: int) -> float | None:
    """The start time (epoch seconds, as psutil reports it) of process ``pid``, or None if there is none."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def pid_alive(pid, started) -> bool:
    """True when process ``pid`` runs, is not a zombie, and started at ``started`` (±0.5 s)."""
    import psutil

    if not isinstance(pid, int) or pid <= 0 or not isinstance(started, (int, float)):
        return False
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - started) > 0.5:
            return False  # the pid was reused by another process
        return proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def terminate(pid, started) -> bool:
    """Ask the job process to stop if it is alive; True when the request was delivered.

    POSIX: SIGTERM. The trainer answers it by finishing its step, saving a checkpoint and exiting; before
    training starts the job process exits at once.

    Windows (this branch cannot run in the POSIX CI, so it is kept to these few lines): the job was
    started with ``CREATE_NEW_PROCESS_GROUP``, so its pid is its group id and ``CTRL_BREAK_EVENT`` reaches
    it alone, as SIGBREAK, which the launcher handles exactly like SIGTERM. The event needs a console the
    two processes share; without one (ComfyUI started with no console) ``os.kill`` raises OSError and the
    job is stopped hard instead (TerminateProcess): it keeps its last checkpoint, not the current step.
    """
    if not pid_alive(pid, started):
        return False
    if os.name == "nt":
        import psutil

        try:
            os.kill(pid, signal.CTRL_BREAK_EVENT)
        except OSError:
            try:
                psutil.Process(pid).terminate()
            except psutil.Error:
                return False
        return True
    try:
        os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return False
    return True
