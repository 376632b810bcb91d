"""The zero-shot evaluation end to end: FCN-LLM vs baselines vs oracle on unseen cohorts.

Subjects: the zero-shot split is divided per dataset into an in-domain part (`in_domain_fraction`,
the training set of `edge_regression_in_domain`) and the evaluation part; every method is scored on
the questions whose subjects all lie in the evaluation part (so on the same subjects).
`max_subjects` caps the evaluation part (a seeded random subset) for quick runs; the in-domain part
is drawn from the whole zero-shot cohort first, so it does not shrink with it.

With `fcn_llm` among the methods, the report also checks FCN-LLM's own answers (`_answer_checks`):
their parsability (`answer_forms`), their consistency across paradigms (`consistency`) and a sanity
report on real HCP FCNs (`real_data`); rows about attributes the model has no head for are flagged
(`known_attributes`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from datasets_scripts.attributes import load_registry
from datasets_scripts.question_bank import threshold_span

from . import baselines
from .controls import shuffled_partners, without_graphs
from .data import TRAIN_SPLIT, EvaluationData, in_domain_split, load_evaluation_data
from .answer_forms import generate_texts, parsability_report, sample_questions
from .condition_targets import condition_targets
from .consistency import run_consistency
from .form_breakdown import form_report
from .fcn_llm import answer_questions
from .known_attributes import model_attributes, untrained_note, untrained_report
from .model_io import load_model_and_processor
from .plots import write_plots
from fcn_llm.questions import Question, baseline_answer, build_question
from .real_data import real_data_report
from .report import LLM_METHODS, METHODS, build_results, markdown_table, write_json, write_markdown


def _questions(data: EvaluationData, eval_rows: np.ndarray, registry, notes: list[str]) -> list[Question]:
    """Questions whose subjects all lie in `eval_rows`; unknown attributes are skipped with a note."""
    allowed = set(data.subjects["subject_id"].iloc[eval_rows])
    unknown: dict[str, int] = {}
    questions = []
    for _, row in data.instructions.iterrows():
        if not set(row["subject_ids"]) <= allowed:
            continue
        key = row["attribute"]
        if key not in registry:
            unknown[key] = unknown.get(key, 0) + 1
            continue
        attribute = registry[key]
        value = None
        if row["paradigm"] == "predictive" and attribute.kind == "continuous" and key in data.subjects.columns:
            value = data.subjects[key].iloc[data.rows(row["subject_ids"])[0]]
        questions.append(build_question(row, attribute, value))
    for key, count in unknown.items():
        notes.append(f"{count} instructions about attribute {key!r}, which the registry does not define, were skipped")
    return questions


def _baseline_answers(questions: list[Question], data: EvaluationData, rows: np.ndarray,
                      predictions: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per question id: {"score", "prediction"} from per-subject `predictions` (aligned with `rows`)."""
    position = {int(r): i for i, r in enumerate(rows)}
    answers = {}
    for q in questions:
        key = q.group[0]
        if key not in predictions:
            continue
        idx = [position[int(r)] for r in data.rows(q.subject_ids)]
        score, prediction = baseline_answer(q, predictions[key][idx])
        answers[q.id] = {"score": score, "prediction": prediction}
    return answers


def _control_scope(questions: list[Question], conditions: frozenset[str]) -> list[Question]:
    """What the controls are asked: the scored-choice questions about `conditions`, in training wording."""
    return [q for q in questions if not q.held_out and q.target != "regression" and q.group[0] in conditions]


def _llm_inputs(method: str, questions: list[Question], data: EvaluationData, eval_rows: np.ndarray, processor,
                seed: int, conditions: frozenset[str] = frozenset()
                ) -> tuple[list[Question], Callable[[Sequence[str]], list[np.ndarray]]]:
    """The questions FCN-LLM is asked under `method` and the FCN lookup it answers them with:
    `fcn_llm` the subjects' own FCNs, `fcn_llm_shuffled` another evaluated subject's from the same site,
    `text_only` the questions without `<graph>` and no FCN; the two controls are asked `_control_scope`."""
    if method == "text_only":
        graph_token = getattr(processor, "graph_token", "<graph>")
        return [without_graphs(q, graph_token) for q in _control_scope(questions, conditions)], lambda ids: []
    partner = {}
    if method == "fcn_llm_shuffled":  # where answers come from: the conditions' scored questions in training wording
        partner = shuffled_partners(data.subjects, eval_rows, seed)
        questions = _control_scope(questions, conditions)
    cache: dict[str, np.ndarray] = {}

    def fcns_of(ids):
        ids = [partner.get(s, s) for s in ids]
        return [cache.setdefault(s, data.fcns[data.rows([s])[0]]) for s in ids]

    return questions, fcns_of


def _distinct_texts(questions: list[Question]) -> dict[str, Question]:
    """Question id -> the first question with the same messages and choices (one answer serves all
    subjects when no FCN is shown)."""
    first: dict[tuple, Question] = {}
    out = {}
    for q in questions:
        key = (q.target, q.choices, repr(q.messages))
        out[q.id] = first.setdefault(key, q)
    return out


def _answer_checks(model, processor, questions: list[Question], answers: dict[str, dict], data: EvaluationData,
                   eval_rows: np.ndarray, registry, keys: list[str], known: list[str] | None, *, seed: int,
                   batch_size: int, max_new_tokens: int, parsability_questions: int, consistency_subjects: int,
                   real_data: bool, log: Callable[[str], None]) -> dict:
    """{"parsability", "consistency", "real_data"}: FCN-LLM's generated answers to the zero-shot questions (its
    numbers, plus `parsability_questions` scored-choice questions generated too), its answers' agreement on
    `consistency_subjects` evaluated subjects, and its answers on the real HCP FCNs of its atlas."""
    _, fcns_of = _llm_inputs("fcn_llm", questions, data, eval_rows, processor, seed)

    def answer(m, p, asked, lookup):
        return answer_questions(m, p, asked, lookup, batch_size=batch_size, max_new_tokens=max_new_tokens, log=log)

    def generate(m, p, asked, lookup):
        return generate_texts(m, p, asked, lookup, batch_size=batch_size, max_new_tokens=max_new_tokens)

    out: dict = {}
    texts = {q.id: answers[q.id]["text"] for q in questions if q.target == "regression" and q.id in answers}
    sampled = sample_questions([q for q in questions if q.target != "regression"], parsability_questions, seed)
    texts.update(generate(model, processor, sampled, fcns_of))
    out["parsability"] = {**parsability_report(questions, texts, registry), "generated_numbers": len(texts) - len(sampled),
                          "sampled_choice_questions": len(sampled)}
    attributes = [registry[k] for k in keys if known is None or k in known]
    if consistency_subjects > 0:
        ids = list(data.subjects["subject_id"].iloc[eval_rows])
        chosen = [ids[i] for i in sorted(np.random.default_rng(seed).permutation(len(ids))[:consistency_subjects])]
        spans = {}
        for a in attributes:
            if a.kind == "continuous" and a.key in data.subjects.columns:
                values = data.subjects[a.key].iloc[eval_rows].to_numpy(dtype=float)
                if np.isfinite(values).any():
                    spans[a.key] = threshold_span(a, values[np.isfinite(values)])
        out["consistency"] = run_consistency(model, processor, attributes, chosen, fcns_of, registry, answer,
                                             seed=seed, spans=spans)
    if real_data:
        atlases = sorted(set(data.subjects["atlas"].astype(str))) if "atlas" in data.subjects.columns else []
        out["real_data"] = (real_data_report(model, processor, atlases[0], attributes, registry, answer, generate,
                                             seed=seed) if len(atlases) == 1 else
                            {"status": "skipped", "reason": f"the evaluation data names {len(atlases)} atlases "
                                                            f"({', '.join(atlases) or 'none'}), not one"})
    return out


def run_zero_shot_evaluation(
    model: str | Path | torch.nn.Module,
    data: str | Path | EvaluationData,
    out_dir: str | Path,
    *,
    processor=None,
    max_subjects: int | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 8,
    methods: Sequence[str] = METHODS,
    in_domain_fraction: float = 0.2,
    encoder_epochs: int = 40,
    registry=None,
    seed: int = 0,
    bf16: bool = False,
    plots: bool = True,
    parsability_questions: int = 200,
    consistency_subjects: int = 8,
    real_data: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Evaluate an FCN-LLM zero-shot on the `zero_shot` split next to the baselines and the oracle.

    Args:
        model: a saved FCN-LLM folder, or a loaded `FCNLLMForCausalLM` (then `processor` is required).
        data: an instruction-set folder (configs `subjects`, `instructions`) or loaded `EvaluationData`.
        out_dir: where results.json, results.md and the PNG plots go.
        max_subjects: cap on the evaluated zero-shot subjects (seeded subset), for quick runs.
        batch_size: prompts per forward pass (choices share each prompt's single prefill).
        methods: subset of `fcn_llm`, `fcn_llm_shuffled` (each subject's FCN swapped for another
            evaluated subject's from the same site), `text_only` (no graph; both controls on the conditions'
            scored questions in training wording), `edge_regression`,
            `fcn_llm_heads` (the model's own attribute heads, no LLM), `edge_regression_in_domain`,
            `encoder_supervised`, `oracle`.
        encoder_epochs: epoch cap of the `encoder_supervised` baseline (early stopping inside).
        bf16: answer under bf16 autocast (as the model trained, where the hardware computes bf16 natively).
        parsability_questions: scored-choice zero-shot questions also answered by greedy generation (spread
            over the results rows) for the parsability report; the generated numbers are always counted.
        consistency_subjects: evaluated subjects asked the consistency report's questions (0: no report).
        real_data: the sanity report on brainspace's real HCP FCNs (where the model's atlas matches).
    Returns:
        the report written to results.json: {"results": {"<attr>/<paradigm>": {..., "metrics": {method: {...}}}},
        "methods", "settings", "timings", "notes", "files", "table" (the markdown table)}.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}; choose from {list(METHODS)}.")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    registry = registry if registry is not None else load_registry()
    if isinstance(model, (str, Path)):
        model_name = str(model)
        model, processor = load_model_and_processor(model)
    else:
        model_name = type(model).__name__
        if processor is None:
            raise ValueError("A loaded model needs its processor: pass processor=FCNProcessor(...).")
    model.eval()
    data_name = str(data) if not isinstance(data, EvaluationData) else "EvaluationData"
    if not isinstance(data, EvaluationData):
        data = load_evaluation_data(data)
    timings["load"] = time.perf_counter() - t0
    notes = list(data.notes)

    in_domain_rows, eval_rows = in_domain_split(data, in_domain_fraction, seed)
    if max_subjects is not None and max_subjects < len(eval_rows):
        eval_rows = np.sort(np.random.default_rng(seed).choice(eval_rows, size=max_subjects, replace=False))
    questions = _questions(data, eval_rows, registry, notes)
    if max_subjects is not None:
        notes.append(f"max_subjects={max_subjects}: only questions whose subjects are all among the sampled "
                     f"subjects are asked, so fewer comparative pairs than the split holds")
    if not questions:
        raise ValueError(f"No zero-shot instruction has all its subjects among the {len(eval_rows)} evaluated "
                         f"subjects; raise max_subjects or check the dataset's zero_shot split.")
    keys = sorted({q.group[0] for q in questions})
    attributes = [registry[k] for k in keys]
    log(f"[eval] {len(questions)} zero-shot questions on {len(eval_rows)} subjects "
        f"({len(in_domain_rows)} more for the in-domain baseline), {len(keys)} attributes")

    answers: dict[str, dict[str, dict]] = {}
    method_notes: dict[str, list[str]] = {}
    normalization = getattr(processor, "normalization", "zscore")
    train_rows = data.split_rows(TRAIN_SPLIT)
    train_meta = data.subjects.iloc[train_rows].reset_index(drop=True)
    for method in methods:
        start = time.perf_counter()
        if method in LLM_METHODS:
            conditions = frozenset(k for k in keys if registry[k].kind == "binary")
            asked, fcns_of = _llm_inputs(method, questions, data, eval_rows, processor, seed, conditions)
            device = next(model.parameters()).device.type
            distinct = _distinct_texts(asked) if method == "text_only" else {q.id: q for q in asked}
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                unique = answer_questions(model, processor, list({q.id: q for q in distinct.values()}.values()), fcns_of,
                                          batch_size=batch_size, max_new_tokens=max_new_tokens, log=log)
            answers[method] = {qid: unique[q.id] for qid, q in distinct.items()}
        else:
            if method == "edge_regression":
                preds, mnotes = baselines.edge_regression(data.fcns[train_rows], train_meta, data.fcns[eval_rows],
                                                          attributes, normalization=normalization, seed=seed)
            elif method == "edge_regression_in_domain":
                meta = data.subjects.iloc[in_domain_rows].reset_index(drop=True)
                preds, mnotes = baselines.edge_regression(data.fcns[in_domain_rows], meta, data.fcns[eval_rows],
                                                          attributes, normalization=normalization, seed=seed)
            elif method == "fcn_llm_heads":
                preds, mnotes = baselines.model_heads(model, data.fcns[eval_rows], attributes, normalization=normalization)
            elif method == "encoder_supervised":
                preds, mnotes = baselines.encoder_supervised(
                    model.config.encoder_config, data.fcns[train_rows], train_meta, data.fcns[eval_rows], attributes,
                    normalization=normalization, epochs=encoder_epochs, seed=seed)
            else:
                preds, mnotes = baselines.oracle(data.oracle, eval_rows, attributes)
                if not preds:
                    notes.append("oracle: the dataset stores no oracle scores (not a simulated cohort?); omitted")
            answers[method] = _baseline_answers(questions, data, eval_rows, preds)
            method_notes[method] = mnotes
        timings[method] = time.perf_counter() - start
        log(f"[eval] {method}: {timings[method]:.1f}s")

    results = build_results(questions, answers, registry, method_notes)
    known = model_attributes(model)
    untrained = untrained_report(questions, answers.get("fcn_llm", {}), known)
    for row in results.values():
        if known is not None:
            row["trained"] = row["attribute"] in known
    if untrained:
        notes.append(untrained_note(untrained, known))
        log(f"[eval] warning: {notes[-1]}")
    checks = {}
    if "fcn_llm" in answers:
        checks["forms"] = form_report(questions, answers["fcn_llm"], data.seen_thresholds)
        checks["condition_targets"] = condition_targets(questions, answers, seed=seed)
        start = time.perf_counter()
        with torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16, enabled=bf16):
            checks |= _answer_checks(model, processor, questions, answers["fcn_llm"], data, eval_rows, registry, keys,
                                     known, seed=seed, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                     parsability_questions=parsability_questions,
                                     consistency_subjects=consistency_subjects, real_data=real_data, log=log)
        timings["answer_checks"] = time.perf_counter() - start
        log(f"[eval] parsability, consistency, real data: {timings['answer_checks']:.1f}s")
    notes.extend(n for ns in method_notes.values() for n in ns if n.split(":")[0] not in keys)
    report = {
        "model": model_name,
        "data": data_name,
        "methods": list(methods),
        "settings": {"max_subjects": max_subjects, "evaluated_subjects": int(len(eval_rows)),
                     "in_domain_subjects": int(len(in_domain_rows)), "in_domain_fraction": in_domain_fraction,
                     "train_subjects": int(len(train_rows)), "questions": len(questions), "batch_size": batch_size,
                     "normalization": normalization, "seed": seed, "bf16": bf16,
                     "parsability_questions": parsability_questions, "consistency_subjects": consistency_subjects,
                     "real_data": real_data},
        "notes": notes,
        "results": results,
        "known_attributes": known,
        "untrained_attributes": untrained,
        **checks,
    }
    files = [out_dir / "results.json", out_dir / "results.md"]
    if plots:
        start = time.perf_counter()
        files += write_plots(questions, answers, registry, out_dir)
        timings["plots"] = time.perf_counter() - start
    timings["total"] = time.perf_counter() - t0
    report["timings"] = timings
    report["files"] = [str(f) for f in files]
    write_json(report, out_dir / "results.json")
    write_markdown(report, out_dir / "results.md")
    report["table"] = markdown_table(results)
    return report
