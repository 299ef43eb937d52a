"""HTTP routes of the jobs panel, registered once when the training nodes load.

- ``GET  /vitruvian/jobs``              → ``{"jobs": [status, ...]}`` newest first (no log, with loss curves)
- ``GET  /vitruvian/jobs/{id}``         → one status with its loss curve and log tail
- ``POST /vitruvian/jobs/{id}/cancel``  → the status after SIGTERM was sent

The handlers read job folders, take the job's file lock and query processes: blocking work, so it runs in
a worker thread (``asyncio.to_thread``), never on the server's event loop, which must keep serving the
page and its websocket while jobs train.

Only jobs under this ComfyUI's ``output/vitruvian/jobs`` are reachable: the id must match the job-id
pattern (no path, no ``..``) and name an existing job folder there; nothing else is read or written.
Errors answer ``{"error": message}`` with 400 (malformed id) or 404 (unknown id).
"""

from __future__ import annotations

import asyncio
import logging

from ..trainers.jobs import JobNotFoundError, check_job_id
from . import _train_host as host

__all__ = ["register", "PREFIX"]

PREFIX = "/vitruvian/jobs"
log = logging.getLogger("vitruvian")
_registered = False


def _json(data, status: int = 200):
    from aiohttp import web

    return web.json_response(data, status=status)


def _job_or_error(request):
    """``(job_id, None)`` or ``(None, error response)``."""
    job_id = request.match_info.get("job_id", "")
    try:
        check_job_id(job_id, "vitruvian jobs API")
        host.store().job_dir(job_id)
    except ValueError as e:
        return None, _json({"error": str(e)}, 400)
    except JobNotFoundError:
        return None, _json({"error": f"no job {job_id} in {host.jobs_root()}"}, 404)
    return job_id, None


def _list() -> dict:
    statuses = host.store().list()
    for status in statuses:
        if not status.ended:
            host.watch(status.id)  # e.g. jobs started before a restart: their changes are pushed again
    return {"root": str(host.jobs_root()), "jobs": [s.to_dict(curve=True, log=False) for s in statuses]}


def _cancel(job_id: str) -> dict:
    status = host.store().cancel(job_id)
    host.send_status(status)
    host.watch(job_id)
    return status.to_dict(log=False)


async def list_jobs(request):
    return _json(await asyncio.to_thread(_list))


async def get_job(request):
    job_id, error = _job_or_error(request)  # a name check and one stat
    if error is not None:
        return error
    return _json((await asyncio.to_thread(host.store().status, job_id, log_lines=60)).to_dict())


async def cancel_job(request):
    job_id, error = _job_or_error(request)  # a name check and one stat
    if error is not None:
        return error
    return _json(await asyncio.to_thread(_cancel, job_id))


def register() -> bool:
    """Add the routes to ComfyUI's server (once; False when there is no running server)."""
    global _registered
    if _registered:
        return True
    try:
        from server import PromptServer

        routes = PromptServer.instance.routes
    except Exception:  # imported outside a running ComfyUI (scripts, unit tests)
        log.debug("Vitruvian: no PromptServer; job routes not registered", exc_info=True)
        return False
    routes.get(PREFIX)(list_jobs)
    routes.get(PREFIX + "/{job_id}")(get_job)
    routes.post(PREFIX + "/{job_id}/cancel")(cancel_job)
    _registered = True
    return True
