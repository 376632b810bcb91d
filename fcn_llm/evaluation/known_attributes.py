"""Which attributes a model was trained on, and what it answers about the others.

A saved FCN-LLM records the attributes it learned as its attribute heads (`config.auxiliary_heads`,
fitted on the training subjects' values). Questions about any other attribute are still answered, but
their answers cannot come from anything the model learned about it: the evaluation flags their rows
and reports how confident the answers were (the mean probability of the chosen answer among the allowed
ones), naming the attributes the model knows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fcn_llm.questions import Question


def model_attributes(model) -> list[str] | None:
    """The attribute keys of the model's heads, or None when it has no heads (then nothing is known)."""
    heads = getattr(model.config, "auxiliary_heads", None)
    return [str(h["key"]) for h in heads] if heads else None


def answer_confidence(questions: Sequence[Question], answers: dict[str, dict]) -> float:
    """Mean probability of the chosen answer among the choices (binary: sigmoid of |log-likelihood ratio|;
    multiclass: the largest probability) over the scored-choice `questions` answered; NaN if none."""
    values = []
    for q in questions:
        a = answers.get(q.id)
        if a is None or q.target == "regression":
            continue
        score = np.asarray(a["score"], dtype=float)
        if not np.all(np.isfinite(score)):
            continue
        values.append(float(1.0 / (1.0 + np.exp(-abs(float(score))))) if q.target == "binary" else float(score.max()))
    return float(np.mean(values)) if values else float("nan")


def untrained_report(questions: Sequence[Question], answers: dict[str, dict], known: Sequence[str] | None) -> dict:
    """{attribute key: {"questions", "confidence"}} for the questions' attributes outside `known`
    (empty when `known` is None: the model does not say what it learned)."""
    if known is None:
        return {}
    out: dict[str, dict] = {}
    for key in sorted({q.group[0] for q in questions} - set(known)):
        asked = [q for q in questions if q.group[0] == key]
        out[key] = {"questions": len(asked), "confidence": answer_confidence(asked, answers)}
    return out


def untrained_note(untrained: dict, known: Sequence[str]) -> str:
    """One sentence naming the untrained attributes, their answers' confidence and the known attributes."""
    parts = ", ".join(f"{k!r} ({v['questions']} questions, mean confidence {v['confidence']:.2f})"
                      for k, v in untrained.items())
    return (f"the model was never trained on {parts}: their rows are answered but mean nothing; "
            f"the model knows: {', '.join(known)}")
