"""Training jobs: a background trainer process per job, its state on disk, status, cancel, resume.

Pure (no ComfyUI): the nodes put the store under ComfyUI's output folder, scripts anywhere.

- :mod:`.store`: :class:`JobStore` (create / start / status / list / cancel / resume / wait / lora_path);
- :mod:`.status`: :class:`JobStatus` and how a state is read from a job folder;
- :mod:`.process`: how the pack's code runs in a new Python (no shell) and pid liveness;
- :mod:`.launcher`: the job process itself (device lock, trainer, outcome check, publishing);
- :mod:`.files`: the job folder layout, atomic JSON, job ids.
"""

from .files import JOB_ID_RE, check_job_id
from .status import ENDED, STATES, JobStatus, lora_files, read_progress, read_status
from .store import JobNotFoundError, JobStateError, JobStore

__all__ = [
    "JobStore", "JobStatus", "JobNotFoundError", "JobStateError", "STATES", "ENDED", "JOB_ID_RE",
    "check_job_id", "read_status", "read_progress", "lora_files",
]
