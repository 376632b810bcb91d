"""FCN-LLM's answers to `Question`s: likelihood-scored choices, or generated numbers."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from fcn_llm.questions import Question
from fcn_llm.scoring import choice_log_likelihoods, generate_answers, parse_number


def answer_questions(
    model,
    processor,
    questions: Sequence[Question],
    fcns_of: Callable[[Sequence[str]], list[np.ndarray]],
    *,
    batch_size: int = 8,
    max_new_tokens: int = 8,
    log: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Answer every question; returns id -> {"score", "prediction", "text"?}.

    Binary targets: score = log P(choices[0]) - log P(choices[1]) (log-likelihood ratio), prediction
    = score > 0. Multiclass: score = softmax of the choices' log-likelihoods `(C,)`, prediction = argmax.
    Regression: the first number of the greedy answer (NaN if none; "text" keeps the answer).

    Args:
        fcns_of: subject ids -> their FCNs `(N, N)` in the same order.
    """
    groups: dict[tuple, list[Question]] = defaultdict(list)
    for q in questions:
        groups[(q.target, q.choices)].append(q)
    answers: dict[str, dict] = {}
    for (target, choices), group in groups.items():
        start = time.perf_counter()
        prompts = [processor.apply_chat_template(q.messages, add_generation_prompt=True, tokenize=False) for q in group]
        fcns = [fcns_of(q.subject_ids) for q in group]
        if target == "regression":
            texts = generate_answers(model, processor, prompts, fcns, batch_size=batch_size,
                                     max_new_tokens=max_new_tokens)
            for q, text in zip(group, texts):
                value = parse_number(text)
                answers[q.id] = {"score": np.nan if value is None else value,
                                 "prediction": np.nan if value is None else value, "text": text}
        else:
            ll = choice_log_likelihoods(model, processor, prompts, fcns, list(choices), batch_size=batch_size)
            for q, row in zip(group, ll):
                if target == "binary":
                    score = float(row[0] - row[1])
                    answers[q.id] = {"score": score, "prediction": int(score > 0)}
                else:
                    probs = np.exp(row - row.max())
                    probs /= probs.sum()
                    answers[q.id] = {"score": probs, "prediction": int(np.argmax(row))}
        elapsed = time.perf_counter() - start
        log(f"  fcn_llm: {len(group)} {target} questions {list(choices) if choices else '(generated)'} "
            f"in {elapsed:.1f}s ({len(group) / max(elapsed, 1e-9):.1f}/s)")
    return answers
