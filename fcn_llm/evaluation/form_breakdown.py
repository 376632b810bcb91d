"""FCN-LLM's judgments split by form: questions asked plainly vs turned (negated or reversed), and continuous
judgments whose threshold the training questions named vs thresholds never seen in training.

results.json ``forms``::

    {"turned_vs_plain": {"by_attribute": {key: {"plain", "turned", "n_plain", "n_turned"}},
                         "mean_plain", "mean_turned", "ratio", "target"},
     "thresholds": {"by_attribute": {key: {"seen", "unseen", "n_seen", "n_unseen"}},
                    "mean_seen", "mean_unseen", "difference", "target"},
     "held_out_parts": [{"attribute", "paradigm", "part", "metric", "n", "value", "n_training", "training_value",
                         "difference", "example", "pooled"}, ...]}

Each AUC is over the judgments of one attribute in that form (both wordings), answers of turned questions turned
back (`report.collect`), so both halves measure the attribute; the means are over the attributes where both halves
have an AUC (NaN where a half holds one class only).

``held_out_parts`` says which piece of held-out wording loses the answer, in every paradigm: a question's
`template_id` (``"age/judgment/under/term0/answer"``) names its frame, its term or class-term slots and its answer
instruction; a part is held out for an (attribute, paradigm) when none of its training-wording questions carries it.
Per such part, the row's main metric (`report.main_metrics`: AUC, accuracy or Pearson r) over the held-out questions
whose only held-out part it is (at least `MIN_PART_QUESTIONS` of them), minus the same metric over the training-wording
questions that share the rest of their form (a pooled AUC of threshold judgments depends on the mix of frames and
thresholds), worst first, with one of those questions as its `example`. A frame or answer instruction shared by
several attributes (a family's held-out frame) is scored pooled over the attributes that ask it fewer than
`MIN_PART_QUESTIONS` times (`pooled`: their keys).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from fcn_llm.questions import Question, question_text
from .report import collect, main_metrics, plain_way, row_metrics

TURNED_TARGET = 0.95  # turned forms' mean AUC at least this fraction of the plain forms'
THRESHOLD_TARGET = 0.03  # unseen thresholds' mean AUC within this of the seen ones'
MIN_PART_QUESTIONS = 20  # a held-out part is scored on at least this many questions (fewer: noise, or a training part
# that the evaluated subjects' few questions happen not to carry)


def _auc(questions: list[Question], answers: dict[str, dict]) -> float:
    refs, scores, _, _ = collect(questions, answers)
    return float(roc_auc_score(refs, scores)) if len(set(refs.tolist())) == 2 else float("nan")


def _split(judgments: list[Question], answers: dict[str, dict], side, names: tuple[str, str]) -> dict:
    """Per attribute, the AUC of its judgments on each side of `side(question) -> bool` (True: names[1])."""
    by_attribute = {}
    for key in sorted({q.group[0] for q in judgments}):
        mine = [q for q in judgments if q.group[0] == key]
        halves = {name: [q for q in mine if side(q) == (name == names[1])] for name in names}
        by_attribute[key] = {**{name: _auc(group, answers) for name, group in halves.items()},
                             **{f"n_{name}": len(group) for name, group in halves.items()}}
    both = [v for v in by_attribute.values() if np.isfinite(v[names[0]]) and np.isfinite(v[names[1]])]
    means = {f"mean_{name}": float(np.mean([v[name] for v in both])) if both else float("nan") for name in names}
    return {"by_attribute": by_attribute, **means, "attributes_compared": len(both)}


def form_report(questions: list[Question], answers: dict[str, dict], seen_thresholds: dict[str, set[float]]) -> dict:
    """The ``forms`` entry of results.json from FCN-LLM's `answers` (question id -> {"score", ...})."""
    judgments = [q for q in questions if q.group[1] == "judgment" and q.target == "binary" and q.id in answers]
    turned = _split(judgments, answers, lambda q: plain_way(q) == -1, ("plain", "turned"))
    turned.update(ratio=turned["mean_turned"] / turned["mean_plain"], target=TURNED_TARGET)
    named = [q for q in judgments if q.threshold is not None]
    thresholds = _split(named, answers, lambda q: float(q.threshold) not in seen_thresholds.get(q.group[0], set()),
                        ("seen", "unseen"))
    thresholds.update(difference=thresholds["mean_unseen"] - thresholds["mean_seen"], target=THRESHOLD_TARGET)
    return {"turned_vs_plain": turned, "thresholds": thresholds, "held_out_parts": held_out_parts(questions, answers)}


def wording_parts(template_id: str) -> list[str]:
    """The frame, slots and answer instruction a `template_id` names: "adhd/judgment/ruled_out/term1/answer" ->
    ["frame ruled_out", "term term1", "instruction answer"]."""
    _, _, frame, *slots, instruction = template_id.split("/")
    return [f"frame {frame}", *(f"term {slot}" for slot in slots), f"instruction {instruction}"]


def _metric(questions: list[Question], answers: dict[str, dict], metric: str) -> float:
    """`metric` of FCN-LLM's answers to `questions` (`report.row_metrics`); NaN where it cannot be computed."""
    values = row_metrics(questions, answers) if questions else None
    value = (values or {}).get(metric, float("nan"))
    return float(value) if value is not None else float("nan")


def held_out_parts(questions: list[Question], answers: dict[str, dict]) -> list[dict]:
    """Per (attribute, paradigm) and held-out part of its questions' wording, the row's main metric on the held-out
    questions whose only held-out part it is, against the same metric on the training-wording questions that share
    the rest of their form (the same frame and term where the part is an answer instruction, ...), so that a part is
    not blamed for a harder mix of frames; parts on fewer than `MIN_PART_QUESTIONS` such questions, and parts where a
    metric is undefined (one class only), are left out. Wording that several attributes share (a family's frame, an
    answer instruction; not a term slot) is also scored pooled over those that ask it fewer than `MIN_PART_QUESTIONS`
    times (`pooled`: their keys; `_pooled_metric`). Worst first."""
    by_part: dict[tuple[str, str, str], list[tuple]] = {}
    for key, paradigm, metric, part, group, reference in _part_questions(questions, answers):
        by_part.setdefault((paradigm, part, metric), []).append((key, group, reference))
    entries = []
    for (paradigm, part, metric), carried in sorted(by_part.items()):
        few = [(key, group, reference) for key, group, reference in carried if len(group) < MIN_PART_QUESTIONS]
        for key, group, reference in carried:
            if len(group) >= MIN_PART_QUESTIONS:
                entries.append(_part_entry(key, paradigm, part, metric, [group], [reference], answers))
        shared = not part.startswith("term ")  # a term slot holds different words for each attribute
        if shared and len(few) > 1 and sum(len(group) for _, group, _ in few) >= MIN_PART_QUESTIONS:
            entries.append(_part_entry(f"{len(few)} attributes", paradigm, part, metric, [g for _, g, _ in few],
                                       [r for _, _, r in few], answers, pooled=[key for key, _, _ in few]))
    entries = [e for e in entries if np.isfinite(e["value"]) and np.isfinite(e["training_value"])]
    return sorted(entries, key=lambda e: (e["difference"], e["attribute"], e["paradigm"]))


def _pooled_metric(groups: list[list[Question]], answers: dict[str, dict], metric: str) -> float:
    """`metric` over the questions of one or several attributes: an AUC over all of them together (every judgment's
    score is its yes-vs-no margin, one scale for all attributes, and a few questions of one attribute rarely hold
    both answers), an accuracy or Pearson r as the mean of each attribute's, weighted by its questions (classes and
    units differ)."""
    if metric == "auc":
        return _metric([q for group in groups for q in group], answers, metric)
    values = [(_metric(group, answers, metric), len(group)) for group in groups]
    finite = [(value, n) for value, n in values if np.isfinite(value)]
    return float(np.average([v for v, _ in finite], weights=[n for _, n in finite])) if finite else float("nan")


def _part_questions(questions: list[Question], answers: dict[str, dict]):
    """(attribute, paradigm, metric, part, the held-out questions whose only new part it is, the training-wording
    questions sharing the rest of their form) for every held-out part of every (attribute, paradigm)."""
    groups: dict[tuple[str, str], list[tuple[Question, list[str]]]] = {}
    for q in questions:
        if q.template_id and q.id in answers:
            groups.setdefault(q.group, []).append((q, wording_parts(q.template_id)))
    for (key, paradigm), mine in sorted(groups.items()):
        metric = main_metrics(mine[0][0].target, paradigm)[0]
        training = [(q, parts) for q, parts in mine if not q.held_out]
        trained_parts = {part for _, parts in training for part in parts}
        carriers: dict[tuple[int, str], list[tuple[Question, list[str]]]] = {}
        for q, parts in mine:
            new = [i for i, part in enumerate(parts) if part not in trained_parts]
            if q.held_out and len(new) == 1:  # a question new in two parts would blame both for either's loss
                carriers.setdefault((new[0], parts[new[0]]), []).append((q, parts))
        for (position, part), group in carriers.items():
            rest = {_without(parts, position) for _, parts in group}
            reference = [q for q, parts in training if _without(parts, position) in rest]
            yield key, paradigm, metric, part, [q for q, _ in group], reference


def _part_entry(attribute: str, paradigm: str, part: str, metric: str, groups: list[list[Question]],
                references: list[list[Question]], answers: dict[str, dict], pooled: list[str] | None = None) -> dict:
    """A ``held_out_parts`` entry from the held-out questions carrying the part and their training-wording
    references, one list of each per attribute (`_pooled_metric`)."""
    value, reference_value = _pooled_metric(groups, answers, metric), _pooled_metric(references, answers, metric)
    return {"attribute": attribute, "paradigm": paradigm, "part": part, "metric": metric,
            "n": sum(map(len, groups)), "value": value, "n_training": sum(map(len, references)),
            "training_value": reference_value, "difference": value - reference_value,
            "example": question_text(groups[0][0].messages), "pooled": pooled}


def _without(parts: list[str], position: int) -> tuple[str, ...]:
    """A question's `wording_parts` but the one at `position`: the rest of its form."""
    return tuple(parts[:position] + parts[position + 1:])
