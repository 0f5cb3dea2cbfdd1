"""How values appear in a report: number formatting, JSON-safe copies, BIDS entity labels,
annotation keys, and the labels and colours of tiers and grades (shared by both reports)."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

ANNOTATION_COLUMNS = ("bids_name", "participant_id", "session", "run", "motion", "noise",
                      "contrast", "tier_override", "comment")
TIER_LABELS = {1: "good", 2: "medium", 3: "reject"}
GRADE_LABELS = {0: "none", 1: "moderate", 2: "severe"}
METRIC_INFO = {
    "snr": ("SNR", "signal-to-noise ratio; higher is better"),
    "nd_wgm": ("ND-WGM", "normalised white/grey-matter intensity difference (contrast); higher is better"),
    "aes": ("AES", "average edge strength (sharpness); higher is better"),
    "tenengrad": ("Tenengrad", "gradient energy (sharpness); higher is better"),
    "snr_native": ("SNR (native)", "head intensity / std of the air around it, before preprocessing; "
                   "noise and motion ghosts lower it; also computed for slabs; higher is better"),
    "wm_snr": ("SNR (WM, 1.5 mm)", "white-matter level / Rician noise sigma of the air, at 1.5 mm "
               "before bias correction; defines the noise grade (< 52 moderate, < 27.5 severe; "
               "published: ~74 clean, 38-44 moderate, 25-27 severe); higher is better"),
}
# Not pybids' parse_file_entities: it reads run labels as digits only (``run-a`` gives no run, so
# two such scans of a subject would share their annotation keys) and needs a leading "/".
_ENTITY_RE = re.compile(r"(?:^|_)(sub|ses|run)-([a-zA-Z0-9]+)")
TIER_COLOURS = {1: "#2e9d52", 2: "#e0a526", 3: "#d2433a", None: "#8a8f98"}
GRADE_COLOURS = ("#2e9d52", "#e0a526", "#d2433a")


def fmt(value, digits: int = 3) -> str:
    """Human-friendly number: ``n/a`` for None/NaN, 3 significant digits, ints as they are."""
    if value is None or isinstance(value, str):
        return "n/a" if value is None or value == "" else value
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    try:
        val = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(val):
        return "n/a"
    if val != 0 and (abs(val) >= 1e5 or abs(val) < 1e-3):
        return f"{val:.{digits - 1}e}"
    return f"{val:.{digits}g}" if abs(val) >= 1 else f"{val:.{digits}f}".rstrip("0").rstrip(".")


def plain(value):
    """JSON-friendly copy: numpy -> Python, NaN/inf -> None, Path and unknowns -> str."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def is_missing(value) -> bool:
    """None, NaN, or pandas' NA/NaT (nullable columns of the group table)."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return bool(np.isnan(value))
    return type(value).__name__ in ("NAType", "NaTType")


def number_or_none(value):
    """A finite float from a number or a numeric string, else None (missing, "n/a", text)."""
    if is_missing(value) or isinstance(value, str):
        try:
            return float(value) if isinstance(value, str) and value not in ("", "n/a") else None
        except ValueError:
            return None
    try:
        val = float(value)
    except (TypeError, ValueError):
        return None
    return val if math.isfinite(val) else None


def int_or_none(value):
    """Whole number from a number or numeric text; None when missing or not a number."""
    if is_missing(value) or value == "":
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def entity_label(value) -> str:
    """Entity label as text without its prefix; ``n/a`` when absent."""
    if is_missing(value) or str(value).strip() in ("", "n/a", "nan", "None"):
        return "n/a"
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)  # a run column read as float because of missing values
    text = str(value).strip()
    for prefix in ("sub-", "ses-", "run-"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return text


def bids_stem(path) -> str:
    """File name without .nii / .nii.gz (the ``bids_name``)."""
    name = Path(str(path)).name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def annotation_keys(bids_name: str, entities: dict | None = None) -> dict:
    """The identifying columns of an annotations row for one scan.

    ``participant_id`` is ``sub-<label>``; ``session`` and ``run`` are the bare labels as in
    the file name (``1`` for ``ses-1``), or ``n/a``. Entities win; the name is the fallback.
    """
    entities = entities or {}
    parsed = {k: v for k, v in _ENTITY_RE.findall(bids_name)}
    subject = entity_label(entities.get("subject", parsed.get("sub")))
    return {"bids_name": bids_name,
            "participant_id": "n/a" if subject == "n/a" else f"sub-{subject}",
            "session": entity_label(entities.get("session", parsed.get("ses"))),
            "run": entity_label(parsed.get("run", entities.get("run")))}


def tier_info(tier) -> dict:
    t = int_or_none(tier)
    return {"value": t, "label": TIER_LABELS.get(t, "n/a"),
            "colour": TIER_COLOURS.get(t, TIER_COLOURS[None])}
