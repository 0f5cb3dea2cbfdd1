"""The registration's stop condition reads as information, not as an error (issue 28)."""
from bids_qc.registration import stop_note


def test_iteration_budget_is_worded_as_information():
    note = stop_note("RegularStepGradientDescentOptimizerv4: Maximum number of iterations (40) "
                     "exceeded.")
    assert note.startswith("used its budget of 40 iterations (as planned")
    assert "exceeded" not in note and "Maximum" not in note
    assert stop_note("Convergence checker passed at iteration 9.") == (
        "Convergence checker passed at iteration 9.")
