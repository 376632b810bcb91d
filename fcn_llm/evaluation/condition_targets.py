"""The targets on condition judgments, with their uncertainty: per condition, FCN-LLM's AUC on judgments in held-out
wording against each baseline scored on the same questions, and the shuffled-FCN control against chance, each with
a 95 % interval from a bootstrap over subjects.

results.json ``condition_targets``::

    {"draws", "interval", "conditions": [keys],
     "comparisons": {baseline: {"margin", "by_condition": {key: {"fcn_llm", "baseline", "difference", "low", "high",
                                                                 "verdict", "n_subjects", "n_with_condition"}},
                                "mean": {"difference", "low", "high", "verdict"}}},
     "shuffled": {"by_condition": {key: {"auc", "low", "high", "verdict", "n_subjects", "n_with_condition"}},
                  "mean": {"auc", "low", "high", "verdict"}} or null}

A condition is a yes/no judgment that names no threshold and no class ("Does this subject have ADHD?"); answers to
questions asked the other way round are turned back (`report.collect`). `difference` = FCN-LLM's AUC - (the
baseline's AUC - `margin`) on the questions both answered; its target is >= 0 (`MARGINS`: the oracle's margin is
0.10, as "each condition >= oracle - 0.10"). The shuffled control (asked in training wording) has its target when
its AUC lies within `CHANCE_MARGIN` of 0.5. Verdicts: "met" (the estimate meets the target), "within noise" (it
misses, but the interval reaches the target) and "missed" (the whole interval misses it).

One bootstrap draw resamples the evaluated subjects with replacement, once for every condition and method, and a
subject's questions go with it (they share its FCN): so the intervals of the differences are paired, and the means
over conditions get intervals too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from fcn_llm.questions import Question
from .report import collect

# the baselines FCN-LLM's condition judgments are compared with, and how far below each the target lies
MARGINS = {"edge_regression": 0.0, "edge_regression_in_domain": 0.0, "oracle": 0.10, "fcn_llm_heads": 0.0,
           "encoder_supervised": 0.0}
CHANCE_MARGIN = 0.05
INTERVAL = 0.95
DRAWS = 1000


def is_condition_judgment(question: Question) -> bool:
    """A yes/no judgment about a condition: binary, no threshold, no asked class."""
    return (question.group[1] == "judgment" and question.target == "binary" and question.threshold is None
            and question.class_index is None)


def _auc(references: np.ndarray, scores: np.ndarray) -> float:
    """The rank AUC (ties count half); NaN with one class."""
    positive = references == 1
    n1 = int(positive.sum())
    n0 = len(references) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float((rankdata(scores)[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


@dataclass
class _Scored:
    """One method's answers to some questions, turned back: references and scores `(Q,)`, each question's subject
    (an index into the evaluated subjects) and its id."""

    references: np.ndarray
    scores: np.ndarray
    subject: np.ndarray
    ids: list[str]

    @classmethod
    def of(cls, questions: Sequence[Question], answers: dict[str, dict], subjects: dict[str, int]) -> "_Scored":
        """The questions `answers` scores with a finite score."""
        scored = [q for q in questions if q.id in answers
                  and np.all(np.isfinite(np.asarray(answers[q.id]["score"], dtype=float)))]
        references, scores, _, _ = collect(scored, answers)
        return cls(references, scores, np.array([subjects[q.subject_ids[0]] for q in scored], dtype=np.int64),
                   [q.id for q in scored])

    def restricted(self, ids: set[str]) -> "_Scored":
        keep = np.array([i in ids for i in self.ids], dtype=bool)
        return _Scored(self.references[keep], self.scores[keep], self.subject[keep],
                       [i for i, k in zip(self.ids, keep) if k])

    def sizes(self) -> dict[str, int]:
        """How many subjects the questions are about, and how many of them have the condition."""
        return {"n_subjects": int(len(np.unique(self.subject))),
                "n_with_condition": int(len(np.unique(self.subject[self.references == 1])))}

    def auc(self, counts: np.ndarray | None = None) -> float:
        """The AUC, on the subjects as drawn `counts` `(S,)` (each question repeated its subject's count) if given."""
        if counts is None:
            return _auc(self.references, self.scores)
        repeat = counts[self.subject]
        return _auc(np.repeat(self.references, repeat), np.repeat(self.scores, repeat))


def _interval(draws: np.ndarray) -> tuple[float, float]:
    tail = (1 - INTERVAL) / 2 * 100
    finite = draws[np.isfinite(draws)]
    if not len(finite):
        return float("nan"), float("nan")
    return float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail))


def _verdict(estimate: float, low: float, high: float, at_least: float = 0.0, at_most: float = np.inf) -> str:
    """"met" if `estimate` lies in [at_least, at_most], "within noise" if [low, high] overlaps it, else "missed"."""
    if at_least <= estimate <= at_most:
        return "met"
    return "within noise" if high >= at_least and low <= at_most else "missed"


def _summary(estimate: float, draws: np.ndarray, name: str, **target) -> dict:
    low, high = _interval(draws)
    return {name: float(estimate), "low": low, "high": high, "verdict": _verdict(estimate, low, high, **target)}


def condition_targets(questions: Sequence[Question], answers: dict[str, dict[str, dict]], *, seed: int = 0,
                      draws: int = DRAWS) -> dict | None:
    """The ``condition_targets`` entry of results.json (module docstring) from the evaluation's `questions` and
    `answers` (method -> question id -> {"score", "prediction"}); None without FCN-LLM's answers to condition
    judgments in held-out wording."""
    conditions = [q for q in questions if is_condition_judgment(q)]
    held_out = [q for q in conditions if q.held_out]
    if "fcn_llm" not in answers or not any(q.id in answers["fcn_llm"] for q in held_out):
        return None
    subjects = {s: i for i, s in enumerate(sorted({q.subject_ids[0] for q in conditions}))}
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(subjects), np.full(len(subjects), 1 / len(subjects)), size=draws)  # (draws, S)
    keys = sorted({q.group[0] for q in held_out if q.id in answers["fcn_llm"]})

    def per_condition(pool: list[Question], method: str) -> dict[str, _Scored]:
        return {key: _Scored.of([q for q in pool if q.group[0] == key], answers[method], subjects) for key in keys}

    llm = per_condition(held_out, "fcn_llm")
    comparisons = {}
    for baseline, margin in MARGINS.items():
        if baseline not in answers:
            continue
        rows, mean_draws = {}, []
        for key, scored in per_condition(held_out, baseline).items():
            both = set(scored.ids) & set(llm[key].ids)
            mine, theirs = llm[key].restricted(both), scored.restricted(both)
            estimate = mine.auc() - (theirs.auc() - margin)
            if not np.isfinite(estimate):
                continue
            difference = np.array([mine.auc(c) - theirs.auc(c) + margin for c in counts])
            rows[key] = {"fcn_llm": mine.auc(), "baseline": theirs.auc(),
                         **_summary(estimate, difference, "difference"), **mine.sizes()}
            mean_draws.append(difference)
        if rows:
            mean = _summary(np.mean([r["difference"] for r in rows.values()]), np.nanmean(mean_draws, axis=0),
                            "difference")
            comparisons[baseline] = {"margin": margin, "by_condition": rows, "mean": mean}
    shuffled = None
    if "fcn_llm_shuffled" in answers:
        rows, mean_draws = {}, []
        for key, scored in per_condition([q for q in conditions if not q.held_out], "fcn_llm_shuffled").items():
            estimate = scored.auc()
            if not np.isfinite(estimate):
                continue
            auc_draws = np.array([scored.auc(c) for c in counts])
            rows[key] = {**_summary(estimate, auc_draws, "auc", at_least=0.5 - CHANCE_MARGIN,
                                    at_most=0.5 + CHANCE_MARGIN), **scored.sizes()}
            mean_draws.append(auc_draws)
        if rows:
            shuffled = {"by_condition": rows,
                        "mean": _summary(np.mean([r["auc"] for r in rows.values()]), np.nanmean(mean_draws, axis=0),
                                         "auc", at_least=0.5 - CHANCE_MARGIN, at_most=0.5 + CHANCE_MARGIN)}
    return {"draws": draws, "interval": INTERVAL, "conditions": keys, "comparisons": comparisons, "shuffled": shuffled}
