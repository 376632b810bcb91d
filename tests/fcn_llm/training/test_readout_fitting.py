import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from fcn_llm.questions import FIRST, SECOND
from fcn_llm.scoring import choice_log_likelihoods
from tests.conftest import TINY_HEADS, make_tiny_model, random_fcns
from fcn_llm.training.collator import FCNInstructionCollator
from fcn_llm.training.readout_fitting import asked_class, choose_scale, fit_readout, fit_signs, fit_thresholds, named_threshold, readout_rows

SUBJECTS = [f"s{i}" for i in range(24)]
FCNS = dict(zip(SUBJECTS, random_fcns(len(SUBJECTS), seed=3)))
# adhd (binary head 0) alternates 0/1; sex (class index: 0 Female, 1 Male) in runs of 3; age (head 2,
# standardised) spread over [-2, 2]
TARGETS = {sid: np.array([i % 2, (i // 3) % 2, -2 + 4 * i / 23], dtype=np.float32) for i, sid in enumerate(SUBJECTS)}
SEX_QUESTIONS = ("<graph>\nIs this subject {}? Answer yes or no.", "<graph>\nIs the subject {}? Please answer yes or no.")
AGE_QUESTIONS = ("<graph>\nIs this subject older than {} years? Answer yes or no.",
                 "<graph>\nWould you say this subject is over {} years of age? Answer yes or no.")


def _rows(subjects=SUBJECTS, attribute="adhd"):
    rows = []
    for sid in subjects:
        answer = "Yes" if TARGETS[sid][0] == 1 else "No"
        rows.append({"id": sid, "attribute": attribute, "answer": answer, "subject_ids": [sid], "paradigm": "judgment",
                     "messages": [{"role": "user", "content": "<graph>\nDoes this subject have ADHD? Answer yes or no."},
                                  {"role": "assistant", "content": answer}]})
    return rows


def _sex_rows():
    """Judgments asking "female?" or "male?" (alternating), answered from the subject's class."""
    rows = []
    for i, sid in enumerate(SUBJECTS):
        asked = i % 2  # 0: female?, 1: male?
        answer = "Yes" if TARGETS[sid][1] == asked else "No"
        question = SEX_QUESTIONS[(i // 2) % 2].format(("female", "male")[asked])
        rows.append({"id": f"x{sid}", "attribute": "sex", "answer": answer, "subject_ids": [sid], "paradigm": "judgment",
                     "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})
    return rows


def _age_rows():
    """Threshold judgments about age (thresholds -1, 0, 1 in standardised units) and predictive questions."""
    rows = []
    for i, sid in enumerate(SUBJECTS):
        threshold = (-1, 0, 1)[i % 3]
        question = AGE_QUESTIONS[i % 2].format(threshold)
        answer = "Yes" if TARGETS[sid][2] > threshold else "No"
        rows.append({"id": f"j{sid}", "attribute": "age", "answer": answer, "subject_ids": [sid], "paradigm": "judgment",
                     "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})
        rows.append({"id": f"p{sid}", "attribute": "age", "answer": "30", "subject_ids": [sid], "paradigm": "predictive",
                     "messages": [{"role": "user", "content": "<graph>\nHow old is this subject?"},
                                  {"role": "assistant", "content": "30"}]})
    return rows


def llm_reading_the_column(monkeypatch, model, processor, column: int, response: float):
    """Stand in for the LLM's answers while the readout is fitted: each row's margin log P(Yes) - log P(No) is
    `response` x the signed scale now written in `column` (in embedding norms along "Yes" - "No") x (+1 for a
    "Yes" row, -1 for a "No" row), plus fixed noise; so the best scale's sign is the sign of `response`."""
    import fcn_llm.training.readout_fitting as readout_fitting

    unit = _word_column(model, processor, 1.0)
    noise = np.random.default_rng(0).normal(scale=0.5, size=10_000)

    def margins(model_, collate, rows, answers, bf16=False, batch_size=16):
        scale = float(model_.model.instruction_conditioning.out.weight[:, column] @ unit / (unit @ unit))
        said = np.array([1.0 if str(row["answer"]).startswith(("Yes", FIRST)) else -1.0 for row in rows])
        return response * scale * said + noise[: len(rows)]

    monkeypatch.setattr(readout_fitting, "answer_margins", margins)


@pytest.fixture
def collator(processor):
    return FCNInstructionCollator(processor, FCNS, attribute_targets=TARGETS, num_attribute_targets=len(TINY_HEADS),
                                  routing_keys=[h["key"] for h in TINY_HEADS])


def _word_column(model, processor, scale: float) -> torch.Tensor:
    """scale x the mean embedding norm x unit(E["Yes"] - E["No"])."""
    embeddings = model.get_input_embeddings().weight.detach()
    tokens = processor.tokenizer(["Yes", "No"], add_special_tokens=False)["input_ids"]
    direction = embeddings[tokens[0][0]] - embeddings[tokens[1][0]]
    return scale * embeddings.norm(dim=-1).mean() * direction / direction.norm()


@pytest.mark.parametrize("response", [1.0, -1.0])
def test_binary_columns_are_the_answers_word_embeddings_at_the_best_separating_signed_scale(
        processor, collator, monkeypatch, response):
    """An LLM whose answer follows the "Yes" - "No" direction gets a positive scale; one that reads it the other
    way round, a negative one."""
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    llm_reading_the_column(monkeypatch, model, processor, 0, response)
    report = fit_readout(model, collator, _rows(), per_class=6, scales=(1.0, 3.0))
    by_scale = report["auc"]["binary"]
    best = report["scale"]["binary"]
    # 0, then both signs of the middle magnitude, then the other magnitude with the better sign
    assert set(by_scale) == {0.0, 3.0, -3.0, 1.0 if by_scale[3.0] >= by_scale[-3.0] else -1.0}
    accuracy = report["accuracy"]["binary"]
    assert report["scale"] == {"binary": max(by_scale, key=lambda s: (accuracy[s], by_scale[s], -abs(s)))}
    assert np.sign(best) == response and by_scale[best] > by_scale[0.0]
    assert best != 0 and report["heads"] == ["adhd"]  # a column was written, not left at zero
    out = model.model.instruction_conditioning.out
    torch.testing.assert_close(out.weight[:, 0], _word_column(model, processor, report["scale"]["binary"]))
    assert torch.count_nonzero(out.weight[:, 1:]) == 0  # categorical and continuous heads are left to training
    assert torch.count_nonzero(out.bias) == 0


def test_with_a_readout_per_paradigm_only_the_judgments_columns_are_written(processor, collator, monkeypatch):
    """Judgments are read out in their paradigm's block of `out`; the predictive block ("ADHD"/"Control") is
    left to training."""
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True, evidence_paradigms=["predictive", "judgment"])
    conditioning = model.model.instruction_conditioning
    judgment = conditioning.evidence_column(0, "judgment")
    llm_reading_the_column(monkeypatch, model, processor, judgment, 1.0)
    report = fit_readout(model, collator, _rows(), per_class=6, scales=(1.0, 3.0))
    assert report["scale"]["binary"] != 0
    torch.testing.assert_close(conditioning.out.weight[:, judgment],
                               _word_column(model, processor, report["scale"]["binary"]))
    others = [c for c in range(conditioning.out.in_features) if c != judgment]
    assert torch.count_nonzero(conditioning.out.weight[:, others]) == 0


def test_reported_aucs_are_those_of_the_balanced_judgments_margins(processor, collator):
    """Each scale's number is the AUC of the compared rows' margins log P(Yes) - log P(No) at that scale."""
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    rows = _rows()
    report = fit_readout(model, collator, rows, per_class=12, scales=(2.0,))  # 12 per class: all 24 rows
    prompts = [processor.apply_chat_template(processor.prompt_messages(r["messages"]), add_generation_prompt=True) for r in rows]
    fcns = [[FCNS[r["subject_ids"][0]]] for r in rows]
    yes = np.array([r["answer"] == "Yes" for r in rows])
    for scale in (0.0, 2.0):
        with torch.no_grad():
            model.model.instruction_conditioning.out.weight[:, 0] = _word_column(model, processor, scale)
        ll = choice_log_likelihoods(model, processor, prompts, fcns, ["Yes", "No"])
        assert report["auc"]["binary"][scale] == pytest.approx(roc_auc_score(yes, ll[:, 0] - ll[:, 1]))


def test_thresholds_are_read_from_the_judgments(processor, collator):
    """The evidence's threshold for the age head: the judgment's number in the evidence's standardised units,
    0 for questions that name none; other heads' thresholds stay zero."""
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    conditioning = model.model.instruction_conditioning
    with torch.no_grad():
        conditioning.evidence_norm.running_mean.fill_(0.5)
        conditioning.evidence_norm.running_var.fill_(4.0)
    rows = _age_rows()
    r2 = fit_thresholds(model, collator, rows)
    assert set(r2) == {"age"} and r2["age"] > 0.95
    batch = collator(rows)
    features = model.model.routing_features(batch["input_ids"], batch["attention_mask"], batch["labels"] == -100)
    read = torch.nn.functional.linear(features, conditioning.threshold_weight, conditioning.threshold_bias)
    scale = (4.0 + conditioning.evidence_norm.eps) ** 0.5
    expected = torch.tensor([0.0 if (t := named_threshold(row)) is None else (t - 0.5) / scale for row in rows])
    torch.testing.assert_close(read[:, 3], expected, atol=0.15, rtol=0)
    assert (read[:, :3] == 0).all()


def test_continuous_heads_are_read_out_on_their_threshold_judgments(processor, collator):
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    rows = _age_rows()
    about, label = readout_rows(model, rows, TARGETS, 2)
    assert [row["paradigm"] for row in about] == ["judgment"] * len(SUBJECTS)
    assert label.tolist() == [float(row["answer"] == "Yes") for row in about]
    report = fit_readout(model, collator, rows + _rows(), per_class=4, scales=(1.0, 3.0))
    assert set(report["threshold_r2"]) == {"age"}
    assert set(report["scale"]) == set(report["auc"]) == {"binary", "continuous"}
    weight = model.model.instruction_conditioning.out.weight
    for column, kind in ((0, "binary"), (3, "continuous")):  # each kind at its own best scale
        assert report["scale"][kind] == choose_scale(report["auc"][kind], report["accuracy"][kind])
        torch.testing.assert_close(weight[:, column], _word_column(model, processor, report["scale"][kind]))


def test_only_the_asked_kinds_are_read_out(processor, collator):
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    report = fit_readout(model, collator, _age_rows() + _rows(), kinds=("continuous",), per_class=4, scales=(1.0,))
    assert set(report["scale"]) == {"continuous"}
    assert torch.count_nonzero(model.model.instruction_conditioning.out.weight[:, :3]) == 0
    with pytest.raises(ValueError, match=r"not \['ordinal'\]"):
        fit_readout(model, collator, _rows(), kinds=("binary", "ordinal"))


def test_signs_turn_the_categorical_outputs_to_the_asked_class(processor, collator):
    """`fit_signs`: for "female?" the sex head's Female output reads +1 and Male -1, and the reverse for
    "male?"; the other heads' outputs stay +1."""
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    rows = _sex_rows()
    r2 = fit_signs(model, collator, rows + _rows())
    assert set(r2) == {"sex"} and r2["sex"] > 0.95
    batch = collator(rows)
    features = model.model.routing_features(batch["input_ids"], batch["attention_mask"], batch["labels"] == -100)
    signs = model.model.instruction_conditioning.signs(features)
    female = torch.tensor(["female?" in row["messages"][0]["content"] for row in rows])
    expected = torch.stack([torch.where(female, 1.0, -1.0), torch.where(female, -1.0, 1.0)], -1)
    torch.testing.assert_close(signs[:, 1:3], expected, atol=0.15, rtol=0)
    assert (signs[:, [0, 3]] == 1).all()


def test_categorical_heads_are_read_out_on_their_class_judgments(processor, collator):
    """Both outputs of the sex head get the judgments' "Yes" - "No" column (the signs pick the asked class);
    the labels are "the subject is of the asked class"."""
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    rows = _sex_rows()
    about, label = readout_rows(model, rows, TARGETS, 1)
    assert label.tolist() == [float(row["answer"] == "Yes") for row in about] and 0 < label.sum() < len(label)
    report = fit_readout(model, collator, rows + _rows(), kinds=("categorical",), per_class=4, scales=(1.0, 3.0))
    assert set(report["scale"]) == {"categorical"} and report["heads"] in ([], ["sex"])
    weight = model.model.instruction_conditioning.out.weight
    for column in (1, 2):
        torch.testing.assert_close(weight[:, column], _word_column(model, processor, report["scale"]["categorical"]))
    assert torch.count_nonzero(weight[:, [0, 3]]) == 0


def test_fit_readout_errors(processor, collator):
    with pytest.raises(ValueError, match="instruction_evidence='attributes'"):
        fit_readout(make_tiny_model(processor.tokenizer), collator, _rows())
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    with pytest.raises(ValueError, match="no instructions about a binary or continuous attribute head"):
        fit_readout(model, collator, _rows(attribute="age"))
    with pytest.raises(ValueError, match="both answers"):
        fit_readout(model, collator, _rows(SUBJECTS[::2]))
    untargeted = FCNInstructionCollator(processor, FCNS, routing_keys=[h["key"] for h in TINY_HEADS])
    with pytest.raises(ValueError, match="attribute targets"):
        fit_readout(model, untargeted, _rows())


def test_threshold_and_asked_class_are_read_from_the_rows_columns_when_present():
    """Rows that record their meaning (the question bank's columns) are read from the columns, whatever the
    wording; rows without them fall back to the question text / the registry's templates."""
    sex_head = {"key": "sex", "kind": "categorical", "num_outputs": 2}
    judged = {"id": "q", "attribute": "age", "paradigm": "judgment", "answer": "Yes", "subject_ids": ["s0"],
              "messages": [{"role": "user", "content": "<graph>\nIn 2030 will this participant be past 42?"},
                           {"role": "assistant", "content": "Yes"}]}
    assert named_threshold(judged) == 2030.0  # no columns: the first number in the question
    assert named_threshold({**judged, "template_id": "age/judgment/x/-/none", "threshold": 42.0}) == 42.0
    assert named_threshold({**judged, "template_id": "adhd/judgment/x/-/none", "threshold": None}) is None
    assert named_threshold({**judged, "paradigm": "predictive", "threshold": 42.0}) is None
    southpaw = {"id": "h", "attribute": "sex", "paradigm": "judgment", "answer": "No", "subject_ids": ["s0"],
                "messages": [{"role": "user", "content": "<graph>\nWould you say this person is a woman?"},
                             {"role": "assistant", "content": "No"}]}
    assert asked_class({**southpaw, "template_id": "sex/judgment/x/class0/none", "asked_class": "Female"},
                       sex_head) == 0
    assert asked_class({**southpaw, "template_id": "sex/judgment/x/class0/none", "asked_class": "Male"}, sex_head) == 1
    assert asked_class(_sex_rows()[1], sex_head) == 1  # no columns: the registry's templates ("male?")
    with pytest.raises(ValueError, match="does not output"):
        asked_class({**southpaw, "asked_class": "Other"}, sex_head)


def _negated_adhd_rows():
    """ADHD judgments, every other one negated ("ruled out?") with its answer flipped and `negated` set."""
    rows = []
    for i, sid in enumerate(SUBJECTS):
        negated = i % 4 >= 2
        has = TARGETS[sid][0] == 1
        answer = "Yes" if has != negated else "No"
        question = ("<graph>\nCan ADHD be ruled out for this subject? Answer yes or no." if negated
                    else "<graph>\nDoes this subject have ADHD? Answer yes or no.")
        rows.append({"id": f"n{sid}", "attribute": "adhd", "answer": answer, "subject_ids": [sid], "paradigm": "judgment",
                     "negated": negated, "direction": 1, "template_id": f"adhd/judgment/{'ruled_out' if negated else 'have'}",
                     "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})
    return rows


def test_question_sign_reads_negation_and_direction():
    from fcn_llm.training.router_fitting import question_sign

    assert question_sign({"negated": False, "direction": 1}) == 1
    assert question_sign({"negated": True, "direction": 1}) == -1
    assert question_sign({"negated": False, "direction": -1}) == -1
    assert question_sign({"negated": True, "direction": -1}) == 1
    assert question_sign({}) == 1  # rows built without the columns ask the plain way


def test_turn_labels_leave_out_what_is_not_turnable_and_double_negatives():
    from fcn_llm.training.router_fitting import turn_label

    assert turn_label({"paradigm": "judgment", "negated": True}) == 1  # "Can ADHD be ruled out?"
    assert turn_label({"paradigm": "comparative", "direction": -1}) == 1  # "Which is younger?"
    assert turn_label({"paradigm": "judgment", "direction": 1}) == 0
    assert turn_label({"paradigm": "predictive", "negated": True}) is None
    assert turn_label({"paradigm": "judgment", "negated": True, "direction": -1}) is None  # "false that ... younger?"


def test_a_double_negative_does_not_turn_the_single_ones_around(processor, collator):
    """Plain "older than", reversed "younger than", negated "false that ... older than" and the double negative "false
    that ... younger than" are an XOR of two words that no linear reader of words can fit; `fit_turns` leaves the double
    negatives out, so every other form is read the right way round."""
    from fcn_llm.training.router_fitting import fit_turns

    frames = {"Is this subject older than 30 years?": (1, False), "Is this subject younger than 30 years?": (-1, False),
              "Is it false that this subject is older than 30 years?": (1, True),
              "Is it false that this subject is younger than 30 years?": (-1, True)}
    rows = []
    for i, sid in enumerate(SUBJECTS * 2):
        question, (direction, negated) = list(frames.items())[i % len(frames)]
        rows.append({"id": f"t{i}", "attribute": "age", "answer": "Yes", "subject_ids": [sid], "paradigm": "judgment",
                     "direction": direction, "negated": negated,
                     "messages": [{"role": "user", "content": f"<graph>\n{question}"}, {"role": "assistant", "content": "Yes"}]})
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    assert fit_turns(model, collator, rows, c=100.0) == 1.0  # on the rows it fitted: all but the double negatives
    single = [row for row in rows if not (row["negated"] and row["direction"] == -1)]
    batch = collator(single)
    features = model.model.routing_features(batch["input_ids"], batch["attention_mask"], batch["labels"] == -100)
    turned = torch.sigmoid(model.model.instruction_conditioning.turn_logits(features))
    expected = torch.tensor([float(row["negated"] or row["direction"] == -1) for row in single])
    assert ((turned > 0.5).float() == expected).all()


def test_turns_read_negated_questions_for_every_head(processor, collator):
    """`fit_turns`: negated judgments ("Can ADHD be ruled out?") turn every head's outputs (-1), plain ones keep
    +1; class judgments keep their asked class (`fit_signs`) under the turn."""
    from fcn_llm.training.router_fitting import fit_turns

    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    rows = _negated_adhd_rows()
    assert fit_turns(model, collator, rows) > 0.9
    batch = collator(rows)
    features = model.model.routing_features(batch["input_ids"], batch["attention_mask"], batch["labels"] == -100)
    signs = model.model.instruction_conditioning.signs(features)
    expected = torch.tensor([-1.0 if row["negated"] else 1.0 for row in rows])
    for output in range(signs.shape[1]):
        torch.testing.assert_close(signs[:, output], expected, atol=0.2, rtol=0)
    plain = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    assert fit_turns(plain, collator, _rows()) is None  # plain questions only: nothing to turn
    assert (plain.model.instruction_conditioning.signs(features) == 1).all()


def test_readout_rows_label_judgments_by_their_answer(processor):
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    rows = _negated_adhd_rows()
    about, label = readout_rows(model, rows, TARGETS, 0)
    assert len(about) == len(rows)
    np.testing.assert_array_equal(label, [float(row["answer"] == "Yes") for row in rows])
    assert any(row["negated"] and label[i] != TARGETS[row["subject_ids"][0]][0] for i, row in enumerate(about))


def _comparison_rows():
    """"Which of the two is older?" about consecutive subjects, answered from their ages."""
    rows = []
    for i in range(len(SUBJECTS) - 1):
        pair = [SUBJECTS[i + 1], SUBJECTS[i]] if i % 2 else [SUBJECTS[i], SUBJECTS[i + 1]]
        answer = FIRST if TARGETS[pair[0]][2] > TARGETS[pair[1]][2] else SECOND
        question = "Subject 1: <graph>\nSubject 2: <graph>\nWhich of the two subjects is older, the first or the second?"
        rows.append({"id": f"c{i}", "attribute": "age", "answer": answer, "subject_ids": pair, "paradigm": "comparative",
                     "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})
    return rows


def test_comparisons_are_read_out_in_the_direction_of_the_first_answer(processor, collator):
    """With a comparative readout, the age head's comparative column is written along "First" - "Second" (the
    first token where the two answers differ), at a scale chosen on the comparisons' margins."""
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True,
                            evidence_paradigms=["predictive", "judgment", "comparative"])
    report = fit_readout(model, collator, _age_rows() + _comparison_rows(), kinds=("continuous",), per_class=6,
                         scales=(1.0, 3.0))
    by_scale = report["auc"]["comparative"]
    assert set(by_scale) == {0.0, 3.0, -3.0, 1.0 if by_scale[3.0] >= by_scale[-3.0] else -1.0}
    conditioning = model.model.instruction_conditioning
    column = conditioning.out.weight[:, conditioning.evidence_column(3, "comparative")]
    embeddings = model.get_input_embeddings().weight.detach()
    first, second = (processor.tokenizer(a, add_special_tokens=False)["input_ids"] for a in (FIRST, SECOND))
    k = next(i for i, (a, b) in enumerate(zip(first, second)) if a != b)
    direction = embeddings[first[k]] - embeddings[second[k]]
    scale = report["scale"].get("comparative", 0.0)
    torch.testing.assert_close(column, scale * embeddings.norm(dim=-1).mean() * direction / direction.norm())
    # without comparative rows nothing is written there
    plain = make_tiny_model(processor.tokenizer, attribute_evidence=True,
                            evidence_paradigms=["predictive", "judgment", "comparative"])
    fit_readout(plain, collator, _age_rows(), kinds=("continuous",), per_class=6, scales=(1.0,))
    assert not plain.model.instruction_conditioning.out.weight[:, conditioning.evidence_column(3, "comparative")].any()


def _predictive_class_rows():
    """Predictive questions about ADHD ("ADHD" / "Control") and sex ("Female" / "Male"), answered from the class."""
    rows = []
    for sid in SUBJECTS:
        adhd = "ADHD" if TARGETS[sid][0] == 1 else "Control"
        sex = ("Female", "Male")[int(TARGETS[sid][1])]
        for key, question, answer in (("adhd", "Does this subject have ADHD or is it a control?", adhd),
                                      ("sex", "What is this subject's sex?", sex)):
            rows.append({"id": f"{key}{sid}", "attribute": key, "answer": answer, "subject_ids": [sid],
                         "paradigm": "predictive", "messages": [{"role": "user", "content": f"<graph>\n{question}"},
                                                                {"role": "assistant", "content": answer}]})
    return rows


def test_predictive_columns_are_written_along_the_class_names(processor, collator, monkeypatch):
    """A binary head's predictive column along E["ADHD"] - E["Control"], a categorical head's output k along its
    class name minus the others', at the `predictive` scale; the judgments' columns as before."""
    import fcn_llm.training.readout_fitting as readout_fitting

    model = make_tiny_model(processor.tokenizer, attribute_evidence=True, evidence_paradigms=["predictive", "judgment"])
    conditioning = model.model.instruction_conditioning
    column = conditioning.evidence_column(0, "predictive")
    noise = np.random.default_rng(0).normal(scale=0.5, size=10_000)

    def margins(model_, collate, rows, answers, bf16=False, batch_size=16):
        """An LLM whose margin for the row's own answer grows with the written predictive column of ADHD."""
        written = float(model_.model.instruction_conditioning.out.weight[:, column].norm())
        said = np.array([1.0 if str(row["answer"]) == pair[0] else -1.0 for row, pair in zip(rows, answers)])
        return written * said + noise[: len(rows)]

    monkeypatch.setattr(readout_fitting, "answer_margins", margins)
    report = fit_readout(model, collator, _rows() + _sex_rows() + _predictive_class_rows(),
                         kinds=("binary", "categorical"), per_class=6, scales=(1.0, 3.0))
    assert set(report["auc"]["predictive"]) >= {0.0, 3.0, -3.0} and abs(report["scale"]["predictive"]) == 3.0
    embeddings = model.get_input_embeddings().weight.detach()
    unit = embeddings.norm(dim=-1).mean()
    first = {name: processor.tokenizer(name, add_special_tokens=False)["input_ids"][0]
             for name in ("ADHD", "Control", "Female", "Male")}
    scale = report["scale"].get("predictive", 0.0)

    def along(a, b):
        d = embeddings[first[a]] - embeddings[first[b]]
        return scale * unit * d / d.norm()

    torch.testing.assert_close(conditioning.out.weight[:, conditioning.evidence_column(0, "predictive")], along("ADHD", "Control"))
    torch.testing.assert_close(conditioning.out.weight[:, conditioning.evidence_column(1, "predictive")], along("Female", "Male"))
    torch.testing.assert_close(conditioning.out.weight[:, conditioning.evidence_column(2, "predictive")], along("Male", "Female"))
    assert not conditioning.out.weight[:, conditioning.evidence_column(3, "predictive")].any()  # age: numbers are written


def test_the_scale_that_answers_right_wins_over_equally_separating_ones(processor, collator, monkeypatch):
    """An LLM with a strong "No" prior ranks subjects by the readout at any positive scale (equal AUC), but answers
    them right only once the readout outweighs the prior: the larger scale is chosen, not the smaller."""
    import fcn_llm.training.readout_fitting as readout_fitting

    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    unit = _word_column(model, processor, 1.0)

    def margins(model_, collate, rows, answers, bf16=False, batch_size=16):
        scale = float(model_.model.instruction_conditioning.out.weight[:, 0] @ unit / (unit @ unit))
        said = np.array([1.0 if str(row["answer"]) == "Yes" else -1.0 for row in rows])
        return -5.0 + 2.0 * scale * said

    monkeypatch.setattr(readout_fitting, "answer_margins", margins)
    report = fit_readout(model, collator, _rows(), per_class=6, scales=(1.0, 3.0))
    assert report["auc"]["binary"][1.0] == report["auc"]["binary"][3.0] == 1.0
    assert report["accuracy"]["binary"][1.0] == 0.5 and report["accuracy"]["binary"][3.0] == 1.0
    assert report["scale"] == {"binary": 3.0}


def test_answers_that_ignore_the_fcn_are_chosen_only_where_no_scale_separates():
    """On a few rows per head, no readout (scale 0) can answer right more often by chance (the learning curve's four
    conditions chose it on both seeds and their answers never read the FCN): a scale that separates the rows wins."""
    auc = {0.0: 0.56, 2.0: 0.59, -2.0: 0.41, 0.5: 0.58, 8.0: 0.59}
    accuracy = {0.0: 0.66, 2.0: 0.56, -2.0: 0.41, 0.5: 0.50, 8.0: 0.56}
    assert choose_scale(auc, accuracy) == 2.0  # right as often as 8, separating as well: the smaller magnitude
    flat = {0.0: 0.5, 2.0: 0.5, -2.0: 0.5, 0.5: 0.48, 8.0: 0.5}
    assert choose_scale(flat, accuracy) == 0.0
    assert choose_scale({0.0: 0.6, 2.0: 0.9}, {0.0: 0.9, 2.0: 0.8}) == 2.0
