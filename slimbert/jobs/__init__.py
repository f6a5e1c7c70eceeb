"""Jobs: records on disk (``store``), one life cycle for every kind (``lifecycle``), the reaper (``reaper``)."""

from slimbert.jobs.store import JobRecord, JobStore, StageRecord, utcnow
from slimbert.records import TERMINAL, JobState

__all__ = ["TERMINAL", "JobRecord", "JobState", "JobStore", "StageRecord", "utcnow"]
