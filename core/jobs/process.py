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
    """
    child_env = dict(os.environ if env is None else env)
    child_env["PYTHONUNBUFFERED"] = "1"
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
    import psutil  # a dependency of accelerate (and of ComfyUI)

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
    """Send SIGTERM (Windows: CTRL_BREAK) to the job process if it is alive; True when a signal was sent.

    The trainer answers SIGTERM by finishing its step, saving a checkpoint and exiting; before training
    starts the job process exits at once.
    """
    if not pid_alive(pid, started):
        return False
    sig = signal.CTRL_BREAK_EVENT if os.name == "nt" else signal.SIGTERM
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True
