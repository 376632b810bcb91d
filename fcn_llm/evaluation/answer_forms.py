"""Whether a generated answer is in the form the question asks for, and the parsability report.

A greedy answer is parsable when it reads as the asked form: a yes/no question's "Yes"/"No", a class
question's class name (or a binary attribute's label), a comparative's "First"/"Second" (a
leading "the" optional), each alone or followed by a non-letter ("Yes, ...", "Right-handed"); or, for a
number question, a number (`scoring.parse_number`) inside the attribute's valid range.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from fcn_llm.questions import Question, parse_choice
from .report import row_key
from fcn_llm.scoring import generate_answers, parse_number

PARSABILITY_TARGET = 0.99


def parse_answer(question: Question, text: str, attribute) -> float | int | None:
    """What the generated `text` answers to `question` about `attribute`: the choice index (binary and
    multiclass targets), the number (regression; None outside the attribute's valid range), or None."""
    if question.target != "regression":
        return parse_choice(text, question.choices)
    value = parse_number(text)
    if value is None:
        return None
    if attribute.valid_range is not None:
        lo, hi = attribute.valid_range
        if not lo <= value <= hi:
            return None
    return value


def _rate(parsable: int, n: int) -> dict:
    return {"n": n, "parsable": parsable, "rate": parsable / n if n else float("nan")}


def parsability_report(questions: Sequence[Question], texts: dict[str, str], registry) -> dict:
    """Share of `questions` whose generated text (`texts`: question id -> answer) parses into the asked
    form, overall (pooled over the generated answers), per paradigm, per wording and per results row;
    with up to 8 unparsable examples. Questions without a text are not counted."""
    counts: dict[str, dict[str, list[int]]] = {"by_paradigm": defaultdict(lambda: [0, 0]),
                                               "by_forms": defaultdict(lambda: [0, 0]),
                                               "rows": defaultdict(lambda: [0, 0])}
    total = [0, 0]
    examples = []
    for q in questions:
        if q.id not in texts:
            continue
        ok = parse_answer(q, texts[q.id], registry[q.group[0]]) is not None
        keys = {"by_paradigm": q.group[1], "by_forms": "held_out" if q.held_out else "training",
                "rows": row_key(q.group[0], q.group[1], q.held_out)}
        for part, key in keys.items():
            counts[part][key][0] += ok
            counts[part][key][1] += 1
        total[0] += ok
        total[1] += 1
        if not ok and len(examples) < 8:
            examples.append({"id": q.id, "row": keys["rows"], "answer": texts[q.id]})
    out = {"target": PARSABILITY_TARGET, "overall": _rate(*total),
           "meets_target": total[1] > 0 and total[0] / total[1] >= PARSABILITY_TARGET}
    for part, groups in counts.items():
        out[part] = {k: _rate(*v) for k, v in sorted(groups.items())}
    out["unparsable_examples"] = examples
    return out


def sample_questions(questions: Sequence[Question], count: int, seed: int = 0) -> list[Question]:
    """Up to `count` questions spread evenly over the results rows (attribute, paradigm, wording): rows
    take turns giving one question each, in a seeded order, until `count` are taken."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[Question]] = defaultdict(list)
    for q in questions:
        rows[row_key(q.group[0], q.group[1], q.held_out)].append(q)
    queues = [[group[i] for i in rng.permutation(len(group))] for _, group in sorted(rows.items())]
    taken: list[Question] = []
    while len(taken) < count and any(queues):
        for queue in queues:
            if queue and len(taken) < count:
                taken.append(queue.pop())
    return taken


def generate_texts(model, processor, questions: Sequence[Question],
                   fcns_of: Callable[[Sequence[str]], list[np.ndarray]], *, batch_size: int = 8,
                   max_new_tokens: int = 8) -> dict[str, str]:
    """Question id -> the model's greedy answer text (`scoring.generate_answers`)."""
    if not questions:
        return {}
    prompts = [processor.apply_chat_template(q.messages, add_generation_prompt=True, tokenize=False) for q in questions]
    texts = generate_answers(model, processor, prompts, [fcns_of(q.subject_ids) for q in questions],
                             batch_size=batch_size, max_new_tokens=max_new_tokens)
    return {q.id: t for q, t in zip(questions, texts)}
