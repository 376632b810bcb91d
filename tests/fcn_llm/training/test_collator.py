import numpy as np
import pytest
import torch

from tests.conftest import random_fcns
from fcn_llm.training.collator import FCNInstructionCollator

ROWS = [
    {
        "id": "q1",
        "messages": [
            {"role": "user", "content": "<graph>\nDoes this subject have ADHD? Answer yes or no."},
            {"role": "assistant", "content": "Yes"},
        ],
        "answer": "Yes",
        "subject_ids": ["a"],
    },
    {
        "id": "q2",
        "messages": [{"role": "user", "content": "Subject 1: <graph>\nSubject 2: <graph>\nWhich subject is older, the first or the second?"}],
        "answer": "The second",
        "subject_ids": ["b", "a"],
    },
]


@pytest.fixture
def lookup():
    fcns = random_fcns(2)
    return {"a": fcns[0], "b": fcns[1]}


def test_only_answer_and_end_of_turn_carry_labels(processor, lookup):
    batch = FCNInstructionCollator(processor, lookup)(ROWS)
    tokenizer = processor.tokenizer
    for i, row in enumerate(ROWS):
        labelled = batch["labels"][i][batch["labels"][i] != -100]
        assert tokenizer.decode(labelled) == row["answer"] + processor.end_of_turn
    assert processor.end_of_turn == "<|im_end|>"
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


def test_graphs_follow_placeholder_order_and_are_normalised(processor, lookup):
    batch = FCNInstructionCollator(processor, lookup)(ROWS)
    expected = processor.prepare_fcns([lookup["a"], lookup["b"], lookup["a"]])
    torch.testing.assert_close(batch["graph_values"], torch.from_numpy(np.stack(expected)))
    g = processor.num_graph_tokens
    assert (batch["input_ids"] == processor.graph_token_id).sum(-1).tolist() == [g, 2 * g]


def test_batch_trains_the_tiny_model(processor, lookup, model):
    batch = FCNInstructionCollator(processor, lookup)(ROWS)
    loss = model(**batch).loss
    assert torch.isfinite(loss) and loss.requires_grad


def test_auxiliary_targets_per_graph(processor, lookup):
    targets = {"a": np.array([1.0, np.nan], dtype=np.float32)}
    batch = FCNInstructionCollator(processor, lookup, attribute_targets=targets, num_attribute_targets=2)(ROWS)
    labels = batch["graph_attribute_labels"]
    assert labels.shape == (3, 2)
    assert labels[0, 0] == 1 and torch.isnan(labels[1]).all()  # "b" has no targets


def test_routing_labels_index_the_rows_attribute(processor, lookup):
    rows = [dict(ROWS[0], attribute="adhd"), dict(ROWS[1], attribute="age"), dict(ROWS[0], attribute="iq")]
    batch = FCNInstructionCollator(processor, lookup, routing_keys=["adhd", "sex", "age"])(rows)
    assert batch["routing_labels"].tolist() == [0, 2, -100]  # "iq" has no head
    assert "routing_labels" not in FCNInstructionCollator(processor, lookup)(rows)


def test_question_labels_say_how_each_row_asks(processor, lookup):
    heads = [{"key": "adhd", "kind": "binary", "num_outputs": 1},
             {"key": "sex", "kind": "categorical", "num_outputs": 2, "classes": ["Female", "Male"]}]
    rows = [dict(ROWS[0], attribute="adhd", paradigm="judgment", negated=True),
            dict(ROWS[0], attribute="sex", paradigm="judgment", template_id="sex/j/0", asked_class="Male"),
            dict(ROWS[1], attribute="age", paradigm="comparative", direction=-1),
            dict(ROWS[0], attribute="sex", paradigm="predictive"),
            dict(ROWS[1], attribute="age", paradigm="judgment", direction=-1, negated=True)]
    batch = FCNInstructionCollator(processor, lookup, question_heads=heads,
                                   paradigms=["predictive", "judgment", "comparative"])(rows[:4])
    assert batch["paradigm_labels"].tolist() == [1, 1, 2, 0]
    assert batch["turn_labels"].tolist() == [1, 0, 1, -100]  # "ruled out?", plain, "younger?", not a judgment
    # "Is it false that this subject is younger than 40?": a double negative, left out of the turn classifier's loss
    assert FCNInstructionCollator(processor, lookup, question_heads=heads)(rows[4:])["turn_labels"].tolist() == [-100]
    signs = batch["sign_labels"]
    torch.testing.assert_close(signs[:, 0], torch.tensor([1.0, float("nan"), float("nan"), float("nan")]), equal_nan=True)
    torch.testing.assert_close(signs[1, 1:], torch.tensor([-1.0, 1.0]))  # asks "Male?"
    torch.testing.assert_close(signs[3, 1:], torch.tensor([1.0, 1.0]))  # asks no class
    assert torch.isnan(signs[2]).all()
    plain = FCNInstructionCollator(processor, lookup, paradigms=["judgment"])(rows)
    assert not {"paradigm_labels", "turn_labels", "sign_labels"} & set(plain)


def test_bad_rows_name_the_problem(processor, lookup):
    row = dict(ROWS[0], subject_ids=["a", "b"])
    with pytest.raises(ValueError, match=r"1 <graph> placeholder\(s\) but 2 subject id\(s\)"):
        FCNInstructionCollator(processor, lookup)([row])
    with pytest.raises(ValueError, match="over max_length=10"):
        FCNInstructionCollator(processor, lookup, max_length=10)([ROWS[0]])
    with pytest.raises(KeyError):
        FCNInstructionCollator(processor, lookup)([dict(ROWS[0], subject_ids=["zz"])])


def test_token_length_is_the_batch_rows_length_without_looking_up_fcns(processor, lookup):
    collator = FCNInstructionCollator(processor, lookup)
    for row in ROWS:
        assert collator.token_length(row) == int(collator([row])["attention_mask"].sum())
    never_looked_up = FCNInstructionCollator(processor, lambda sid: (_ for _ in ()).throw(AssertionError(sid)))
    assert never_looked_up.token_length(ROWS[0]) == collator.token_length(ROWS[0])
    with pytest.raises(ValueError, match="over max_length=10"):
        FCNInstructionCollator(processor, lookup, max_length=10).token_length(ROWS[0])
