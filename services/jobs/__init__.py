"""Background jobs: the service owners and workers call (service.py) and what a kind and a run are (run.py)."""

from services.jobs.run import JobCancelled, JobFailed, JobGaveUp, JobKind, JobRun, RetryLater
from services.jobs.service import PUSH_TASK, QUEUE, RUN_TASK, JobService, JobSettings

__all__ = [
    "PUSH_TASK",
    "QUEUE",
    "RUN_TASK",
    "JobCancelled",
    "JobFailed",
    "JobGaveUp",
    "JobKind",
    "JobRun",
    "JobService",
    "JobSettings",
    "RetryLater",
]
