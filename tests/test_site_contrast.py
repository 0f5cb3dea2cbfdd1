"""Contrast against the scan's own scanner at the group level (bids_qc.site_contrast): the drop
of ND-WGM from the median of the scanner group, its grade, and the tier it gives."""
import numpy as np
import pandas as pd
import pytest

from bids_qc.site_contrast import (
    MIN_SITE_SCANS,
    SITE_DROP_LIMITS,
    add_site_contrast,
    site_drops,
    site_grade,
    site_groups,
)
from bids_qc.verdict_counts import summary_line, tier_counts


def _site(nd_wgm, site, manufacturer="Siemens", grades=(0, 0, 0)):
    """Rows of ok scans of one scanner: the detectors' grades ``grades`` (motion, noise,
    contrast) for all, the ND-WGM values given."""
    tier = 1 if not any(grades) else (3 if 2 in grades else 2)
    return [{"status": "ok", "site": site, "manufacturer": manufacturer, "nd_wgm": v,
             "grade_motion": grades[0], "grade_noise": grades[1], "grade_contrast": grades[2],
             "tier": tier} for v in nd_wgm]


def _table(rows):
    table = pd.DataFrame(rows)
    for c in ("tier", "grade_motion", "grade_noise", "grade_contrast"):
        table[c] = pd.array(table[c], dtype="Int64")
    return table


def test_drop_is_measured_from_the_median_of_the_same_scanner():
    rng = np.random.default_rng(3)
    # two scanners whose clean contrast differs by more than a severe artefact changes it
    low = list(0.10 * (1 + 0.03 * rng.standard_normal(12)))
    high = list(0.20 * (1 + 0.03 * rng.standard_normal(12)))
    low[0], high[0] = 0.10 * 0.7, 0.20 * 0.85  # a severe drop on A, a moderate one on B
    table = _table(_site(low, "A") + _site(high, "B"))
    summary = add_site_contrast(table)
    grades = table["grade_contrast_site"].tolist()
    assert grades[0] == 2 and grades[12] == 1
    assert sum(g > 0 for g in grades) == 2  # none of the 22 normal scans
    assert table["tier_site"].tolist()[0] == 3 and table["tier_site"].tolist()[12] == 2
    assert summary["n_graded"] == 24 and summary["n_tier_changed"] == 2
    medians = sorted(g["median_nd_wgm"] for g in summary["groups"].values())
    assert medians[0] == pytest.approx(np.median(low)) and medians[1] == pytest.approx(np.median(high))
    # an absolute limit could not do this: B's damaged scan is above all of A's normal ones
    assert high[0] > max(low[1:])


def test_the_site_grade_replaces_the_detectors_contrast_grade():
    """A scan the detectors called contrast 2 while its ND-WGM is normal for its scanner gets
    tier 1 from the site (the detectors' other grades stay)."""
    nd = [0.12] * 11
    rows = _site(nd[:10], "A") + _site([0.12], "A", grades=(0, 0, 2)) + \
        _site([0.12], "A", grades=(1, 0, 2))
    table = _table(rows)
    add_site_contrast(table)
    assert table["tier"].tolist()[-2:] == [3, 3]
    assert table["grade_contrast_site"].tolist()[-2:] == [0, 0]
    assert table["tier_site"].tolist()[-2:] == [1, 2]


def test_small_groups_failed_scans_and_missing_values_get_no_site_grade():
    rows = _site([0.1] * (MIN_SITE_SCANS - 1), "small") + _site([0.1] * MIN_SITE_SCANS, "big")
    rows.append({"status": "error", "site": "big", "manufacturer": "Siemens", "nd_wgm": 0.01,
                 "grade_motion": None, "grade_noise": None, "grade_contrast": None, "tier": None})
    rows += _site([np.nan], "big")
    table = _table(rows)
    summary = add_site_contrast(table)
    site = table["grade_contrast_site"]
    assert site[: MIN_SITE_SCANS - 1].isna().all()  # too few scans of that scanner
    assert (site[MIN_SITE_SCANS - 1: 2 * MIN_SITE_SCANS - 1] == 0).all()
    assert site.iloc[-2:].isna().all()  # the failed scan and the scan without ND-WGM
    # the failed scan's ND-WGM does not enter the reference
    assert list(summary["groups"].values()) == [{"median_nd_wgm": 0.1, "n_scans": MIN_SITE_SCANS}]
    # no site grade: the tier of the detectors' grades
    assert table["tier_site"].tolist()[: MIN_SITE_SCANS - 1] == [1] * (MIN_SITE_SCANS - 1)


def test_groups_are_scanners_and_a_table_without_scanner_columns_is_one_group():
    table = pd.DataFrame({"site": ["A", "A", None], "manufacturer": ["GE", "Siemens", "GE"]})
    assert site_groups(table).nunique() == 3
    assert site_groups(pd.DataFrame({"nd_wgm": [0.1, 0.2]})).nunique() == 1
    drops, refs = site_drops([0.1, 0.1, 0.05, -1.0], ["g"] * 4, min_scans=3)
    assert refs == {"g": 0.1} and drops[2] == pytest.approx(0.5) and np.isnan(drops[3])


def test_grade_limits_and_the_log_line():
    low, high = SITE_DROP_LIMITS
    assert [site_grade(d) for d in (low - 1e-6, low, high - 1e-6, high, np.nan)] == [0, 1, 1, 2, None]
    table = _table(_site([0.1] * 11 + [0.05], "A"))
    summary = {"tiers": tier_counts(table), "contrast_site": add_site_contrast(table),
               "tiers_site": tier_counts(table, "tier_site")}
    line = summary_line(summary)
    assert "contrast against the scanner's median ND-WGM (12 scans, 1 changed tier): " \
           "1 good 11, 2 medium 0, 3 reject 1" in line


def test_the_group_report_shows_the_scanner_reference_and_the_changed_tiers(tmp_path):
    from bids_qc.reports import write_group_report

    rows = _site([0.11] * 11 + [0.07], "HH", grades=(0, 0, 0))
    rows += _site([0.11], "HH", grades=(0, 0, 2))  # detectors' false contrast alarm
    table = _table(rows)
    table["bids_name"] = [f"sub-{i:02d}_T1w" for i in range(len(table))]
    summary = add_site_contrast(table)
    text = write_group_report(table, tmp_path / "g.html", tmp_path, site_contrast=summary).read_text()
    section = text[text.index('id="site-contrast"'):]
    assert "HH | Siemens" in section and "0.11" in section
    changed = section[section.index('id="site-contrast-changed"'):]
    changed = changed[:changed.index("</table>")]
    assert "sub-11_T1w" in changed and "sub-12_T1w" in changed and "sub-00_T1w" not in changed
    assert "36.4 %" in changed  # 1 - 0.07 / 0.11
    assert "13 scans graded against their scanner" in section and "2 changes tier" in section
    # a table from before the site columns: no section
    old = _table(_site([0.1] * 3, "HH"))
    old["bids_name"] = ["sub-a_T1w", "sub-b_T1w", "sub-c_T1w"]
    assert 'id="site-contrast"' not in write_group_report(old, tmp_path / "o.html", tmp_path).read_text()


def test_the_log_says_when_no_scanner_group_is_large_enough():
    table = _table(_site([0.1] * 3, "A"))
    line = summary_line({"tiers": tier_counts(table), "contrast_site": add_site_contrast(table)})
    assert line.endswith(f"contrast against the scanner: no scanner group of {MIN_SITE_SCANS}+ scans")


@pytest.mark.slow
def test_real_scans_end_to_end_a_compressed_contrast_is_graded_against_its_scanner(tmp_path):
    """Ten real IXI scans and an eleventh made from one of them with its grey/white contrast
    compressed towards white matter (``WM * (I / WM) ** 0.6``, the independent benchmark's severe
    curve) through the app: the group level grades that one 2 against the scanner's median."""
    import shutil

    import nibabel as nib
    from conftest import DATA

    from bids_qc.cli.run import main

    source = DATA / "ixi"
    subjects = sorted(p.name for p in source.glob("sub-IXI*"))[:10]
    if len(subjects) < 10:
        pytest.skip(f"shared IXI data not found at {source}")
    bids = tmp_path / "ixi"
    for sub in subjects:
        shutil.copytree(source / sub, bids / sub)
    shutil.copy(source / "dataset_description.json", bids)
    img = nib.load(source / subjects[0] / "anat" / f"{subjects[0]}_T1w.nii.gz")
    data = np.asarray(img.dataobj, dtype=np.float32)
    head = data[data > 0.1 * data.max()]
    wm = float(np.percentile(head, 90))
    flat = (wm * (np.clip(data, 0, None) / wm) ** 0.6).astype(np.float32)
    (bids / "sub-flat" / "anat").mkdir(parents=True)
    nib.save(nib.Nifti1Image(flat, img.affine), bids / "sub-flat" / "anat" / "sub-flat_T1w.nii.gz")
    out = tmp_path / "out"
    assert main([str(bids), str(out), "participant", "--nprocs", "2", "--no-reports"]) == 0
    assert main([str(bids), str(out), "group", "--no-reports"]) == 0
    table = pd.read_csv(out / "group_T1w.tsv", sep="\t").set_index("subject")
    assert table["grade_contrast_site"].notna().all() and table["tier_site"].notna().all()
    assert table.loc["flat", "grade_contrast_site"] == 2 and table.loc["flat", "tier_site"] == 3
    assert table["nd_wgm_site_drop"].idxmax() == "flat"
    assert (table.drop(index="flat")["grade_contrast_site"] > 0).sum() <= 1
