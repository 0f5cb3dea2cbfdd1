"""Participant and group HTML reports: content, escaping, images, links, annotations, speed."""
from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from bids_qc.record import DETECTORS, METRICS, new_record, set_error
from bids_qc.reports import (
    ANNOTATION_COLUMNS,
    ReportTemplateError,
    mosaics,
    png_encoding,
    render_participant_report,
    write_group_report,
    write_participant_report,
)
from bids_qc.reports.formatting import annotation_keys, fmt
from bids_qc.reports.group_report import finetune_context, group_context
from bids_qc.reports.participant_report import participant_context

EVIL = "<script>alert('x')</script>"
PROBS = {"motion_moderate": 0.93, "motion_severe": 0.61, "noise_moderate": 0.12,
         "noise_severe": 0.02, "contrast_moderate": 0.55, "contrast_severe": 0.07}


def head(shape, rng) -> np.ndarray:
    """An ellipsoid 'head' with a darker core, plus a little noise."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    r = np.sqrt((grid ** 2).sum(0))
    vol = np.where(r < 0.8, 100.0, 0.0) - np.where(r < 0.4, 40.0, 0.0)
    return (vol + rng.normal(0, 2, shape)).astype(np.float32)


def assessment(bids_name="sub-01_ses-1_run-1_T1w", *, error=False, warnings=(), model_shape=(16, 20, 16),
               native_shape=(40, 48, 36), zooms=(1.0, 1.0, 1.5), trained=False, positives=None):
    rng = np.random.default_rng(0)
    record = new_record(f"/bids/{bids_name}.nii.gz")
    record.update(bids_name=bids_name, entities={"subject": "01", "session": "1", "run": 1},
                  model={"id": "conv5fc3-test-v1", "trained": trained, "dir": "/models/x"})
    record["warnings"] = list(warnings)
    if error:
        set_error(record, ValueError("file is empty (0 bytes)"), "load")
        return SimpleNamespace(record=record, native=None, native_zooms=None, model_input=None,
                               registered=None, saliency={})
    record.update(probabilities=dict(PROBS), grades={"motion": 2, "noise": 0, "contrast": 1}, tier=3,
                  metrics={"snr": 21.5, "nd_wgm": 0.31, "aes": None, "tenengrad": 3.2},
                  metrics_notes={"aes": "no edges found"},
                  preprocessing={"registration": {"cost": 0.18, "transform": np.eye(4)}, "n4": True},
                  timings={"load": 0.01, "inference": 0.2},
                  slab_motion={"model_id": "slab-test-v1", "score": 0.8123, "threshold": 0.42,
                               "motion": True, "n_triplets": 57, "fused": True})
    model_input = np.clip(head(model_shape, rng) / 100, 0, 1)
    positives = [d for d, p in PROBS.items() if p >= 0.5] if positives is None else positives
    blob = np.zeros(model_shape, np.float32)
    blob[10:14, 12:18, 8:12] = 1.0
    return SimpleNamespace(record=record, native=head(native_shape, rng), native_zooms=zooms,
                           model_input=model_input.astype(np.float32),
                           registered=head((30, 36, 28), rng), saliency={d: blob for d in positives})


def decode_png(uri: str) -> np.ndarray:
    image = pytest.importorskip("PIL.Image")
    return np.asarray(image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def section(text: str, ident: str) -> str:
    start = text.index(f'id="{ident}"')
    return text[start: text.index("</section>", start)]


# --------------------------------------------------------------------------- participant
def test_participant_report_marks_detectors_at_their_own_thresholds():
    thresholds = {d: 0.5 for d in DETECTORS} | {"motion_severe": 0.7, "contrast_moderate": 0.2,
                                                 "noise_moderate": 0.6}
    case = assessment(positives=[])
    case.record["model"]["thresholds"] = thresholds
    fired = {s["name"]: s["positive"] for d in participant_context(case)["detectors"]
             for s in d["severities"]}
    # P 0.61 < 0.7 does not fire, 0.55 >= 0.2 does; nothing is judged at 0.5 when thresholds are known
    assert fired == {d: PROBS[d] >= thresholds[d] for d in DETECTORS}
    assert fired["motion_severe"] is False and fired["contrast_moderate"] is True
    # a record without thresholds (older run) shows the detectors that have a saliency map
    old = assessment(positives=["noise_severe"])
    fired = {s["name"]: s["positive"] for d in participant_context(old)["detectors"]
             for s in d["severities"]}
    assert [d for d, f in fired.items() if f] == ["noise_severe"]


def test_participant_report_draws_each_detectors_own_threshold_line():
    thresholds = {d: round(0.5 + 0.07 * i, 2) for i, d in enumerate(DETECTORS)}
    case = assessment()
    case.record["model"]["thresholds"] = thresholds
    text = render_participant_report(case)
    lines = re.findall(r'<tr class="[^"]*" data-detector="(\w+)">.*?<i class="threshold" '
                       r'data-threshold="([\d.]+)" style="left: ([\d.]+)%"', text, re.S)
    assert [(d, float(t), float(left)) for d, t, left in lines] == [
        (d, thresholds[d], round(100 * thresholds[d], 1)) for d in DETECTORS]
    assert "marks P = 0.5" not in text
    # without known thresholds no line is drawn (none is guessed at 0.5)
    assert 'class="threshold"' not in render_participant_report(assessment())


def test_participant_report_shows_everything():
    text = render_participant_report(assessment())
    assert "<title>sub-01_ses-1_run-1_T1w" in text
    assert "tier 3 · reject" in text
    verdict = section(text, "verdict")
    for det in DETECTORS:
        assert f'data-detector="{det}"' in verdict
    for p in ("0.93", "0.61", "0.12", "0.02", "0.55", "0.07"):
        assert f">{p}<" in verdict
    assert "21.5" in verdict and "0.31" in verdict and "no edges found" in verdict
    slab = text[text.index('id="slab-motion"'):]
    slab = slab[:slab.index("</table>")]
    assert "0.812" in slab and "<strong>motion</strong>" in slab and "57" in slab and "slab-test-v1" in slab
    assert re.search(r"read into the motion grade</th><td>yes<", slab)
    assert "untrained" in section(text, "verdict") or "untrained" in text.split('id="verdict"')[0]
    # two mosaics x three orientations, embedded
    images = section(text, "images")
    assert images.count('src="data:image/png;base64,') == 6
    # saliency: 3 positive detectors x 3 orientations of overlays, on a base mosaic
    sal = section(text, "saliency")
    assert sal.count('class="overlay"') == 9
    assert 'value="motion_moderate"' in sal and 'value="noise_moderate"' not in sal
    # preprocessing record and model id
    details = section(text, "details")
    assert "registration.cost" in details and "0.18" in details and "conv5fc3-test-v1" in text
    # the rating widget carries the annotation keys
    rating = section(text, "rating")
    assert 'data-bids-name="sub-01_ses-1_run-1_T1w"' in rating
    assert 'data-participant-id="sub-01"' in rating and 'data-session="1"' in rating
    assert 'data-run="1"' in rating and 'data-model-motion="2"' in rating
    assert 'data-root="../../../"' in rating  # <root>/sub-01/ses-1/anat/: ratings kept per root
    for field in ("motion", "noise", "contrast", "tier_override", "comment"):
        assert f'data-field="{field}"' in rating
    assert json.dumps(list(ANNOTATION_COLUMNS)) in text


def test_report_is_self_contained():
    text = render_participant_report(assessment())
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), "external resource"
    assert "<link" not in text and "@import" not in text
    assert not re.search(r"<script[^>]+src=", text)


def test_error_scan_renders_the_reason_without_images():
    text = render_participant_report(assessment(error=True))
    err = text[text.index('id="error"'):]
    assert "file is empty (0 bytes)" in err[:400] and "load" in err[:400]
    assert 'src="data:image/png' not in section(text, "images")
    assert "No raw image" in text
    assert 'class="overlay"' not in text
    assert ">error</span>" in text


def test_untrained_and_pipeline_warnings_are_shown():
    text = render_participant_report(assessment(warnings=["partial coverage: cerebellum cut"]))
    warn = text[text.index('id="warnings"'):text.index('id="verdict"')]
    assert "partial coverage: cerebellum cut" in warn and "untrained" in warn
    trained = render_participant_report(assessment(trained=True))
    assert 'id="warnings"' not in trained


def test_injected_strings_render_as_text():
    a = assessment(bids_name=f"sub-01_acq-{EVIL}_T1w", warnings=[EVIL])
    a.record["error"] = None
    a.record["preprocessing"]["note"] = EVIL
    text = render_participant_report(a)
    assert EVIL not in text
    assert html.escape(EVIL) in text or "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in text
    # the JSON record in the page cannot close its element either
    assert "</script>alert" not in text


def test_no_saliency_when_no_detector_is_positive():
    text = render_participant_report(assessment(positives=[]))
    assert 'class="overlay"' not in text and 'id="no-saliency"' in text


def test_mismatched_saliency_map_is_dropped():
    a = assessment()
    a.saliency["motion_moderate"] = np.zeros((5, 5, 5), np.float32)
    ctx = participant_context(a)
    assert ctx["positive"] == ["motion_severe", "contrast_moderate"]


def test_write_participant_report(tmp_path):
    target = tmp_path / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_run-1_T1w_qc.html"
    out = write_participant_report(assessment(), target)
    assert out == target and target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert not list(target.parent.glob(".*tmp"))


def test_missing_templates_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("BIDS_QC_TEMPLATES", str(tmp_path / "nowhere"))
    with pytest.raises(ReportTemplateError, match="report templates not found in .*nowhere"):
        render_participant_report(assessment())
    with pytest.raises(FileNotFoundError):
        write_group_report(pd.DataFrame({"bids_name": ["sub-01_T1w"]}), tmp_path / "g.html", tmp_path)


# --------------------------------------------------------------------------- helpers
@pytest.mark.parametrize("name, entities, expected", [
    ("sub-01_ses-1_run-1_T1w", None, ("sub-01", "1", "1")),
    ("sub-01_ses-1_run-01_T1w", {"subject": "01", "session": "1", "run": 1}, ("sub-01", "1", "01")),
    ("sub-IXI012_T1w", {"subject": "IXI012"}, ("sub-IXI012", "n/a", "n/a")),
    ("sub-02_acq-MPRAGE_T1w", {"subject": "02", "session": None, "run": float("nan")},
     ("sub-02", "n/a", "n/a")),
    ("weird", {"subject": "sub-07", "run": 2.0}, ("sub-07", "n/a", "2")),
    ("sub-01_run-a_T1w", None, ("sub-01", "n/a", "a")),  # a label pybids would drop (not digits)
])
def test_annotation_keys(name, entities, expected):
    keys = annotation_keys(name, entities)
    assert (keys["participant_id"], keys["session"], keys["run"]) == expected
    assert keys["bids_name"] == name


def test_fmt():
    assert fmt(None) == "n/a" and fmt(float("nan")) == "n/a" and fmt(3) == "3"
    assert fmt(0.12345) == "0.123" and fmt(21.54) == "21.5" and fmt(1e-5) == "1.00e-05"


def test_png_round_trip_and_slice_orientation():
    vol = np.zeros((20, 30, 40), np.float32)
    vol[2:6, :, 30:38] = 1.0  # subject's left (low x), superior (high z)
    img = mosaics.display_slice(vol, 1, 15)  # coronal: rows top = superior, columns left = L
    assert img.shape == (40, 20)
    assert img[2:10, 2:6].min() == 1.0 and img.sum() == 8 * 4  # top-left block only
    grey = (np.arange(12 * 7).reshape(12, 7) * 3).astype(np.uint8)
    assert np.array_equal(decode_png(png_encoding.data_uri(png_encoding.png_bytes(grey))), grey)
    rgba = np.random.default_rng(0).integers(0, 255, (5, 9, 4)).astype(np.uint8)
    assert np.array_equal(decode_png(png_encoding.data_uri(png_encoding.png_bytes(rgba))), rgba)


def test_mosaic_keeps_true_aspect_ratio():
    vol = head((30, 30, 15), np.random.default_rng(0))  # 1 x 1 x 2 mm voxels: a 30 mm cube
    strip, slices = mosaics.mosaic_strip(vol, (1.0, 1.0, 2.0), "sagittal", n=3, height=60)
    # stored at the slice's own resolution (30 px for 30 mm at 1 mm), square tiles, 3 px gaps
    assert len(slices) == 3 and strip.shape == (32, 3 * 32 + 2 * 3)
    assert mosaics.display_size(strip, 60) == (round(102 * 60 / 32), 60)
    big, _ = mosaics.mosaic_strip(head((200, 200, 100), np.random.default_rng(0)), (1.0, 1.0, 2.0),
                                  "coronal", n=2, height=60)
    assert big.shape == (60, 2 * 60 + 3)  # a 200 mm square: never stored above the tile height


def test_slices_avoid_empty_background():
    vol = np.zeros((50, 50, 50), np.float32)
    vol[20:30, 15:35, 10:40] = 100.0
    vol += np.random.default_rng(0).normal(0, 1, vol.shape).astype(np.float32)
    first, last = mosaics.foreground_ranges(vol)[0]
    assert 18 <= first <= 20 and 29 <= last <= 31
    assert all(20 <= s <= 29 for s in mosaics.pick_slices((first, last), 4))


# --------------------------------------------------------------------------- group
@pytest.fixture()
def bids_tree(tmp_path):
    root = tmp_path / "bids"
    (root / "sub-01" / "ses-1" / "anat").mkdir(parents=True)
    for s in ("02", "03", "04"):
        (root / f"sub-{s}" / "anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.9.0"}')
    (root / "participants.tsv").write_text(
        "participant_id\tsite\tage\nsub-01\tHH\t30\nsub-02\tGuys\t40\nsub-03\tHH\tn/a\nsub-04\tn/a\t50\n")
    (root / "T1w.json").write_text(json.dumps({"Manufacturer": "Philips", "MagneticFieldStrength": 3}))
    (root / "sub-02" / "anat" / "sub-02_T1w.json").write_text(json.dumps({"MagneticFieldStrength": 1.5}))
    return root


def group_table(root: Path) -> pd.DataFrame:
    rows = []
    specs = [("sub-01_ses-1_T1w", "01", "1", "ok", 1, False, 0.10),
             ("sub-02_T1w", "02", None, "ok", 2, True, 0.40),
             ("sub-03_T1w", "03", None, "error", None, None, None),
             (f"sub-04_acq-{EVIL}_T1w", "04", None, "ok", 3, False, 0.90)]
    for i, (name, sub, ses, status, tier, review, unc) in enumerate(specs):
        anat = root / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "anat"
        row = {"bids_name": name, "source_file": str(anat / f"{name}.nii.gz"), "subject": sub,
               "session": ses, "run": None, "acquisition": None, "status": status,
               "error": "file is empty (0 bytes)" if status == "error" else None, "tier": tier,
               "grade_motion": None if tier is None else tier - 1, "grade_noise": 0 if tier else None,
               "grade_contrast": 1 if tier else None,
               **{f"p_{d}": (None if tier is None else 0.1 * (i + 1)) for d in DETECTORS},
               "snr": None if tier is None else 10.0 + i, "nd_wgm": 0.3, "aes": 0.5, "tenengrad": 2.0 + i,
               "model_id": "conv5fc3-test-v1", "needs_review": review, "uncertainty": unc}
        rows.append(row)
    return pd.DataFrame(rows)


def test_group_report_content(tmp_path, bids_tree):
    out = tmp_path / "derivatives"
    finetune = {"n_rated": 12, "motion_severe": {"before": 0.70, "after": 0.81}}
    path = write_group_report(group_table(bids_tree), out / "group_qc.html", out, finetune=finetune)
    text = path.read_text(encoding="utf-8")
    assert "Group report · 4 scans" in text
    summary = section(text, "summary")
    assert re.search(r'data-tier="1"><div class="n">1</div><div class="l">tier 1 · good · 33 %', summary)
    assert '<div class="n">1</div><div class="l">in error' in summary
    # plots are embedded PNGs
    assert section(text, "distributions").count("<svg") == 3 + len(METRICS) + 6  # tiers, grades, slab
    # links follow sub-X/[ses-Y/]anat/<bids_name>_qc.html relative to the report
    assert 'href="sub-01/ses-1/anat/sub-01_ses-1_T1w_qc.html"' in text
    assert 'href="sub-02/anat/sub-02_T1w_qc.html"' in text
    # errors listed with their reason
    errors = section(text, "errors")
    assert "sub-03_T1w" in errors and "file is empty (0 bytes)" in errors
    # site from participants.tsv and scanner from sidecars (inheritance: sub-02 overrides field strength)
    breakdown = section(text, "breakdown")
    assert "<td>HH</td>" in breakdown and "<td>Guys</td>" in breakdown and "<td>n/a</td>" in breakdown
    assert "Philips 3 T" in breakdown and "Philips 1.5 T" in breakdown
    # fine-tuning
    ft = section(text, "finetune")
    assert "motion_severe" in ft and "0.700" in ft and "+0.110" in ft and "n_rated" in ft
    # the injected name is text
    assert EVIL not in text and "&lt;script&gt;" in text
    # queue: needs_review first, then uncertainty descending; error scans excluded
    queue = section(text, "rating-queue")
    order = re.findall(r'<tr class="rating"[^>]*data-bids-name="([^"]+)"', queue)
    assert [html.unescape(n) for n in order] == ["sub-02_T1w", f"sub-04_acq-{EVIL}_T1w", "sub-01_ses-1_T1w"]
    assert 'data-session="1"' in queue and 'data-participant-id="sub-02"' in queue


def test_group_links_are_relative_to_the_report(tmp_path, bids_tree):
    ctx = group_context(group_table(bids_tree), tmp_path / "elsewhere" / "g.html", tmp_path / "out")
    assert ctx["rows"][0]["link"] == "../out/sub-01/ses-1/anat/sub-01_ses-1_T1w_qc.html"


def test_group_without_optional_columns(tmp_path):
    table = pd.DataFrame({"bids_name": ["sub-01_T1w", "sub-02_T1w"], "status": ["ok", "ok"],
                          "tier": [1, 2], "p_motion_moderate": [0.5, 0.95],
                          "p_noise_moderate": [0.1, 0.02]})
    ctx = group_context(table, tmp_path / "g.html", tmp_path)
    assert not ctx["has_review"] and not ctx["has_uncertainty"] and ctx["group_cols"] == []
    # no thresholds, no uncertainty: none is guessed at 0.5
    assert [r["uncertainty"] for r in ctx["queue"]] == [None, None]
    # with the model's thresholds, the verdict's definition (bids_qc.review_priority): bits
    thresholds = {d: 0.9 for d in DETECTORS}
    ctx = group_context(table, tmp_path / "g.html", tmp_path, thresholds=thresholds)
    assert [r["bids_name"] for r in ctx["queue"]] == ["sub-02_T1w", "sub-01_T1w"]
    from bids_qc.review_priority import scan_review

    probs = {"motion_moderate": 0.95, "noise_moderate": 0.02}
    assert ctx["queue"][0]["uncertainty"] == scan_review(probs, thresholds)[0]  # p 0.95 vs 0.9
    assert ctx["queue"][1]["uncertainty"] < ctx["queue"][0]["uncertainty"]
    text = write_group_report(table, tmp_path / "g.html", tmp_path, thresholds=thresholds).read_text()
    assert "uncertainty*" in text and 'id="errors"' not in text and 'id="finetune"' not in text


def test_group_site_column_in_table_wins(tmp_path):
    table = pd.DataFrame({"bids_name": ["sub-01_T1w", "sub-02_T1w"], "status": ["ok", "error"],
                          "error": [None, "boom"], "tier": [1, None], "site": ["A", "B"]})
    ctx = group_context(table, tmp_path / "g.html", tmp_path)
    assert ctx["group_cols"] == ["site"]
    assert [(r["label"], r["n"], r["errors"]) for r in ctx["breakdowns"][0]["rows"]] == [("A", 1, 0), ("B", 1, 1)]


def test_finetune_summary_of_the_group_level():
    """The nested summary written by bids_qc.training.finetune_group is shown as before/after tables."""
    summary = {"model_id": "conv5fc3-ixi-v2.6-finetuned-2026-11-25", "n_rated": 40, "k_folds": 5,
               "detectors": {
                   "motion_severe": {"status": "fine-tuned", "n_scans": 40, "folds": 5,
                                     "before": {"balanced_accuracy": 0.62, "sensitivity": 0.5},
                                     "after": {"balanced_accuracy": 0.81, "sensitivity": 0.8}},
                   "noise_severe": {"status": "kept parent (too few ratings per class)",
                                    "n_positive": 1, "n_negative": 39}},
               "tiers": {"n_scans": 30, "before": {"tier_12_vs_3": {"balanced_accuracy": 0.7},
                                                   "tier_1_vs_2": {"balanced_accuracy": 0.6}},
                         "after": {"tier_12_vs_3": {"balanced_accuracy": 0.65},
                                   "tier_1_vs_2": {"balanced_accuracy": 0.75}}}}
    ctx = finetune_context(summary)
    det = {r["name"]: r for r in ctx["detectors"]}
    assert (det["motion_severe"]["before"], det["motion_severe"]["after"], det["motion_severe"]["change"]) \
        == ("0.620", "0.810", "+0.190")
    assert det["noise_severe"]["change"] == "n/a" and det["noise_severe"]["n"] == "1 pos / 39 neg"
    assert [(t["name"], t["change"]) for t in ctx["tiers"]] == [
        ("reject (tier 3) vs keep", "-0.050"), ("medium (tier 2) vs good", "+0.150")]
    assert ("n_rated", "40") in ctx["scalars"] and ctx["tiers_n"] == 30


def test_group_table_as_the_app_writes_it(tmp_path, bids_tree):
    """Nullable dtypes (pd.NA), source_file relative to the source dataset named in the
    derivatives' dataset_description.json: sites and scanners are still found."""
    out = tmp_path / "derivatives"
    out.mkdir()
    (out / "dataset_description.json").write_text(json.dumps(
        {"Name": "qc", "DatasetType": "derivative", "SourceDatasets": [{"URL": bids_tree.as_uri()}]}))
    table = group_table(bids_tree)
    table["source_file"] = [str(Path(p).relative_to(bids_tree)) for p in table["source_file"]]
    for col in ("subject", "session", "run", "acquisition"):
        table[col] = table[col].astype("string")
    for col in ("tier", "grade_motion", "grade_noise", "grade_contrast"):
        table[col] = pd.to_numeric(table[col]).astype("Int64")
    ctx = group_context(table, out / "group_report.html", out)
    assert ctx["entity_cols"] == ["session"]  # all-missing entity columns are not shown
    assert ctx["group_cols"] == ["site", "scanner"]
    assert [r["groups"]["site"] for r in ctx["rows"]] == ["HH", "Guys", "HH", "n/a"]
    assert ctx["rows"][2]["tier"]["value"] is None and ctx["rows"][0]["tier"]["value"] == 1
    assert ctx["rows"][1]["ids"]["session"] == "n/a" and ctx["root"] == "./"
    text = write_group_report(table, out / "group_report.html", out).read_text()
    assert 'data-root="./"' in text


@pytest.mark.parametrize("native", [
    np.zeros((20, 20, 20), np.float32),                       # constant
    np.full((8, 9, 10), np.nan, np.float32),                  # all NaN
    np.random.default_rng(0).normal(size=(3, 40, 40)).astype(np.float32),  # thin slab
    np.ones((10, 10, 10, 2), np.float32),                     # 4D: not shown, no crash
])
def test_degenerate_images_still_render(native):
    a = assessment()
    a.native = native
    a.native_zooms = (1.0, 1.0, 1.0)
    text = render_participant_report(a)
    assert "<title>" in text and 'id="images"' in text
