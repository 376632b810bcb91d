"""The compositional question bank: forms, held-out forms, negated / reversed answers, drawn thresholds."""

import collections
import json

import numpy as np
import pandas as pd
import pytest

from datasets_scripts import question_bank as qb
from datasets_scripts.attributes import DEFAULT_REGISTRY_PATH, load_registry
from datasets_scripts.instructions import FIRST, FORM_COLUMNS, SECOND, build_instruction_set

REGISTRY = load_registry()
BANK = qb.load_bank()


def _texts(attr, forms):
    """Each form's question with a fixed threshold / asked class (surface forms, not meanings)."""
    threshold = float(np.mean(attr.valid_range)) if attr.kind == "continuous" else None
    asked = attr.classes[0] if attr.kind == "categorical" else None
    return [f.text(attr, threshold=threshold if f.paradigm == "judgment" else None,
                   asked_class=asked if f.paradigm == "judgment" else None) for f in forms]


def _form(key, paradigm, frame_id, term_index=0, instruction="none", held_term=False):
    for f in BANK.forms(REGISTRY[key], paradigm):
        if (f.frame.id == frame_id and f.instruction.id == instruction and f.term_held_out == held_term
                and f.term_index in (term_index, None) and f.variant in (0, None) and not f.variant_held_out):
            return f
    raise LookupError((key, paradigm, frame_id))


def test_every_attribute_and_paradigm_has_at_least_20_surface_forms():
    smallest = {}
    for attr in REGISTRY.values():
        assert attr.paradigms() == (["predictive", "judgment"] if attr.kind == "categorical"
                                    else ["predictive", "judgment", "comparative"]), attr.key
        for paradigm in attr.paradigms():
            forms = BANK.forms(attr, paradigm)
            ids = [f.template_id for f in forms]
            assert len(set(ids)) == len(ids), (attr.key, paradigm)  # ids are unique names of forms
            texts = set(_texts(attr, forms))
            smallest[attr.key, paradigm] = len(texts)
            assert len(texts) >= 20, (attr.key, paradigm, len(texts))
            for pool in qb.POOLS:  # both training and held-out forms, each with several surface forms
                assert len(set(_texts(attr, BANK.forms(attr, paradigm, pool)))) >= 5, (attr.key, paradigm, pool)
    assert min(smallest.values()) >= 20


def test_template_ids_are_stable_names_of_frame_term_and_instruction():
    form = _form("adhd", "judgment", "ruled_out", term_index=1, instruction="answer")
    assert form.template_id == "adhd/judgment/ruled_out/term1/answer"
    assert form.text(REGISTRY["adhd"]) == ("Can attention-deficit/hyperactivity disorder be ruled out for this "
                                          "participant? Answer yes or no.")
    assert _form("age", "predictive", "how_old").template_id == "age/predictive/how_old/-/none"
    held = _form("adhd", "judgment", "have", term_index=0, held_term=True)
    assert held.template_id == "adhd/judgment/have/held_term0/none" and held.held_out
    assert held.text(REGISTRY["adhd"]) == "Does this subject have hyperkinetic disorder?"


def test_terms_include_names_synonyms_abbreviations_and_clinical_terms():
    def said(key, paradigm):
        return " ".join(_texts(REGISTRY[key], BANK.forms(REGISTRY[key], paradigm)))

    for key, words in {"adhd": ["ADHD", "attention-deficit/hyperactivity disorder"],
                       "autism": ["autism spectrum disorder", "autism", "ASD"],
                       "depression": ["major depression", "MDD"], "bmi": ["BMI", "body mass index"],
                       "fiq": ["FSIQ", "full-scale IQ"]}.items():
        for paradigm in REGISTRY[key].paradigms():
            for word in words:
                assert word in said(key, paradigm), (key, paradigm, word)
    answers = {f.instruction.text for f in BANK.forms(REGISTRY["adhd"], "judgment")}
    assert {"", "Answer yes or no.", "Please reply yes or no."} <= answers


def test_held_out_forms_are_whole_frames_terms_and_instructions():
    for attr in REGISTRY.values():
        held_terms = set(attr.bank.get("held_out_terms", []))
        for paradigm in attr.paradigms():
            train = BANK.forms(attr, paradigm, "train")
            held = BANK.forms(attr, paradigm, "held_out")
            assert train and held and len(train) + len(held) == len(BANK.forms(attr, paradigm))
            assert not any(f.held_out for f in train) and all(f.held_out for f in held)
            held_frames = {f.id for f in BANK.frames(attr, paradigm) if f.held_out}
            assert held_frames, (attr.key, paradigm)  # at least one whole frame is held out
            assert not held_frames & {f.frame.id for f in train}
            assert not held_terms & {f.term for f in train}
            assert not {f.instruction.id for f in train if f.instruction.held_out}
            train_texts = set(_texts(attr, train))
            assert set(_texts(attr, held)) - train_texts, (attr.key, paradigm)
    assert REGISTRY["adhd"].bank["held_out_terms"] == ["hyperkinetic disorder"]


def test_negated_and_reversed_forms_flip_their_answers():
    adhd, age, sex = REGISTRY["adhd"], REGISTRY["age"], REGISTRY["sex"]
    plain, ruled_out = _form("adhd", "judgment", "have"), _form("adhd", "judgment", "ruled_out")
    assert not plain.negated and ruled_out.negated
    assert qb.judgment_answer(adhd, plain, 1.0) == "Yes" and qb.judgment_answer(adhd, ruled_out, 1.0) == "No"
    assert qb.judgment_answer(adhd, plain, 0.0) == "No" and qb.judgment_answer(adhd, ruled_out, 0.0) == "Yes"
    # a 30-year-old asked about 40 years
    answers = {frame: qb.judgment_answer(age, _form("age", "judgment", frame), 30.0, threshold=40.0)
               for frame in ("older", "younger", "false_older", "false_younger", "under", "passed")}
    assert answers == {"older": "No", "younger": "Yes", "false_older": "Yes", "false_younger": "No",
                       "under": "Yes", "passed": "No"}
    assert _form("age", "judgment", "younger").direction == -1 and _form("age", "judgment", "older").direction == 1
    assert _form("age", "judgment", "younger").text(age, threshold=40.0) == "Is this subject younger than 40 years?"
    is_female, not_female = _form("sex", "judgment", "is"), _form("sex", "judgment", "not")
    assert qb.judgment_answer(sex, is_female, "Female", asked_class="Female") == "Yes"
    assert qb.judgment_answer(sex, not_female, "Female", asked_class="Female") == "No"
    assert qb.judgment_answer(sex, not_female, "Male", asked_class="Female") == "Yes"
    assert not_female.text(sex, asked_class="Female") == "Is this subject not female?"


def test_comparatives_ask_both_ways_for_conditions_and_scores():
    for key in ("adhd", "autism", "fiq", "age", "education_years"):
        directions = collections.Counter(f.direction for f in BANK.frames(REGISTRY[key], "comparative"))
        assert directions[1] >= 3 and directions[-1] >= 3, key
    likely = _form("adhd", "comparative", "more_likely")
    assert likely.text(REGISTRY["adhd"]) == "Which of the two subjects is more likely to have ADHD, the first or the second?"
    assert _form("adhd", "comparative", "less_likely").direction == -1


def _cohort(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "subject_id": [f"s{i}" for i in range(n)], "dataset": np.where(np.arange(n) < n // 2, "A", "B"),
        "site": "a1", "age": np.round(rng.uniform(8, 70, n), 1), "bmi": np.round(rng.uniform(16, 35, n), 1),
        "adhd": (rng.random(n) < 0.4).astype(float), "handedness": rng.choice(["Right", "Left", "Ambidextrous"], n),
    })


def _values(meta):
    return {(sid, key): meta[key].iloc[i] for key in ("age", "bmi", "adhd", "handedness")
            for i, sid in enumerate(meta["subject_id"])}


def _expected_answer(attr, row, values):
    """The answer a row's columns and its subjects' values imply."""
    value = [values[sid, attr.key] for sid in row["subject_ids"]]
    if row["paradigm"] == "predictive":
        return attr.format_value(value[0])
    if row["paradigm"] == "comparative":
        high = float(value[0]) > float(value[1])
        return FIRST if high == (row["direction"] == 1) else SECOND
    if attr.kind == "continuous":
        yes = row["direction"] * (float(value[0]) - row["threshold"]) > 0
    elif attr.kind == "categorical":
        yes = value[0] == row["asked_class"]
    else:
        yes = float(value[0]) == 1.0
    return "Yes" if yes != row["negated"] else "No"


@pytest.mark.parametrize("split", ["train", "validation", "zero_shot"])
def test_every_row_records_its_form_and_its_answer_follows_from_its_meaning(split):
    meta = _cohort()
    rows = build_instruction_set(meta, split, REGISTRY, np.random.default_rng(1)).records
    values = _values(meta)
    for row in rows:
        attr = REGISTRY[row["attribute"]]
        assert set(FORM_COLUMNS) <= set(row)
        assert row["template_id"].startswith(f"{attr.key}/{row['paradigm']}/")
        assert row["answer"] == _expected_answer(attr, row, values), row
        assert (row["threshold"] is not None) == (attr.kind == "continuous" and row["paradigm"] == "judgment")
        assert (row["asked_class"] is not None) == (attr.kind == "categorical" and row["paradigm"] == "judgment")
        assert row["direction"] in (1, -1) and isinstance(row["negated"], bool)
        assert row["messages"][0]["content"].split("\n")[-1]  # the question follows the <graph> lines


def test_splits_use_their_forms_train_never_held_out_validation_only_held_out_zero_shot_both():
    meta = _cohort()
    by_split = {s: build_instruction_set(meta, s, REGISTRY, np.random.default_rng(2)).records
                for s in ("train", "validation", "zero_shot")}
    assert not any(r["held_out"] for r in by_split["train"])
    assert all(r["held_out"] for r in by_split["validation"])
    held_ids = {f.template_id for a in REGISTRY.values() for p in a.paradigms() for f in BANK.forms(a, p, "held_out")}
    assert not held_ids & {r["template_id"] for r in by_split["train"]}
    assert {r["template_id"] for r in by_split["validation"]} <= held_ids
    zs = pd.DataFrame(by_split["zero_shot"])
    assert zs["held_out"].any() and (~zs["held_out"]).any()
    # each subject's questions once in training wording and once (extra rows) in held-out wording
    single = zs[zs["paradigm"] != "comparative"].assign(subject=lambda f: f["subject_ids"].str[0])
    per = single.groupby(["subject", "attribute", "paradigm"])["held_out"].agg(["sum", "count"])
    assert (per["sum"] == 1).all() and (per["count"] == 2).all()
    singles = {s: sum(r["paradigm"] != "comparative" for r in rows) for s, rows in by_split.items()}
    assert singles["zero_shot"] == singles["train"] + singles["validation"] == 2 * singles["train"]
    pairs = zs[zs["paradigm"] == "comparative"].groupby("attribute")["held_out"].agg(["sum", "count"])
    assert (2 * pairs["sum"] == pairs["count"]).all()  # comparative pairs: once in each wording too
    for split, rows in by_split.items():  # comparative answers stay balanced within each wording
        for held in (False, True):
            said = collections.Counter(r["answer"] for r in rows if r["paradigm"] == "comparative" and r["held_out"] == held)
            if said:
                assert abs(said[FIRST] - said[SECOND]) <= len(REGISTRY), (split, held, said)


@pytest.mark.parametrize("per_subject", [0.5, 2.0])
def test_comparative_pairs_per_subject_are_distinct_untied_and_each_subject_is_in_several(per_subject):
    meta = _cohort(200)
    rows = pd.DataFrame(build_instruction_set(meta, "train", REGISTRY, np.random.default_rng(6),
                                              comparative_per_subject=per_subject).records)
    values = _values(meta)
    for key in ("age", "adhd"):
        comp = rows[(rows["attribute"] == key) & (rows["paradigm"] == "comparative")]
        pairs = [frozenset(ids) for ids in comp["subject_ids"]]
        assert len(set(pairs)) == len(pairs) and all(len(p) == 2 for p in pairs), key
        assert all(values[a, key] != values[b, key] for a, b in comp["subject_ids"]), key
        if key == "age":
            assert 0.95 * per_subject * len(meta) <= len(pairs) <= per_subject * len(meta)  # a few ties or repeats
        else:  # a pair needs one subject with the condition: at most `per_subject` rounds over them
            with_condition = int(meta[key].sum())
            rounds = max(1, 2 * per_subject)
            assert min(with_condition, len(meta) - with_condition) <= len(pairs) <= rounds * with_condition
        appearances = collections.Counter(s for ids in comp["subject_ids"] for s in ids)
        assert max(appearances.values()) <= max(1, int(np.ceil(2 * per_subject))), key


def test_many_wordings_are_used_and_both_directions_are_asked():
    rows = pd.DataFrame(build_instruction_set(_cohort(), "train", REGISTRY, np.random.default_rng(3)).records)
    for (key, paradigm), group in rows.groupby(["attribute", "paradigm"]):
        assert group["template_id"].nunique() >= 20, (key, paradigm)
    judged = rows[rows["paradigm"] == "judgment"]
    assert set(judged.loc[judged["attribute"] == "age", "direction"]) == {1, -1}
    for key in ("adhd", "handedness", "age"):
        negated = judged.loc[judged["attribute"] == key, "negated"].mean()
        assert 0.1 < negated < 0.6, (key, negated)
    comp = rows[rows["paradigm"] == "comparative"]
    assert set(comp.loc[comp["attribute"] == "adhd", "direction"]) == {1, -1}


def test_thresholds_are_drawn_from_the_cohort_range_not_from_a_list():
    meta = _cohort(300)
    rows = pd.DataFrame(build_instruction_set(meta, "train", REGISTRY, np.random.default_rng(4)).records)
    for key in ("age", "bmi"):
        attr = REGISTRY[key]
        judged = rows[(rows["attribute"] == key) & (rows["paradigm"] == "judgment")]
        thresholds = judged["threshold"].to_numpy(float)
        lo, hi = np.quantile(meta[key], [0.1, 0.9])
        assert len(set(thresholds)) >= 25, key  # many distinct values
        assert not set(thresholds) <= set(attr.thresholds), key
        assert thresholds.min() >= round(lo, attr.decimals) - 10 ** -attr.decimals
        assert thresholds.max() <= round(hi, attr.decimals) + 10 ** -attr.decimals
        assert np.allclose(thresholds, np.round(thresholds, attr.decimals))  # integers for age, 0.1 for BMI
        value = dict(zip(meta["subject_id"], meta[key]))
        assert all(value[s[0]] != t for s, t in zip(judged["subject_ids"], thresholds))  # never the subject's own
        assert all(attr.format_threshold(t) in m[0]["content"] for m, t in zip(judged["messages"], thresholds))
    assert len(set(rows.loc[(rows["attribute"] == "bmi") & (rows["paradigm"] == "judgment"), "threshold"]
                   % 1)) > 3  # BMI thresholds use its one decimal


def test_train_never_names_the_held_out_thresholds_and_the_other_splits_do():
    meta = _cohort(300)
    for key in ("age", "bmi", "fiq"):
        attr = REGISTRY[key]
        held = {t: qb.threshold_held_out(attr, t) for t in np.round(np.arange(0, 200, 10.0 ** -attr.decimals), 1)}
        assert 0.1 < np.mean(list(held.values())) < 0.3, key  # about one value in five, scattered
        assert qb.threshold_held_out(attr, 33.0) == qb.threshold_held_out(attr, 33.0)
    named = {}
    for split in ("train", "zero_shot"):
        rows = pd.DataFrame(build_instruction_set(meta, split, REGISTRY, np.random.default_rng(5)).records)
        judged = rows[(rows["paradigm"] == "judgment") & rows["threshold"].notna()]
        named[split] = [qb.threshold_held_out(REGISTRY[k], t) for k, t in zip(judged["attribute"], judged["threshold"])]
    assert not any(named["train"])
    assert 0.1 < np.mean(named["zero_shot"]) < 0.3


def test_threshold_draw_keeps_to_the_allowed_values_even_in_a_narrow_span():
    age = REGISTRY["age"]
    allowed = [t for t in (28.0, 29.0, 30.0, 31.0, 32.0) if not qb.threshold_held_out(age, t)]
    for seed in range(20):
        t = qb.draw_threshold(age, (29.0, 31.0), 30.0, np.random.default_rng(seed), named_in_train=True)
        assert t in allowed and t != 30.0


def test_threshold_draw_avoids_the_subject_value_in_a_degenerate_cohort():
    age = REGISTRY["age"]
    span = qb.threshold_span(age, np.full(10, 30.0))
    for seed in range(5):
        assert qb.draw_threshold(age, span, 30.0, np.random.default_rng(seed)) in (29.0, 31.0)


def test_attributes_without_a_bank_entry_get_their_kinds_family(tmp_path):
    data = json.loads(DEFAULT_REGISTRY_PATH.read_text())
    data["attributes"]["reaction_time"] = {
        "kind": "continuous", "name": "mean reaction time", "units": "ms", "valid_range": [100, 2000],
        "templates": {"predictive": ["What is this subject's mean reaction time?"],
                      "judgment": ["Is this subject's reaction time above {threshold} ms? Answer yes or no."],
                      "comparative": ["Which of the two subjects reacts more slowly, the first or the second?"]}}
    path = tmp_path / "attrs.json"
    path.write_text(json.dumps(data))
    attr = load_registry(path)["reaction_time"]
    forms = BANK.forms(attr, "judgment")
    assert len(forms) >= 20 and all(f.template_id.startswith("reaction_time/judgment/") for f in forms)
    assert _texts(attr, forms[:1]) == ["Is this subject's mean reaction time above 1050?"]


def test_malformed_bank_entries_are_rejected(tmp_path):
    data = json.loads(DEFAULT_REGISTRY_PATH.read_text())
    data["attributes"]["adhd"]["bank"]["synonyms"] = ["x"]
    path = tmp_path / "attrs.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="unknown bank field.*synonyms"):
        load_registry(path)
    data["attributes"]["adhd"]["bank"] = {"family": "nonsense"}
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="family 'nonsense' is not in question_bank.json"):
        BANK.forms(load_registry(path)["adhd"], "judgment")
    data["attributes"]["adhd"]["bank"] = {"terms": ["ADHD"], "held_out_terms": ["ADHD"]}
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="both a training and a held-out term"):
        load_registry(path)


def test_a_frame_with_a_slot_the_attribute_cannot_fill_is_rejected(tmp_path):
    data = json.loads(qb.DEFAULT_BANK_PATH.read_text())
    data["families"]["score"]["judgment"].append({"id": "bad", "text": "Is this {phrase} {term} above {threshold}?"})
    path = tmp_path / "bank.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"slot\(s\) \['phrase'\] cannot be filled"):
        qb.load_bank(path).forms(REGISTRY["fiq"], "judgment")
    data["families"]["score"]["judgment"][-1] = {"id": "bad", "text": "Is it high?", "direction": 2}
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="direction 2"):
        qb.load_bank(path)
