"""The real-HCP sanity report: when it runs (atlas match), what it counts, and a tiny run on the real FCNs."""

import math

import pytest

from datasets_scripts.attributes import load_registry
from fcn_llm.evaluation.answer_forms import generate_texts
from fcn_llm.evaluation.fcn_llm import answer_questions
from fcn_llm.questions import Question
from fcn_llm.evaluation.real_data import hcp_parcellation, real_data_questions, real_data_report, summarise
from processing import FCNProcessor, load_atlas
from tests.conftest import make_tiny_model

REGISTRY = load_registry()


@pytest.fixture(scope="module")
def schaefer_model():
    from tests.conftest import make_tokenizer

    processor = FCNProcessor(make_tokenizer())
    model = make_tiny_model(processor.tokenizer, num_rois=100,
                            network_assignment=load_atlas("schaefer100-7").network_assignment)
    return model, FCNProcessor.from_model_config(processor.tokenizer, model.config)


def test_only_the_schaefer_7_network_atlas_of_the_models_size_is_asked(schaefer_model, tokenizer):
    model, _ = schaefer_model
    assert hcp_parcellation("schaefer100-7", model) == ("schaefer_100", "")
    assert "Schaefer 7-network" in hcp_parcellation("schaefer100-17", model)[1]
    assert "reads 100 ROIs, the schaefer200-7 FCNs have 200" in hcp_parcellation("schaefer200-7", model)[1]
    assert "names no atlas" in hcp_parcellation(None, model)[1]
    small = make_tiny_model(FCNProcessor(tokenizer).tokenizer)  # 12 ROIs
    assert hcp_parcellation("schaefer100-7", small)[0] is None
    shuffled = make_tiny_model(FCNProcessor(tokenizer).tokenizer, num_rois=100,
                               network_assignment=sorted(load_atlas("schaefer100-7").network_assignment))
    assert "network assignment" in hcp_parcellation("schaefer100-7", shuffled)[1]


def _q(qid, key, paradigm, target, choices=(), negated=False, subject="a"):
    return Question(id=qid, group=(key, paradigm), target=target, messages=[], subject_ids=(subject,),
                    choices=tuple(choices), reference=math.nan, negated=negated)


def test_summary_counts_answers_in_range_conditions_answered_no_and_ages():
    predictive = [_q("p1", "age", "predictive", "regression"), _q("p2", "age", "predictive", "regression"),
                  _q("p3", "age", "predictive", "regression", subject="b"),
                  _q("p4", "adhd", "predictive", "binary", ("ADHD", "Control")),
                  _q("p5", "adhd", "predictive", "binary", ("ADHD", "Control"), subject="b")]
    texts = {"p1": "25", "p2": "120", "p3": "39", "p4": "Control", "p5": "ADHD"}
    judgments = [_q("j1", "adhd", "judgment", "binary", ("Yes", "No")),
                 _q("j2", "adhd", "judgment", "binary", ("Yes", "No"), negated=True),
                 _q("j3", "adhd", "judgment", "binary", ("Yes", "No"), negated=True)]
    answers = {"j1": {"prediction": 0}, "j2": {"prediction": 1}, "j3": {"prediction": 0}}  # No; Yes=no ADHD; No=ADHD
    report = summarise(predictive, texts, judgments, answers, REGISTRY)
    assert report["answers_in_form"]["age"] == {"n": 3, "in_form": 2, "in_form_rate": 2 / 3}  # 120 is out of range
    assert report["conditions"]["adhd"]["no_rate"] == 2 / 3
    assert report["conditions"]["adhd"]["negative_label_rate"] == 0.5
    age = report["age"]
    assert age["generated"] == {"a": ["25", "120"], "b": ["39"]}
    assert age["in_valid_range"] == 2 / 3 and age["in_18_40"] == 2 / 3 and age["in_22_35"] == 1 / 3


def test_questions_cover_every_age_frame_and_condition_judgments():
    predictive, judgments = real_data_questions([REGISTRY["age"], REGISTRY["adhd"]], ["a", "b"], forms_per_attribute=2)
    age_frames = {q.template_id.split("/")[2] for q in predictive if q.group[0] == "age"}
    assert len(age_frames) == 7  # the bank's age frames, all of them
    assert sum(q.group[0] == "adhd" for q in predictive) == 4 and len(judgments) == 4


def test_a_tiny_model_on_the_real_hcp_fcns(schaefer_model):
    model, processor = schaefer_model
    answer = lambda m, p, qs, f: answer_questions(m, p, qs, f, batch_size=8, log=lambda s: None)  # noqa: E731
    generate = lambda m, p, qs, f: generate_texts(m, p, qs, f, batch_size=8, max_new_tokens=3)  # noqa: E731
    attributes = [REGISTRY[k] for k in ("age", "adhd", "sex")]
    report = real_data_report(model, processor, "schaefer100-7", attributes, REGISTRY, answer, generate,
                              forms_per_attribute=1)
    assert report["status"] == "done" and len(report["subjects"]) == 3
    assert set(report["answers_in_form"]) == {"age", "adhd", "sex"}
    assert set(report["age"]["generated"]) == set(report["subjects"])
    assert report["conditions"]["adhd"]["judgments"] == 3
    skipped = real_data_report(model, processor, "aal116", attributes, REGISTRY, answer, generate)
    assert skipped["status"] == "skipped" and "aal116" in skipped["reason"]
