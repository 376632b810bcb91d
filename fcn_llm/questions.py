"""What each zero-shot instruction asks, its allowed answers and its reference.

Every instruction becomes a `Question`: a `target` type (``"binary"``: reference 0/1; ``"multiclass"``:
class index; ``"regression"``: a value), the allowed `choices` (scored by log-likelihood; none for
regression, answered by generation), and what the baselines need to answer it from per-subject
predictions (judgment threshold or class, direction, negation). These details are read from the
instruction's columns (`threshold`, `asked_class`, `direction`, `negated`, `held_out`, `template_id`,
written by `datasets_scripts/build_instructions.py`), so any wording works; for datasets built without
those columns they come from the registry's templates (a judgment template with ``{threshold}`` is
matched back to read the threshold).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from datasets_scripts.instructions import FIRST, GRAPH_TOKEN, SECOND
from processing import FCNProcessor

YES, NO = "Yes", "No"


@dataclass(frozen=True)
class Question:
    """One instruction, ready to score.

    Attributes:
        group: (attribute key, paradigm), the results row it belongs to.
        target: ``"binary"``, ``"multiclass"`` or ``"regression"``.
        choices: answers scored by likelihood; for binary targets choices[0] is the positive answer.
        reference: 0/1, class index, or value (regression).
        subject_ids: the subjects, in `<graph>` order.
        threshold: continuous judgment: "is the value above `threshold`?" (below it with direction -1).
        class_index: categorical judgment: "is the subject of class `class_index`?".
        direction: +1 asks for the higher value / the condition, -1 for the lower / its absence
            (comparatives; continuous judgments: "younger than").
        negated: judgments: "Yes" means the plain question's "No" ("Can ADHD be ruled out?").
        held_out: the question's wording (frame, term or answer instruction) is never trained on.
        template_id: the question's form in the question bank (None for rows without it).
    """

    id: str
    group: tuple[str, str]
    target: str
    messages: list
    subject_ids: tuple[str, ...]
    choices: tuple[str, ...]
    reference: float
    threshold: float | None = None
    class_index: int | None = None
    direction: int = 1
    negated: bool = False
    held_out: bool = False
    template_id: str | None = None


def _text(messages: list[dict]) -> str:
    content = messages[-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def question_text(messages: list[dict]) -> str:
    """The question of the last message, on one line: its text after the last `<graph>` placeholder ("Subject 1:
    <graph> Subject 2: <graph> Which is older?" -> "Which is older?"), or the whole text without placeholders where
    nothing follows them."""
    text = _text(messages)
    after = text.rsplit(GRAPH_TOKEN, 1)[-1]
    return " ".join((after if after.strip() else text.replace(GRAPH_TOKEN, " ")).split())


def _template_regex(template: str) -> re.Pattern:
    pattern = re.escape(template)
    pattern = pattern.replace(re.escape("{threshold}"), r"(?P<threshold>[-+]?\d+(?:\.\d+)?)")
    pattern = pattern.replace(re.escape("{phrase}"), r"(?P<phrase>.+?)")
    pattern = pattern.replace(re.escape("{units}"), r".*?")
    return re.compile(pattern)


def _match(templates: list[str], text: str) -> re.Match | None:
    for template in templates:
        found = _template_regex(template).search(text)
        if found:
            return found
    return None


def _normalise(answer: str) -> str:
    return str(answer).strip().rstrip(".").strip().casefold()


def without_article(text: str) -> str:
    """A normalised answer without a leading "the " ("the first" -> "first")."""
    return text[4:] if text.startswith("the ") else text


def parse_choice(text: str, choices: Sequence[str]) -> int | None:
    """Index of the choice `text` answers with, or None: the choice alone, or the choice followed by a
    non-letter; the longest matching choice wins ("No" is not read out of "Not sure")."""
    answer = without_article(_normalise(text))
    options = sorted(((len(c), i, without_article(_normalise(c))) for i, c in enumerate(choices)), reverse=True)
    for _, index, choice in options:
        if answer == choice:
            return index
        if answer.startswith(choice) and not answer[len(choice)].isalnum():
            return index
    return None


def _find(answer: str, choices: tuple[str, ...], where: str) -> int:
    folded = [without_article(_normalise(c)) for c in choices]
    key = without_article(_normalise(answer))
    if key not in folded:
        raise ValueError(f"{where}: answer {answer!r} is not one of the allowed answers {list(choices)}.")
    return folded.index(key)


def row_value(row, name: str) -> Any:
    """The row's value in column `name` (a Series or a dict); None where the column is absent or null."""
    value = row.get(name) if hasattr(row, "get") else None
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return None
    return value


def check_threshold(attribute, threshold: float, where: str = "") -> float:
    """`threshold` as a float; ValueError naming the attribute, the value and the range if it lies outside
    the attribute's valid range."""
    at = f"{where}: " if where else ""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"{at}threshold {threshold!r} for attribute {attribute.key!r} is not a number.") from None
    if not math.isfinite(value):
        raise ValueError(f"{at}threshold {value} for attribute {attribute.key!r} is not a finite number.")
    if attribute.valid_range is not None:
        lo, hi = attribute.valid_range
        if not lo <= value <= hi:
            raise ValueError(f"{at}threshold {value:g} for attribute {attribute.key!r} is outside its valid range "
                             f"[{lo:g}, {hi:g}]{' ' + attribute.units if attribute.units else ''}.")
    return value


def _direction(row, where: str) -> int | None:
    value = row_value(row, "direction")
    if value is None:
        return None
    if int(value) not in (1, -1) or float(value) != int(value):
        raise ValueError(f"{where}: direction {value!r} must be +1 (the higher value / the condition) or -1.")
    return int(value)


def build_question(row: pd.Series, attribute, subject_value=None) -> Question:
    """The `Question` of one instruction row, for `attribute` (a registry `Attribute`).

    Threshold, asked class, direction and negation come from the row's `threshold`, `asked_class`,
    `direction` and `negated` columns where it has them, else from matching the registry's templates.

    Args:
        subject_value: the subject's attribute value (predictive continuous reference; the answer
            text is rounded); falls back to the answer text.
    """
    where = f"instruction {row['id']!r} ({attribute.key}, {row['paradigm']})"
    messages = FCNProcessor.prompt_messages(row["messages"])
    text = _text(messages)
    paradigm = row["paradigm"]
    template_id = row_value(row, "template_id")
    common = dict(id=str(row["id"]), group=(attribute.key, paradigm), messages=messages,
                  subject_ids=tuple(row["subject_ids"]), held_out=bool(row_value(row, "held_out") or False),
                  template_id=None if template_id is None else str(template_id))
    if paradigm == "predictive":
        if attribute.kind == "binary":
            choices = (attribute.labels["1"], attribute.labels["0"])
            return Question(**common, target="binary", choices=choices,
                            reference=float(_find(row["answer"], choices, where) == 0))
        if attribute.kind == "categorical":
            return Question(**common, target="multiclass", choices=tuple(attribute.classes),
                            reference=float(_find(row["answer"], tuple(attribute.classes), where)))
        value = subject_value if subject_value is not None and not pd.isna(subject_value) else row["answer"]
        try:
            reference = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: answer {row['answer']!r} is not a number.") from None
        return Question(**common, target="regression", choices=(), reference=reference)
    if paradigm == "judgment":
        reference = float(_find(row["answer"], (YES, NO), where) == 0)
        extra: dict = {"direction": _direction(row, where) or 1, "negated": bool(row_value(row, "negated") or False)}
        if attribute.kind == "continuous":
            threshold = row_value(row, "threshold")
            if threshold is None and template_id is not None:
                raise ValueError(f"{where}: the row names its form ({template_id!r}) but its threshold column is "
                                 f"empty: {text!r}.")
            if threshold is None:
                found = _match(attribute.templates["judgment"], text)
                if found is None:
                    raise ValueError(f"{where}: the question matches none of the registry's judgment templates, so "
                                     f"its threshold is unknown (and the row has no threshold column): {text!r}.")
                threshold = found.group("threshold")
            extra["threshold"] = check_threshold(attribute, threshold, where)
        elif attribute.kind == "categorical":
            asked = row_value(row, "asked_class")
            if asked is not None:
                if str(asked) not in attribute.classes:
                    raise ValueError(f"{where}: asked class {asked!r} is not one of {list(attribute.classes)}.")
                extra["class_index"] = list(attribute.classes).index(str(asked))
            else:
                found = _match(attribute.templates["judgment"], text)
                phrases = {p.casefold(): c for c, p in attribute.class_phrases.items()}
                phrase = found.group("phrase").casefold() if found else None
                if phrase not in phrases:
                    raise ValueError(f"{where}: cannot tell which class the question asks about ({text!r}); "
                                     f"class phrases: {attribute.class_phrases}.")
                extra["class_index"] = list(attribute.classes).index(phrases[phrase])
        return Question(**common, target="binary", choices=(YES, NO), reference=reference, **extra)
    if paradigm == "comparative":
        if len(row["subject_ids"]) != 2:
            raise ValueError(f"{where}: a comparative question needs 2 subjects, got {len(row['subject_ids'])}.")
        direction = _direction(row, where)
        if direction is None:
            direction = -1 if _match(attribute.templates.get("comparative_lower", []), text) is not None else 1
        reference = float(_find(row["answer"], (FIRST, SECOND), where) == 0)
        return Question(**common, target="binary", choices=(FIRST, SECOND), reference=reference, direction=direction)
    raise ValueError(f"{where}: unknown paradigm {paradigm!r}; expected predictive, judgment or comparative.")


def baseline_answer(question: Question, predictions: np.ndarray) -> tuple[np.ndarray | float, int | float]:
    """A baseline's (score, prediction) for `question` from per-subject predictions of its subjects.

    The score is turned the way the question asks: a comparative asking for the lower value ranks the
    first subject by its lower prediction; a judgment with direction -1 ("younger than 40?") scores
    threshold - value; a negated judgment ("Can ADHD be ruled out?") the plain question's score negated.
    Yes/no scores are centred (value - threshold, the log-odds of a probability), so that plain and
    negated questions pooled in one AUC rank on one scale.

    Args:
        predictions: `(k,)` for binary P(1) / continuous values, `(k, C)` class probabilities; k = its subjects.
    Returns:
        binary target: (score of the answer "Yes" / "The first", predicted 0/1); multiclass: (probabilities
        `(C,)`, class); regression: (value, value).
    """
    p = np.asarray(predictions, dtype=float)
    if question.target == "regression":
        return float(p[0]), float(p[0])
    if question.target == "multiclass":
        return p[0], int(np.argmax(p[0]))
    if len(question.subject_ids) == 2:  # comparative: the first if it ranks higher (lower when asked)
        score = question.direction * float(p[0] - p[1])
        return score, int(score > 0)
    sign = -1.0 if question.negated else 1.0
    if question.threshold is not None:
        score = sign * question.direction * float(p[0] - question.threshold)
        return score, int(score > 0)
    if question.class_index is not None:
        plain = _log_odds(p[0][question.class_index])
        asked = int(np.argmax(p[0]) == question.class_index)
        return sign * plain, asked if not question.negated else 1 - asked
    plain = _log_odds(p[0])
    return sign * plain, int(plain > 0) if not question.negated else int(plain < 0)


def _log_odds(probability: float) -> float:
    """log(p / (1 - p)): a score a negation turns exactly (-log-odds(p) = log-odds(1 - p)), so plain and
    negated judgments rank on one scale."""
    p = float(np.clip(probability, 1e-6, 1 - 1e-6))
    return float(np.log(p / (1 - p)))
