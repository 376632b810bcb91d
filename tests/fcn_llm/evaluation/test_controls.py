"""The controls: shuffled FCNs come from another subject of the same site; text-only questions carry no graph."""

import numpy as np
import pandas as pd
import pytest

from fcn_llm.evaluation.controls import shuffled_partners, without_graphs
from fcn_llm.evaluation.data import load_evaluation_data
from fcn_llm.questions import Question
from fcn_llm.evaluation.runner import _llm_inputs


def _table(sites: dict[str, int]) -> pd.DataFrame:
    rows = [{"subject_id": f"{site}_{i}", "dataset": site.split("-")[0], "site": site}
            for site, n in sites.items() for i in range(n)]
    return pd.DataFrame(rows)


def test_partners_are_other_subjects_of_the_same_site():
    table = _table({"A-1": 5, "A-2": 4, "B-1": 3})
    partners = shuffled_partners(table, range(len(table)), seed=0)
    assert set(partners) == set(table["subject_id"])
    site = dict(zip(table["subject_id"], table["site"]))
    for sid, other in partners.items():
        assert other != sid and site[other] == site[sid]
    assert sorted(partners.values()) == sorted(partners)  # every FCN is used exactly once


def test_single_subject_sites_swap_with_each_other_or_anyone():
    table = _table({"A-1": 3, "B-1": 1, "C-1": 1})
    partners = shuffled_partners(table, range(len(table)), seed=1)
    assert partners["B-1_0"] == "C-1_0" and partners["C-1_0"] == "B-1_0"
    alone = shuffled_partners(_table({"A-1": 3, "B-1": 1}), range(4), seed=1)
    assert alone["B-1_0"] != "B-1_0"
    with pytest.raises(ValueError, match="at least two"):
        shuffled_partners(table, [0])


def test_without_graphs_removes_every_placeholder_and_the_subjects():
    q = Question(id="q", group=("age", "comparative"), target="binary", reference=1, choices=("the first", "the second"),
                 subject_ids=("s1", "s2"),
                 messages=[{"role": "user", "content": "Subject 1: <graph>\nSubject 2: <graph>\nWhich is older?"}])
    stripped = without_graphs(q, "<graph>")
    assert stripped.messages[0]["content"] == "Subject 1: Subject 2: Which is older?"
    assert stripped.subject_ids == () and stripped.id == q.id and q.subject_ids == ("s1", "s2")


def test_llm_inputs_swap_fcns_or_drop_them(instruction_dir):
    data = load_evaluation_data(instruction_dir)
    rows = data.split_rows("zero_shot")
    ids = list(data.subjects["subject_id"].iloc[rows[:2]])
    q = Question(id="q", group=("adhd", "judgment"), target="binary", reference=1, choices=("Yes", "No"),
                 subject_ids=(ids[0],), messages=[{"role": "user", "content": "<graph>\nADHD?"}])

    class Processor:
        graph_token = "<graph>"

    _, own = _llm_inputs("fcn_llm", [q], data, rows, Processor(), seed=0)
    _, shuffled = _llm_inputs("fcn_llm_shuffled", [q], data, rows, Processor(), seed=0, conditions=frozenset({"adhd"}))
    partner = shuffled_partners(data.subjects, rows, seed=0)[ids[0]]
    np.testing.assert_array_equal(shuffled([ids[0]])[0], own([partner])[0])
    assert not np.array_equal(shuffled([ids[0]])[0], own([ids[0]])[0])
    asked, none = _llm_inputs("text_only", [q], data, rows, Processor(), seed=0, conditions=frozenset({"adhd"}))
    assert none(asked[0].subject_ids) == [] and "<graph>" not in asked[0].messages[0]["content"]


def test_text_only_asks_each_distinct_text_once():
    from fcn_llm.evaluation.runner import _distinct_texts

    def question(qid, sid, text):
        return Question(id=qid, group=("adhd", "judgment"), target="binary", reference=1, choices=("Yes", "No"),
                        subject_ids=(), messages=[{"role": "user", "content": text}])

    asked = [question("a", "s1", "ADHD?"), question("b", "s2", "ADHD?"), question("c", "s3", "Autism?")]
    distinct = _distinct_texts(asked)
    assert {k: v.id for k, v in distinct.items()} == {"a": "a", "b": "a", "c": "c"}


def test_shuffled_control_asks_scored_questions_in_training_wording_only(instruction_dir):
    import dataclasses

    data = load_evaluation_data(instruction_dir)
    rows = data.split_rows("zero_shot")
    sid = data.subjects["subject_id"].iloc[rows[0]]
    plain = Question(id="a", group=("adhd", "judgment"), target="binary", reference=1, choices=("Yes", "No"),
                     subject_ids=(sid,), messages=[{"role": "user", "content": "<graph>\nADHD?"}])
    held_out = dataclasses.replace(plain, id="b", held_out=True)
    generated = dataclasses.replace(plain, id="c", target="regression", choices=())

    class Processor:
        graph_token = "<graph>"

    asked, _ = _llm_inputs("fcn_llm_shuffled", [plain, held_out, generated], data, rows, Processor(), seed=0,
                           conditions=frozenset({"adhd"}))
    assert [q.id for q in asked] == ["a"]
    assert _llm_inputs("fcn_llm_shuffled", [plain], data, rows, Processor(), seed=0)[0] == []  # not a condition
    assert [q.id for q in _llm_inputs("fcn_llm", [plain, held_out], data, rows, Processor(), seed=0)[0]] == ["a", "b"]
