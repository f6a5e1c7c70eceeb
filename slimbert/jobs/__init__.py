"""Jobs: records on disk or in a bucket (``store``), one life cycle for every kind (``lifecycle``), the reaper
(``reaper``)."""

from slimbert.jobs.store import JobRecord, JobStore, StageRecord, open_job_store, utcnow
from slimbert.records import TERMINAL, JobState

__all__ = ["TERMINAL", "JobRecord", "JobState", "JobStore", "StageRecord", "open_job_store", "utcnow"]
