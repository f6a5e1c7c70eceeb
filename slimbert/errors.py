"""Domain errors. Each carries a hint that tells the user what to change."""

from __future__ import annotations


class SlimBertError(Exception):
    """Base class: ``str(err)`` says what went wrong, ``hint`` says what to do about it."""

    status_code = 400

    def __init__(self, detail: str, hint: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.hint = hint


class NotFound(SlimBertError):
    status_code = 404


class VariantNotFound(NotFound):
    pass


class JobNotFound(NotFound):
    pass


class InvalidInput(SlimBertError):
    status_code = 422


class InvalidRecipe(SlimBertError):
    status_code = 422


class ModelUnavailable(SlimBertError):
    """A model id or path that cannot be resolved here (offline, or outside the allowed roots)."""

    status_code = 422


class LabelMismatch(SlimBertError):
    """A fine-tuned classifier whose labels are not the dataset's."""

    status_code = 422


class DatasetUnavailable(SlimBertError):
    status_code = 422


class DatasetNotFound(NotFound):
    pass


class DatasetInvalid(InvalidInput):
    """A dataset file that cannot be used as given; ``where`` names the file, row and column."""

    def __init__(self, detail: str, hint: str = "", *, file: str | None = None, row: int | None = None,
                 column: str | None = None) -> None:
        where = ", ".join(f"{k} {v}" for k, v in (("file", file), ("row", row), ("column", column)) if v is not None)
        super().__init__(f"{where}: {detail}" if where else detail, hint)
        self.file, self.row, self.column = file, row, column


class Conflict(SlimBertError):
    """The request clashes with what is stored (an existing name, a dataset a variant still uses)."""

    status_code = 409


class NoWorkerForDevice(SlimBertError):
    status_code = 409


class QueueUnavailable(SlimBertError):
    """Redis (the broker) does not answer."""

    status_code = 503


class JobCancelled(SlimBertError):
    """Raised inside a job at a stage boundary after the user cancelled it."""

    status_code = 409


class StoreError(SlimBertError):
    status_code = 500


class StageSkipped(Exception):
    """Raised inside an optional stage that finds it cannot run; the stage is recorded as skipped."""
