"""One exceptions module. Every error says *what* went wrong and *where*.

Errors that concern one scan subclass :class:`ScanError`; they are caught at the
scan boundary, recorded in that scan's JSON (status ``error``) and the run goes on.
"""
from __future__ import annotations


class BidsQcError(Exception):
    """Base class of every error raised on purpose by bids_qc."""


class ScanError(BidsQcError):
    """A problem with one scan. ``path`` names the file, ``reason`` says what is wrong."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class InvalidScanError(ScanError, ValueError):
    """The file cannot be read as a usable 3D T1w image (empty, truncated, 4D, NaN, ...)."""


class PreprocessingError(ScanError, RuntimeError):
    """Reading worked but a preprocessing step (N4, registration, cropping) failed."""


class ModelError(BidsQcError, ValueError):
    """A model folder is missing, incomplete, has a wrong checksum or wrong geometry."""

    def __init__(self, folder, reason: str):
        self.folder = str(folder)
        self.reason = reason
        super().__init__(f"model folder {self.folder}: {reason}")


class AnnotationError(BidsQcError, ValueError):
    """An annotation (ratings) file is malformed. ``row`` is 1-based, header excluded."""

    def __init__(self, path, reason: str, row: int | None = None):
        self.path = str(path)
        self.row = row
        self.reason = reason
        where = f"{self.path}" + (f", row {row}" if row is not None else "")
        super().__init__(f"{where}: {reason}")


class BidsInputError(BidsQcError, ValueError):
    """The BIDS input directory or filters are unusable."""
