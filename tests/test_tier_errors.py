"""Which grade made each wrong tier (bids_qc.evaluation.tier_errors)."""
from bids_qc.evaluation.tier_errors import causes, tier_error_causes


def g(m, n, c):
    return {"motion": m, "noise": n, "contrast": c}


def test_each_direction_of_a_wrong_tier_names_its_grade():
    assert causes(g(2, 1, 0), g(1, 1, 0)) == ["severe motion missed"]
    assert causes(g(2, 0, 2), g(0, 0, 1)) == ["severe motion missed", "severe contrast missed"]
    assert causes(g(1, 0, 0), g(1, 2, 0)) == ["severe noise over-called"]
    assert causes(g(0, 0, 0), g(0, 0, 2)) == ["severe contrast over-called"]
    assert causes(g(0, 1, 0), g(0, 0, 0)) == ["noise missed"]
    assert causes(g(0, 0, 0), g(1, 0, 1)) == ["motion false alarm", "contrast false alarm"]


def test_a_right_tier_has_no_cause_even_with_wrong_grades():
    assert causes(g(1, 0, 0), g(0, 1, 0)) == []
    assert causes(g(2, 0, 0), g(0, 0, 2)) == []


def test_counts_over_rows():
    rows = [{"grades": g(2, 0, 0), "pred": g(1, 0, 0)}, {"grades": g(2, 1, 0), "pred": g(1, 1, 0)},
            {"grades": g(0, 0, 0), "pred": g(0, 1, 0)}, {"grades": g(1, 1, 1), "pred": g(1, 1, 1)}]
    assert tier_error_causes(rows) == {"n": 4, "wrong": 3, "causes": {"severe motion missed": 2,
                                                                       "noise false alarm": 1}}
