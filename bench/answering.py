"""Item 4: answering. The zero-shot scoring of judgment/predictive questions vs the bare LLM's forward
over the same prompt tokens; scoring vs `generate()` on judgment questions at batch 1 and 64.

Efficiency = (bare backbone forward over the same left-padded prompt batches, `<graph>` tokens as
words, `logits_to_keep=1`) / (`evaluation.fcn_llm.answer_questions`: chat template, processor, graph
encoding, one prefill per prompt, KV cache shared by the choices, the choices' tokens). The forward
is the work no answering method avoids; the rest is the evaluation's overhead.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
import torch

from fcn_llm.evaluation.fcn_llm import answer_questions
from fcn_llm.questions import YES, NO, Question, build_question
from fcn_llm.scoring import choice_log_likelihoods, generate_answers, length_sorted_batches

from .setup import BenchData, Setup, bare_batch
from .timing import interleaved, time_once

FcnsOf = Callable[[Sequence[str]], list[np.ndarray]]


def zero_shot_questions(data: BenchData, count: int, paradigms: Sequence[str] = ("judgment", "predictive"),
                        seed: int = 0) -> list[Question]:
    """`count` zero-shot questions answered by scoring choices (regression ones, generated, are left out)."""
    from datasets_scripts.attributes import load_registry

    registry = load_registry()
    rows = [r for r in data.rows["zero_shot"] if r["paradigm"] in paradigms and r["attribute"] in registry]
    questions = []
    for i in np.random.default_rng(seed).permutation(len(rows)):
        question = build_question(rows[i], registry[rows[i]["attribute"]])
        if question.target != "regression":
            questions.append(question)
        if len(questions) == count:
            break
    return questions


def lookup_fcns(data: BenchData) -> FcnsOf:
    """subject ids -> their FCNs `(N, N)` as numpy arrays."""
    return lambda ids: [np.asarray(data.lookup[s]) for s in ids]


def _prompt(setup: Setup, question: Question) -> str:
    return setup.processor.apply_chat_template(question.messages, add_generation_prompt=True, tokenize=False)


def prompt_batches(setup: Setup, questions: Sequence[Question], fcns_of: FcnsOf, batch_size: int) -> list[dict]:
    """The left-padded processor batches `answer_questions` prefills (same grouping by choices, same order)."""
    groups: dict[tuple, list[Question]] = defaultdict(list)
    for q in questions:
        groups[(q.target, q.choices)].append(q)
    batches = []
    for group in groups.values():
        for indices in length_sorted_batches(setup.processor, [_prompt(setup, q) for q in group], batch_size):
            part = [group[i] for i in indices]
            fcns = [f for q in part for f in fcns_of(q.subject_ids)]
            batches.append(setup.processor(text=[_prompt(setup, q) for q in part], fcns=fcns, padding=True,
                                           padding_side="left", return_tensors="pt"))
    return batches


def scoring_efficiency(setup: Setup, questions: Sequence[Question], fcns_of: FcnsOf, batch_size: int = 8,
                       repeats: int = 3, warmup: int = 1) -> dict:
    """Times of the whole scoring and of the bare forward over the same prompts; efficiency = forward / scoring."""
    setup.model.eval()
    setup.bare.eval()
    plain = [bare_batch(setup, b) for b in prompt_batches(setup, questions, fcns_of, batch_size)]

    def scoring():
        return answer_questions(setup.model, setup.processor, questions, fcns_of, batch_size=batch_size,
                                log=lambda *_: None)

    @torch.no_grad()
    def forward():
        for batch in plain:
            setup.bare(**batch, logits_to_keep=1)

    times = interleaved({"scoring": scoring, "bare_forward": forward}, repeats=repeats, warmup=warmup)
    score_s, forward_s = times["scoring"].median, times["bare_forward"].median
    subjects = sum(len(q.subject_ids) for q in questions)
    return {
        "questions": len(questions), "batch_size": batch_size,
        "choice_sets": sorted({"/".join(q.choices) for q in questions}),
        "prompt_tokens": int(sum(int(b["attention_mask"].sum()) for b in plain)),
        "scoring": times["scoring"].as_dict(unit="s"), "bare_forward": times["bare_forward"].as_dict(unit="s"),
        "efficiency": forward_s / score_s,
        "questions_per_s": len(questions) / score_s, "subject_questions_per_s": subjects / score_s,
    }


_ANSWER = re.compile(r"\s*(yes|no)\b", re.IGNORECASE)


def parse_yes_no(text: str) -> str | None:
    """"Yes." / "no, this subject ..." -> "Yes" / "No"; None if the text starts otherwise."""
    found = _ANSWER.match(text)
    return None if found is None else (YES if found.group(1).lower() == "yes" else NO)


def _share(flags: Sequence[bool]) -> float:
    return float(np.mean(flags)) if len(flags) else float("nan")


def scoring_vs_generate(setup: Setup, questions: Sequence[Question], fcns_of: FcnsOf,
                        batch_sizes: dict[int, int] | None = None, max_new_tokens: int = 8) -> dict:
    """Per batch size (-> number of questions): ms per question of scoring and of greedy `generate()`,
    and whether they give the same answers.

    `agreement`: share of questions whose generated answer starts with Yes/No where that equals the
    scored answer (the evaluation's scoring, which includes the end-of-turn token). `first_token_agreement`:
    the same against scoring without the end-of-turn token, which is exactly greedy decoding's first
    choice when that is Yes or No (so it must be 1.0).
    """
    batch_sizes = batch_sizes or {1: 16, 64: 64}
    setup.model.eval()
    out: dict = {}
    for batch_size, count in batch_sizes.items():
        part = [q for q in questions if q.choices == (YES, NO)][:count]
        prompts = [_prompt(setup, q) for q in part]
        fcns = [fcns_of(q.subject_ids) for q in part]
        score_s, scores = time_once(lambda: choice_log_likelihoods(setup.model, setup.processor, prompts, fcns,
                                                                   [YES, NO], batch_size=batch_size))
        gen_s, texts = time_once(lambda: generate_answers(setup.model, setup.processor, prompts, fcns,
                                                          batch_size=batch_size, max_new_tokens=max_new_tokens))
        prefix = choice_log_likelihoods(setup.model, setup.processor, prompts, fcns, [YES, NO],
                                        batch_size=batch_size, append_end_of_turn=False)
        scored = [(YES, NO)[int(i)] for i in np.argmax(scores, 1)]
        first = [(YES, NO)[int(i)] for i in np.argmax(prefix, 1)]
        generated = [parse_yes_no(t) for t in texts]
        valid = [i for i, g in enumerate(generated) if g is not None]
        out[f"batch_{batch_size}"] = {
            "questions": len(part), "scoring_ms_per_question": score_s / len(part) * 1e3,
            "generate_ms_per_question": gen_s / len(part) * 1e3, "generate_over_scoring": gen_s / score_s,
            "generated_yes_no": len(valid) / len(part),
            "agreement": _share([scored[i] == generated[i] for i in valid]),
            "first_token_agreement": _share([first[i] == generated[i] for i in valid]),
            "examples": [{"generated": texts[i], "scored": scored[i]} for i in range(min(3, len(part)))],
        }
    return out
