"""bids_qc: quality control of brain T1-weighted MRI in BIDS datasets."""
from pathlib import Path as _Path


def _read_version() -> str:
    here = _Path(__file__).resolve().parent
    for candidate in (here.parent / "version", here / "data" / "version"):
        if candidate.is_file():
            return candidate.read_text().strip()
    try:
        from importlib.metadata import version

        return version("bids_qc")
    except Exception:  # pragma: no cover - not installed, no version file
        return "0+unknown"


__version__ = _read_version()
