"""Do the model's answers to one subject agree with each other across paradigms?

For a few evaluated subjects the model is first asked the predictive questions: a generated number
per continuous attribute, a predicted class per categorical attribute, a predicted label (and its
log-likelihood ratio) per binary attribute (`OwnAnswers`). The question bank then composes, for the
same subjects, judgments and comparatives whose reference answers are what those predictions imply
(`question_bank.compose` / `judgment_answer`, so negated and reversed forms are flipped as in the
instruction set): "older than t?" is "Yes" when the generated age is above t; "Is this subject
female?" is "Yes" when the predicted class is Female; "Which of the two is older?" is "The first"
when the first subject's generated age is the higher. The model answers them as the evaluation does
(log-likelihood of the choices), and the agreement rate is the share it answers as its own
predictions imply, per attribute and overall, in three checks: threshold judgments vs the generated
number, class judgments (categorical and binary attributes) vs the predicted class, comparatives vs the
two subjects' predicted values.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datasets_scripts.instructions import FIRST, GRAPH_TOKEN, SECOND
from datasets_scripts.question_bank import FormPool, QuestionBank, compose, judgment_answer, load_bank, threshold_span

from .answer_forms import parse_answer
from fcn_llm.questions import Question, build_question, check_threshold

CONSISTENCY_TARGET = 0.90
CHECKS = ("threshold_vs_number", "class_vs_prediction", "comparative_vs_values")


@dataclass
class OwnAnswers:
    """The model's predictive answers, per (attribute key, subject id).

    Attributes:
        value: the generated number (continuous; only those inside the valid range), the predicted
            class name (categorical) or the predicted label 0/1 (binary).
        score: binary: log P(positive label) - log P(negative label), what ranks two subjects.
        unparsable: attribute key -> subjects whose generated number was missing or out of range.
    """

    value: dict[tuple[str, str], Any] = field(default_factory=dict)
    score: dict[tuple[str, str], float] = field(default_factory=dict)
    unparsable: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


def user_messages(question: str, num_graphs: int) -> list[dict]:
    """The user turn as the instruction set writes it (one `<graph>` line per subject, then the question)."""
    if num_graphs == 1:
        return [{"role": "user", "content": f"{GRAPH_TOKEN}\n{question}"}]
    graphs = "".join(f"Subject {i + 1}: {GRAPH_TOKEN}\n" for i in range(num_graphs))
    return [{"role": "user", "content": graphs + question}]


def predictive_questions(attributes: Sequence, subject_ids: Sequence[str], bank: QuestionBank | None = None
                         ) -> list[Question]:
    """One predictive question per attribute and subject, in the attribute's first training form."""
    bank = bank or load_bank()
    out = []
    for attribute in attributes:
        forms = bank.forms(attribute, "predictive", "train")
        if not forms:
            continue
        form = forms[0]
        if attribute.kind == "continuous":
            target, choices = "regression", ()
        elif attribute.kind == "binary":
            target, choices = "binary", (attribute.labels["1"], attribute.labels["0"])
        else:
            target, choices = "multiclass", tuple(attribute.classes)
        for sid in subject_ids:
            out.append(Question(id=f"consistency-predictive-{attribute.key}-{sid}", group=(attribute.key, "predictive"),
                                target=target, messages=user_messages(form.text(attribute), 1), subject_ids=(sid,),
                                choices=choices, reference=math.nan, template_id=form.template_id))
    return out


def own_answers(questions: Sequence[Question], answers: dict[str, dict], registry) -> OwnAnswers:
    """`OwnAnswers` from the predictive `questions` and the model's `answers` to them (`answer_questions`:
    regression answers carry their "text", parsed by `answer_forms.parse_answer`)."""
    own = OwnAnswers()
    for q in questions:
        attribute = registry[q.group[0]]
        key = (attribute.key, q.subject_ids[0])
        answer = answers[q.id]
        if attribute.kind == "continuous":
            value = parse_answer(q, answer.get("text", ""), attribute)
            if value is None:
                own.unparsable[attribute.key].append(q.subject_ids[0])
            else:
                own.value[key] = float(value)
        elif attribute.kind == "binary":
            own.value[key] = float(answer["prediction"])  # 1: choices[0], the positive label, is the likelier
            own.score[key] = float(answer["score"])
        else:
            own.value[key] = attribute.classes[int(answer["prediction"])]
    return own


def _row(qid: str, attribute, paradigm: str, subject_ids: Sequence[str], question: str, answer: str, form,
         threshold: float | None = None, asked_class: str | None = None) -> dict:
    """An instruction row (the `instructions` config's columns) for `build_question`."""
    return {"id": qid, "paradigm": paradigm, "attribute": attribute.key, "subject_ids": list(subject_ids),
            "messages": user_messages(question, len(subject_ids)), "answer": answer, "template_id": form.template_id,
            "held_out": form.held_out, "threshold": threshold, "asked_class": asked_class,
            "negated": form.negated, "direction": int(form.direction)}


def consistency_questions(own: OwnAnswers, attributes: Sequence, subject_ids: Sequence[str],
                          rng: np.random.Generator, *, judgments_per_subject: int = 3,
                          spans: dict[str, tuple[float, float]] | None = None,
                          bank: QuestionBank | None = None) -> list[Question]:
    """The judgments and comparatives about `subject_ids` whose references are what `own` implies.

    Per subject and attribute with a prediction: `judgments_per_subject` judgments (continuous: each at a
    threshold drawn from `spans[key]`, else from the span of the generated numbers; binary: "has the
    condition?"), one per class for categorical attributes; forms drawn from all the bank's forms (training
    and held-out wording). Comparatives: each subject with the next one in `subject_ids` (a ring), skipped
    where the two predicted values tie. Thresholds outside the attribute's valid range are an error
    (`questions.check_threshold`).
    """
    bank = bank or load_bank()
    spans = dict(spans or {})
    for attribute in attributes:
        for end in spans.get(attribute.key, ()):
            check_threshold(attribute, end, "consistency threshold span")
    out: list[Question] = []
    for attribute in attributes:
        key = attribute.key
        have = [s for s in subject_ids if (key, s) in own.value]
        if not have:
            continue
        paradigms = attribute.paradigms()
        if "judgment" in paradigms:
            pool = FormPool(bank.forms(attribute, "judgment"))
            span = spans.get(key)
            if attribute.kind == "continuous" and span is None:
                span = threshold_span(attribute, np.array([own.value[(key, s)] for s in have]))
            for sid in have:
                value = own.value[(key, sid)]
                asks = list(attribute.classes) if attribute.kind == "categorical" else [None] * judgments_per_subject
                for i, asked in enumerate(asks):
                    form = pool.draw(rng)
                    qid = f"consistency-judgment-{key}-{sid}-{i}"
                    if attribute.kind == "categorical":
                        text = form.text(attribute, asked_class=asked)
                        row = _row(qid, attribute, "judgment", [sid], text,
                                   judgment_answer(attribute, form, value, asked_class=asked), form, asked_class=asked)
                    else:
                        composed = compose(attribute, form, value, rng, span)
                        row = _row(qid, attribute, "judgment", [sid], composed.question, composed.answer, form,
                                   threshold=composed.threshold)
                    out.append(build_question(row, attribute))
        if "comparative" in paradigms and len(have) > 1:
            pool = FormPool(bank.forms(attribute, "comparative"))
            ranks = own.score if attribute.kind == "binary" else own.value
            pairs = [(have[i], have[(i + 1) % len(have)]) for i in range(len(have) if len(have) > 2 else 1)]
            for first, second in pairs:
                difference = float(ranks[(key, first)]) - float(ranks[(key, second)])
                if difference == 0:
                    continue
                form = pool.draw(rng)
                answer = FIRST if form.direction * difference > 0 else SECOND
                row = _row(f"consistency-comparative-{key}-{first}-{second}", attribute, "comparative",
                           [first, second], form.text(attribute), answer, form)
                out.append(build_question(row, attribute))
    return out


def _check(question: Question, registry) -> str:
    if question.group[1] == "comparative":
        return "comparative_vs_values"
    return "threshold_vs_number" if registry[question.group[0]].kind == "continuous" else "class_vs_prediction"


def _form_kind(question: Question) -> str:
    if question.negated:
        return "negated"
    return "reversed" if question.direction == -1 else "plain"


def _rates(pairs: list[tuple[str, bool]]) -> dict:
    groups: dict[str, list[bool]] = defaultdict(list)
    for key, agrees in pairs:
        groups[key].append(agrees)
    return {k: {"n": len(v), "agree": int(sum(v)), "rate": float(np.mean(v))} for k, v in sorted(groups.items())}


def agreement_report(questions: Sequence[Question], answers: dict[str, dict], registry,
                     own: OwnAnswers | None = None) -> dict:
    """Agreement of the model's `answers` (question id -> {"prediction"}) with the references of the
    `consistency_questions`, per check: overall, per attribute, per form kind (plain, negated, reversed)
    and wording, and per subject; with the target and the unparsable generated numbers."""
    per_check: dict[str, list[tuple[Question, bool]]] = defaultdict(list)
    for q in questions:
        if q.id in answers:
            per_check[_check(q, registry)].append((q, int(answers[q.id]["prediction"]) == int(q.reference)))
    report: dict[str, Any] = {"target": CONSISTENCY_TARGET}
    for check in CHECKS:
        pairs = per_check.get(check, [])
        agree = [a for _, a in pairs]
        report[check] = {
            "overall": {"n": len(agree), "agree": int(sum(agree)), "rate": float(np.mean(agree)) if agree else math.nan,
                        "meets_target": bool(agree) and float(np.mean(agree)) >= CONSISTENCY_TARGET},
            "by_attribute": _rates([(q.group[0], a) for q, a in pairs]),
            "by_form": _rates([(_form_kind(q), a) for q, a in pairs]),
            "by_wording": _rates([("held_out" if q.held_out else "training", a) for q, a in pairs]),
            "by_subject": _rates([(s, a) for q, a in pairs for s in q.subject_ids]),
        }
    if own is not None:
        report["unparsable_numbers"] = {k: len(v) for k, v in own.unparsable.items() if v}
    return report


def run_consistency(model, processor, attributes: Sequence, subject_ids: Sequence[str],
                    fcns_of: Callable[[Sequence[str]], list[np.ndarray]], registry,
                    answer: Callable[..., dict[str, dict]], *, seed: int = 0, judgments_per_subject: int = 3,
                    spans: dict[str, tuple[float, float]] | None = None) -> dict:
    """Ask `subject_ids` the predictive questions, then the judgments and comparatives their answers imply,
    and report the agreement (`agreement_report`), with the subjects' own answers and the question count.

    Args:
        answer: `(model, processor, questions, fcns_of) -> {id: {"score", "prediction", "text"?}}`, how the
            evaluation answers (`fcn_llm.answer_questions` with its batch size and generation length).
    """
    predictive = predictive_questions(attributes, subject_ids)
    own = own_answers(predictive, answer(model, processor, predictive, fcns_of), registry)
    checks = consistency_questions(own, attributes, subject_ids, np.random.default_rng(seed),
                                   judgments_per_subject=judgments_per_subject, spans=spans)
    report = agreement_report(checks, answer(model, processor, checks, fcns_of) if checks else {}, registry, own)
    report["subjects"] = list(subject_ids)
    report["questions"] = {"predictive": len(predictive), "generated": sum(q.target == "regression" for q in predictive),
                           "judgment": sum(q.group[1] == "judgment" for q in checks),
                           "comparative": sum(q.group[1] == "comparative" for q in checks)}
    report["own_answers"] = {f"{k}/{s}": v for (k, s), v in sorted(own.value.items())}
    return report
