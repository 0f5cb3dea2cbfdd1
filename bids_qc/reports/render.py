"""Participant and group HTML reports: build a plain context dict, render a Jinja2 template.

Templates live in ``reports/templates`` at the repository root (autoescape on). Every figure
is embedded as a base64 PNG and all scripts are inline, so a report is one file that opens
offline. The rating widgets export the annotations TSV documented in ``docs/annotations.md``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

import numpy as np
from markupsafe import Markup

import bids_qc
from bids_qc import __version__
from bids_qc.exceptions import BidsQcError
from bids_qc.record import ARTEFACTS, DETECTORS, METRICS
from bids_qc.reports import figures

logger = logging.getLogger(__name__)

TEMPLATES_ENV = "BIDS_QC_TEMPLATES"
DEFAULT_TEMPLATES = Path(bids_qc.__file__).resolve().parent.parent / "reports" / "templates"
ANNOTATION_COLUMNS = ("bids_name", "participant_id", "session", "run", "motion", "noise",
                      "contrast", "tier_override", "comment")
TIER_LABELS = {1: "good", 2: "medium", 3: "reject"}
GRADE_LABELS = {0: "none", 1: "moderate", 2: "severe"}
METRIC_INFO = {
    "snr": ("SNR", "signal-to-noise ratio; higher is better"),
    "nd_wgm": ("ND-WGM", "normalised white/grey-matter intensity difference (contrast); higher is better"),
    "aes": ("AES", "average edge strength (sharpness); higher is better"),
    "tenengrad": ("Tenengrad", "gradient energy (sharpness); higher is better"),
}
_ENTITY_RE = re.compile(r"(?:^|_)(sub|ses|run)-([a-zA-Z0-9]+)")


class ReportTemplateError(BidsQcError, FileNotFoundError):
    """The report templates folder is missing (e.g. a non-editable install without it)."""


def templates_dir() -> Path:
    """Folder of the ``*.html.j2`` templates: ``$BIDS_QC_TEMPLATES`` or <repo>/reports/templates."""
    folder = Path(os.environ.get(TEMPLATES_ENV) or DEFAULT_TEMPLATES)
    if not (folder / "participant.html.j2").is_file() or not (folder / "group.html.j2").is_file():
        raise ReportTemplateError(
            f"report templates not found in {folder} (expected participant.html.j2 and "
            f"group.html.j2). Run bids_qc from a source checkout, or set {TEMPLATES_ENV} to the "
            "folder reports/templates of the bids_qc repository.")
    return folder


@lru_cache(maxsize=4)
def _environment(folder: str):
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(folder), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["fmt"] = fmt
    return env


def _render(name: str, context: dict) -> str:
    return _environment(str(templates_dir())).get_template(name).render(**context)


# --------------------------------------------------------------------------- small helpers
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


def _missing(value) -> bool:
    """None, NaN, or pandas' NA/NaT (nullable columns of the group table)."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return bool(np.isnan(value))
    return type(value).__name__ in ("NAType", "NaTType")


def _int_or_none(value):
    if _missing(value) or value == "":
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _label(value) -> str:
    """Entity label as text without its prefix; ``n/a`` when absent."""
    if _missing(value) or str(value).strip() in ("", "n/a", "nan", "None"):
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
    subject = _label(entities.get("subject", parsed.get("sub")))
    return {"bids_name": bids_name,
            "participant_id": "n/a" if subject == "n/a" else f"sub-{subject}",
            "session": _label(entities.get("session", parsed.get("ses"))),
            "run": _label(parsed.get("run", entities.get("run")))}


def tier_info(tier) -> dict:
    t = _int_or_none(tier)
    return {"value": t, "label": TIER_LABELS.get(t, "n/a"),
            "colour": figures.TIER_COLOURS.get(t, figures.TIER_COLOURS[None])}


def _flatten(value, prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """Nested dict -> [(dotted key, text)]; matrices in rows of fixed-width numbers."""
    if isinstance(value, dict) and depth < 4:
        rows = []
        for key, sub in value.items():
            rows += _flatten(sub, f"{prefix}.{key}" if prefix else str(key), depth + 1)
        return rows
    if isinstance(value, (list, tuple)) and value and all(isinstance(r, (list, tuple)) for r in value):
        text = "\n".join("  ".join(f"{fmt(c, 4):>9}" for c in r) for r in value)
        return [(prefix, text)]
    if isinstance(value, (list, tuple)):
        return [(prefix, ", ".join(fmt(v, 4) for v in value) or "[]")]
    return [(prefix, fmt(value, 4))]


# --------------------------------------------------------------------------- participant
def participant_context(assessment) -> dict:
    """Everything the participant template shows, as plain values and data URIs."""
    record = plain(getattr(assessment, "record", None) or {})
    source = record.get("source_file") or ""
    bids_name = record.get("bids_name") or bids_stem(source) or "scan"
    status = record.get("status") or "ok"
    error = record.get("error") or None
    probs = record.get("probabilities") or {}
    grades = record.get("grades") or {}
    saliency = getattr(assessment, "saliency", None) or {}
    model = record.get("model") or {}

    warnings = [str(w) for w in record.get("warnings") or []]
    if status != "error" and model.get("trained") is False and not any(("untrained" in w.lower() or "not trained" in w.lower()) for w in warnings):
        warnings.append("The model is untrained: probabilities, grades and tier are placeholders.")

    detectors = []
    for art in ARTEFACTS:
        grade = _int_or_none(grades.get(art))
        sev = []
        for s in ("moderate", "severe"):
            det = f"{art}_{s}"
            p = probs.get(det)
            sev.append({"name": det, "severity": s, "p": p, "p_text": fmt(p),
                        "pct": 0 if p is None else max(0.0, min(100.0, 100 * float(p))),
                        "positive": det in saliency or (p is not None and p >= 0.5)})
        detectors.append({"artefact": art, "grade": grade, "grade_label": GRADE_LABELS.get(grade, "n/a"),
                          "colour": figures.GRADE_COLOURS[grade] if grade in (0, 1, 2) else "#8a8f98",
                          "severities": sev})

    metrics_values = record.get("metrics") or {}
    notes = record.get("metrics_notes") or {}
    metrics = [{"key": m, "name": METRIC_INFO.get(m, (m, ""))[0], "help": METRIC_INFO.get(m, ("", ""))[1],
                "value": fmt(metrics_values.get(m), 4), "note": notes.get(m, "")}
               for m in list(METRICS) + [k for k in metrics_values if k not in METRICS]]

    t0 = time.perf_counter()
    images, image_notes = {}, []
    native = getattr(assessment, "native", None)
    zooms = tuple(getattr(assessment, "native_zooms", None) or (1.0, 1.0, 1.0))
    images["raw"] = figures.mosaic_uris(native, zooms)
    registered = getattr(assessment, "registered", None)
    model_input = getattr(assessment, "model_input", None)
    images["preproc_kind"] = None
    if registered is not None:
        mask = figures.template_brain_mask()
        if mask is not None and mask.shape != np.shape(registered):
            mask = None
        images["preproc"] = figures.mosaic_uris(registered, (2.0, 2.0, 2.0), contour=mask)
        images["preproc_kind"] = "registered" + ("+contour" if mask is not None else "")
    elif model_input is not None:
        images["preproc"] = figures.mosaic_uris(model_input, (2.5, 2.5, 2.5))
        images["preproc_kind"] = "model_input"
    else:
        images["preproc"] = {}
    if not images["raw"]:
        image_notes.append("No raw image to show" + (" (the scan could not be read)." if status == "error" else "."))
    if not images["preproc"]:
        image_notes.append("No preprocessed image" + (f" (failed at stage '{error.get('stage')}')."
                                                      if error else "."))
    sal_maps = {d: m for d, m in saliency.items()
                if model_input is not None and np.shape(m) == np.shape(model_input)}
    dropped = sorted(set(saliency) - set(sal_maps))
    if dropped:
        logger.warning("%s: saliency maps %s do not match the model input; not shown", bids_name, dropped)
    ordered = {d: sal_maps[d] for d in list(DETECTORS) + sorted(set(sal_maps) - set(DETECTORS)) if d in sal_maps}
    images["saliency"] = (figures.saliency_strips(model_input, ordered) if ordered else None)
    images["legend"] = figures.heat_legend_uri() if ordered else None
    logger.debug("%s: report figures in %.3f s", bids_name, time.perf_counter() - t0)

    keys = annotation_keys(bids_name, record.get("entities"))
    return {
        "title": f"{bids_name} — bids_qc report",
        "bids_name": bids_name, "source_file": source, "status": status, "error": error,
        "tier": tier_info(record.get("tier")), "detectors": detectors, "metrics": metrics,
        "warnings": warnings, "model": model,
        "entities": {k: v for k, v in (record.get("entities") or {}).items() if v is not None},
        "preprocessing": _flatten(record.get("preprocessing") or {}),
        "timings": [(k, fmt(v, 3)) for k, v in (record.get("timings") or {}).items()],
        "software": record.get("software") or {"name": "bids_qc", "version": __version__},
        "images": images, "image_notes": image_notes,
        "positive": list(ordered),
        "saliency_empty": [d for d in ordered if not float(np.max(ordered[d])) > 0],
        # ratings are kept in the browser per derivatives folder: the report sits in
        # <root>/sub-X/[ses-Y/]anat/, so the root is 2 or 3 levels up
        "rating": {**keys, "root": "../" * (3 if keys["session"] != "n/a" else 2),
                   "model": {a: grades.get(a) for a in ARTEFACTS}, "model_tier": record.get("tier")},
        "annotation_columns": ANNOTATION_COLUMNS,
        "record_text": json.dumps(record, indent=2), "version": __version__,
        "generated": time.strftime("%Y-%m-%d %H:%M"),
    }


def render_participant_report(assessment) -> str:
    """HTML text of the report of one scan (``bids_qc.scan.ScanAssessment``)."""
    return _render("participant.html.j2", participant_context(assessment))


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_participant_report(assessment, html_path) -> Path:
    """Render and write the participant report to ``html_path`` (parents created)."""
    return _write_text(Path(html_path), render_participant_report(assessment))


# --------------------------------------------------------------------------- group
SCANNER_KEYS = ("Manufacturer", "ManufacturersModelName", "MagneticFieldStrength")
_ENTITY_COLUMNS = ("session", "run", "acquisition", "task", "reconstruction", "ceagent", "part",
                   "chunk", "echo", "inversion")


def _bids_root(source_file: str) -> Path | None:
    """Nearest parent of an absolute ``source_file`` holding dataset_description.json, or None."""
    try:
        folder = Path(source_file).resolve().parent
    except (OSError, RuntimeError):
        return None
    for candidate in [folder, *folder.parents][:6]:
        if (candidate / "dataset_description.json").is_file():
            return candidate
    return None


def source_datasets(out_dir: Path) -> list[Path]:
    """Local source dataset folders named in ``out_dir/dataset_description.json``
    (``SourceDatasets[].URL`` of the form ``file:///...``)."""
    from urllib.parse import unquote, urlparse

    try:
        desc = json.loads((Path(out_dir) / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return []
    roots = []
    for entry in desc.get("SourceDatasets") or []:
        url = str((entry or {}).get("URL") or "")
        if url.startswith("file://"):
            path = Path(unquote(urlparse(url).path))
            if path.is_dir():
                roots.append(path)
    return roots


def _participants_sites(root: Path) -> dict:
    """participant_id -> site from ``participants.tsv`` (``site`` column), or {}."""
    import pandas as pd

    tsv = root / "participants.tsv"
    if not tsv.is_file():
        return {}
    try:
        df = pd.read_csv(tsv, sep="\t", dtype=str, na_values=["n/a"], keep_default_na=False)
    except Exception as exc:  # a broken participants.tsv must not break the report
        logger.warning("cannot read %s: %s", tsv, exc)
        return {}
    if "participant_id" not in df or "site" not in df:
        return {}
    return {str(p): s for p, s in zip(df["participant_id"], df["site"], strict=False) if isinstance(s, str) and s}


def _sidecar_metadata(source_file: str, root: Path) -> dict:
    """JSON sidecar fields for one image, following the BIDS inheritance principle."""
    path = Path(source_file)
    stem = bids_stem(path)
    parts = stem.split("_")
    suffix, entities = parts[-1], set(parts[:-1])
    try:
        rel_dirs = path.resolve().parent.relative_to(root).parts
    except (ValueError, OSError):
        return {}
    meta, folder = {}, root
    for level in range(len(rel_dirs) + 1):
        if level:
            folder = folder / rel_dirs[level - 1]
        candidates = []
        for js in folder.glob(f"*{suffix}.json"):
            jparts = js.name[: -len(".json")].split("_")
            if jparts[-1] == suffix and set(jparts[:-1]) <= entities:
                candidates.append((len(jparts), js))
        for _, js in sorted(candidates):
            try:
                meta.update(json.loads(js.read_text()))
            except (OSError, ValueError):
                logger.warning("cannot read sidecar %s", js)
    return meta


def _scanner_label(meta: dict) -> str | None:
    parts = [str(meta[k]) for k in SCANNER_KEYS[:2] if meta.get(k)]
    if meta.get("MagneticFieldStrength"):
        parts.append(f"{fmt(meta['MagneticFieldStrength'])} T")
    return " ".join(parts) or None


def _add_site_scanner(df, out_dir: Path):
    """Add ``site`` (participants.tsv) and ``scanner`` (JSON sidecars) columns when found.

    ``source_file`` may be absolute, or relative to a source dataset named in the
    derivatives' dataset_description.json (as the BIDS-App writes it).
    """
    if "source_file" not in df:
        return df
    sources = source_datasets(out_dir)
    roots: dict[str, tuple[Path | None, str]] = {}
    sites, scanners = [], []
    site_maps: dict[Path, dict] = {}
    for src, subj in zip(df["source_file"], df["subject"], strict=False):
        src = "" if _missing(src) else str(src)
        if src not in roots:
            if src and Path(src).is_absolute():
                roots[src] = (_bids_root(src), src)
            else:
                found = [r for r in sources if (r / src).exists()] or sources
                roots[src] = (found[0], str(found[0] / src)) if (found and src) else (None, src)
        root, full = roots[src]
        if root is None:
            sites.append(None)
            scanners.append(None)
            continue
        if root not in site_maps:
            site_maps[root] = _participants_sites(root)
        sites.append(site_maps[root].get(f"sub-{_label(subj)}"))
        scanners.append(_scanner_label(_sidecar_metadata(full, root)))
    if "site" not in df and any(s is not None for s in sites):
        df["site"] = sites
    if "scanner" not in df and any(s is not None for s in scanners):
        df["scanner"] = scanners
    return df


def _num(value):
    if _missing(value) or isinstance(value, str):
        try:
            return float(value) if isinstance(value, str) and value not in ("", "n/a") else None
        except ValueError:
            return None
    try:
        val = float(value)
    except (TypeError, ValueError):
        return None
    return val if math.isfinite(val) else None


def _error_text(value) -> str:
    if isinstance(value, dict):
        stage = value.get("stage")
        return f"{value.get('message') or value.get('type') or value}" + (f" (stage: {stage})" if stage else "")
    return "" if _missing(value) else str(value)


def _bool(value):
    if _missing(value):
        return None
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _proxy_uncertainty(probs: list) -> float | None:
    """Closeness of the least certain detector to 0.5: max over detectors of 1 - |2p - 1|."""
    vals = [1.0 - abs(2.0 * p - 1.0) for p in probs if p is not None]
    return max(vals) if vals else None


def _score(value, key: str = "balanced_accuracy"):
    """A score given as a number, or as a dict of scores (``key`` picked)."""
    return _num(value.get(key)) if isinstance(value, dict) else _num(value)


def _before_after(before, after, key: str = "balanced_accuracy") -> dict:
    b, a = _score(before, key), _score(after, key)
    return {"before": "n/a" if b is None else f"{b:.3f}", "after": "n/a" if a is None else f"{a:.3f}",
            "change": "n/a" if a is None or b is None else f"{a - b:+.3f}",
            "better": None if a is None or b is None else a > b}


TIER_DECISIONS = {"tier_12_vs_3": "reject (tier 3) vs keep", "tier_1_vs_2": "medium (tier 2) vs good"}


def finetune_context(finetune: dict) -> dict:
    """Group fine-tuning results -> tables of CV balanced accuracy before/after.

    Accepts the summary of :func:`bids_qc.finetune_group.run_group_finetuning` (``detectors``:
    {name: {status, n_scans, before: {balanced_accuracy, ...}, after: {...}}}, ``tiers``:
    {n_scans, before: {decision: scores}, after: ...}, plus scalars) and the simple form
    {detector: {"before": 0.7, "after": 0.8}, ...}.
    """
    finetune = plain(finetune)
    dets = finetune.get("detectors")
    if not isinstance(dets, dict):
        dets = {k: v for k, v in finetune.items() if isinstance(v, dict) and ("before" in v or "status" in v)}
    rows = []
    for name, v in dets.items():
        if not isinstance(v, dict):
            continue
        n = v.get("n_scans")
        if n is None and isinstance(v.get("before"), dict):
            n = (v["before"].get("n_positive") or 0) + (v["before"].get("n_negative") or 0) or None
        if n is None and "n_positive" in v:
            n = f"{v.get('n_positive', 0)} pos / {v.get('n_negative', 0)} neg"
        rows.append({"name": name, "status": v.get("status", ""), "n": fmt(n),
                     **_before_after(v.get("before"), v.get("after"))})
    tiers, tiers_n = [], None
    tier_info_ = finetune.get("tiers")
    if isinstance(tier_info_, dict) and isinstance(tier_info_.get("before"), dict):
        tiers_n = tier_info_.get("n_scans")
        for key, label in TIER_DECISIONS.items():
            if key in tier_info_["before"]:
                tiers.append({"name": label, **_before_after(tier_info_["before"].get(key),
                                                             (tier_info_.get("after") or {}).get(key))})
    used = {"detectors", "tiers"} | set(dets)
    scalars = [(k, v if isinstance(v, str) else (json.dumps(v) if isinstance(v, (dict, list)) else fmt(v, 4)))
               for k, v in finetune.items() if k not in used]
    return {"scalars": scalars, "detectors": rows, "tiers": tiers, "tiers_n": tiers_n}


def group_context(table, html_path: Path, out_dir: Path, *, finetune: dict | None = None) -> dict:
    """Everything the group template shows; ``table`` is the per-scan DataFrame."""
    import pandas as pd

    df = pd.DataFrame(table).copy().reset_index(drop=True)
    if "bids_name" not in df:
        if "source_file" not in df:
            raise BidsQcError("group report: the table needs a bids_name or source_file column")
        df["bids_name"] = [bids_stem(s) for s in df["source_file"]]
    if "subject" not in df:
        df["subject"] = [annotation_keys(str(n))["participant_id"] for n in df["bids_name"]]
    df = _add_site_scanner(df, out_dir)
    entity_cols = [c for c in _ENTITY_COLUMNS
                   if c in df and any(_label(v) != "n/a" for v in df[c])]
    group_cols = [c for c in ("site", "scanner") if c in df and df[c].notna().any()]
    has_review, has_unc = "needs_review" in df, "uncertainty" in df

    rows = []
    for rec in df.to_dict("records"):
        name = str(rec["bids_name"])
        keys = annotation_keys(name, {"subject": rec.get("subject"), "session": rec.get("session"),
                                      "run": rec.get("run")})
        subject = keys["participant_id"]
        rel = Path(subject) / (f"ses-{keys['session']}" if keys["session"] != "n/a" else "") / "anat"
        target = out_dir / rel / f"{name}_qc.html"
        link = quote(Path(os.path.relpath(target, html_path.parent)).as_posix(), safe="/")
        status = "error" if str(rec.get("status", "ok")).lower() == "error" else "ok"
        probs = {d: _num(rec.get(f"p_{d}")) for d in DETECTORS}
        unc = _num(rec.get("uncertainty")) if has_unc else _proxy_uncertainty(list(probs.values()))
        grades = {a: _int_or_none(rec.get(f"grade_{a}")) for a in ARTEFACTS}
        rows.append({
            "bids_name": name, "link": link, "ids": keys, "status": status,

            "error": _error_text(rec.get("error")) if status == "error" else "",
            "entities": {c: _label(rec.get(c)) for c in entity_cols},
            "groups": {c: ("n/a" if _missing(rec.get(c)) else str(rec.get(c))) for c in group_cols},
            "tier": tier_info(rec.get("tier")), "grades": grades, "probs": probs,
            "metrics": {m: _num(rec.get(m)) for m in METRICS},
            "model_id": "" if _missing(rec.get("model_id")) else str(rec.get("model_id")),
            "needs_review": _bool(rec.get("needs_review")) if has_review else None,
            "uncertainty": unc,
        })

    ok = [r for r in rows if r["status"] == "ok"]
    tiers = {t: sum(r["tier"]["value"] == t for r in ok) for t in (1, 2, 3)}
    n_tiered = sum(tiers.values())
    tier_cards = [{**tier_info(t), "count": tiers[t],
                   "share": f"{100 * tiers[t] / n_tiered:.0f} %" if n_tiered else "n/a"} for t in (1, 2, 3)]
    errors = [r for r in rows if r["status"] == "error"]

    plots = {}
    if rows:
        names = ["tier 1", "tier 2", "tier 3", "error"]
        colours = [figures.TIER_COLOURS[k] for k in (1, 2, 3, None)]
        counts = [tiers[1], tiers[2], tiers[3], len(errors)]
        plots["tiers"] = Markup(figures.bar_chart(  # one series per bar, so each has its colour
            names, [("", colours[i], [counts[i] if j == i else 0 for j in range(4)]) for i in range(4)],
            stacked=True, legend=False, width=300))
        plots["grades"] = Markup(figures.bar_chart(
            list(ARTEFACTS), [(f"{g} {GRADE_LABELS[g]}", figures.GRADE_COLOURS[g],
                               [sum(r["grades"][a] == g for r in ok) for a in ARTEFACTS]) for g in (0, 1, 2)],
            width=380))
        tier_values = [r["tier"]["value"] if r["tier"]["value"] is not None else np.nan for r in ok]
        plots["metrics"] = [Markup(figures.histogram_chart(
            [np.nan if r["metrics"][m] is None else r["metrics"][m] for r in ok], tier_values,
            title=METRIC_INFO[m][0], legend=i == 0)) for i, m in enumerate(METRICS)]
        plots["probabilities"] = [Markup(figures.histogram_chart(
            [np.nan if r["probs"][d] is None else r["probs"][d] for r in ok], tier_values,
            title=d.replace("_", " "), legend=i == 0, value_range=(0.0, 1.0), bins=20))
            for i, d in enumerate(DETECTORS)]

    breakdowns = []
    for col in group_cols:
        by: dict[str, list] = {}
        for r in rows:
            by.setdefault(r["groups"][col], []).append(r)
        table_rows, shares = [], {}
        for label, members in sorted(by.items()):
            good = [m for m in members if m["status"] == "ok"]
            counts = {t: sum(m["tier"]["value"] == t for m in good) for t in (1, 2, 3)}
            counts[None] = len(members) - sum(counts.values())
            shares[label] = counts
            medians = {}
            for m in METRICS:
                vals = [g["metrics"][m] for g in good if g["metrics"][m] is not None]
                medians[m] = float(np.median(vals)) if vals else None
            table_rows.append({"label": label, "n": len(members), "errors": len(members) - len(good),
                               "tiers": counts, "medians": medians})
        breakdowns.append({"column": col, "rows": table_rows, "plot": Markup(figures.share_chart(shares))})

    def need_key(r):
        flag = 1 if r["needs_review"] else 0
        return (-flag, -(r["uncertainty"] if r["uncertainty"] is not None else -1.0), r["bids_name"])

    queue = sorted(ok, key=need_key)
    ft = finetune_context(finetune) if finetune else None
    models = sorted({r["model_id"] for r in rows if r["model_id"]})
    root = Path(os.path.relpath(out_dir, html_path.parent)).as_posix().rstrip("/") + "/"
    return {
        "title": "bids_qc group report", "rows": rows, "n": len(rows), "n_ok": len(ok),
        "n_error": len(errors), "errors": errors, "tier_cards": tier_cards, "plots": plots,
        "entity_cols": entity_cols, "group_cols": group_cols, "breakdowns": breakdowns,
        "has_review": has_review, "has_uncertainty": has_unc, "queue": queue,
        "finetune": ft, "models": models, "detectors": DETECTORS, "artefacts": ARTEFACTS,
        "metrics": [(m, METRIC_INFO[m][0]) for m in METRICS],
        "annotation_columns": ANNOTATION_COLUMNS, "version": __version__,
        "generated": time.strftime("%Y-%m-%d %H:%M"), "out_dir": str(out_dir), "root": root,
    }


def render_group_report(table, html_path, out_dir, *, finetune: dict | None = None) -> str:
    """HTML text of the group report (see :func:`write_group_report`)."""
    return _render("group.html.j2", group_context(table, Path(html_path), Path(out_dir),
                                                  finetune=finetune))


def write_group_report(table, html_path, out_dir, *, finetune: dict | None = None) -> Path:
    """Write the group report for ``table`` (one row per scan) to ``html_path``.

    ``out_dir`` is the derivatives folder holding ``sub-X/[ses-Y/]anat/<bids_name>_qc.html``;
    links are relative to ``html_path``. ``finetune`` (optional) holds group fine-tuning
    results, e.g. ``{"motion_moderate": {"before": 0.71, "after": 0.83}, "n_rated": 40}``.
    """
    html_path = Path(html_path)
    return _write_text(html_path, render_group_report(table, html_path, out_dir, finetune=finetune))
