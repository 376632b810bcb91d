import datasets
import numpy as np
import pandas as pd
import pytest

from fcn_llm.training.balancing import balance_answers, balanced_indices


def _frame() -> pd.DataFrame:
    rows = [("adhd", "judgment", "Yes")] * 3 + [("adhd", "judgment", "No")] * 9
    rows += [("age", "predictive", str(a)) for a in range(20, 30)]  # numbers: left alone
    rows += [("sex", "predictive", "male")] * 4 + [("sex", "predictive", "female")] * 2
    rows += [("ocd", "judgment", "No")] * 5  # one answer only: nothing to balance against
    return pd.DataFrame(rows, columns=["attribute", "paradigm", "answer"])


def test_majority_answers_are_subsampled_to_the_rarest():
    frame = _frame()
    kept = frame.loc[balanced_indices(frame, seed=0)]
    counts = kept.groupby(["attribute", "paradigm", "answer"]).size()
    assert counts[("adhd", "judgment", "Yes")] == counts[("adhd", "judgment", "No")] == 3
    assert counts[("sex", "predictive", "male")] == counts[("sex", "predictive", "female")] == 2
    assert (kept["attribute"] == "age").sum() == 10
    assert (kept["attribute"] == "ocd").sum() == 5


def test_balancing_is_seeded_and_keeps_every_minority_row():
    frame = _frame()
    a, b, c = (balanced_indices(frame, seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a, b)
    assert set(np.flatnonzero(frame["answer"] == "Yes")) <= set(a) and set(np.flatnonzero(frame["answer"] == "Yes")) <= set(c)


def test_dataset_balancing_and_missing_column():
    split = datasets.Dataset.from_pandas(_frame())
    assert len(balance_answers(split)) == 6 + 10 + 4 + 5
    with pytest.raises(ValueError, match="answer"):
        balanced_indices(_frame().drop(columns="answer"))
