"""Metrics per (attribute, paradigm) and method, and the results.json / results.md files.

results.json::

    {"methods": [...], "settings": {...}, "timings": {...}, "notes": [...],
     "results": {"<attribute>/<paradigm>[/held_out]": {"attribute", "name", "kind", "paradigm", "forms", "target", "n",
                 "main_metric", "metrics": {method: {metric: value}}, "notes": [...]}}}

With ``fcn_llm`` evaluated, results.json also has ``forms`` (`form_breakdown.form_report`), ``condition_targets``
(`condition_targets.condition_targets`), ``parsability`` (`answer_forms.parsability_report`),
``consistency`` (`consistency.agreement_report`), ``real_data`` (`real_data.real_data_report`),
``known_attributes`` (the model's attribute heads, or null) and ``untrained_attributes`` (attributes asked
about that the model has no head for, with their answers' confidence); rows then carry ``trained``.

A method absent from a row's ``metrics`` could not be run for it (the row's notes say why).
NaN metrics are written as null.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from .metrics import classification_metrics, regression_metrics
from fcn_llm.questions import Question

LLM_METHODS = ("fcn_llm", "fcn_llm_shuffled", "text_only")  # FCN-LLM answering, and its two controls
SCOPED_CONTROLS = ("fcn_llm_shuffled", "text_only")  # asked the conditions' scored questions in training wording
METHODS = (*LLM_METHODS, "fcn_llm_heads", "edge_regression", "edge_regression_in_domain", "encoder_supervised", "oracle")
PARADIGM_ORDER = {"predictive": 0, "judgment": 1, "comparative": 2}
HELD_OUT_PARTS_SHOWN = 8  # results.md lists the held-out wording parts with the largest drops


def main_metrics(target: str, paradigm: str) -> tuple[str, ...]:
    """The table's metric(s) for a row: AUC (binary), accuracy (categorical, comparative), r and MAE (continuous)."""
    if paradigm == "comparative" or target == "multiclass":
        return ("accuracy",)
    if target == "regression":
        return ("pearson_r", "mae")
    return ("auc",)


def group_questions(questions: list[Question]) -> dict[tuple[str, str, bool], list[Question]]:
    """(attribute, paradigm, held-out wording) -> its questions, training wording first."""
    groups: dict[tuple[str, str, bool], list[Question]] = defaultdict(list)
    for q in questions:
        groups[(*q.group, bool(getattr(q, "held_out", False)))].append(q)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0], PARADIGM_ORDER.get(kv[0][1], 9), kv[0][2])))


def row_key(key: str, paradigm: str, held_out: bool) -> str:
    """The results row of an attribute, paradigm and wording: "adhd/judgment" or "adhd/judgment/held_out"."""
    return f"{key}/{paradigm}" + ("/held_out" if held_out else "")


def collect(questions: list[Question], answers: dict[str, dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(references, scores, predictions) over the questions a method answered with a finite score, those
    of questions asked the other way round turned back (`plain_way`), and how many it left unanswered
    (NaN: an unparseable generated number or a missing prediction)."""
    refs, scores, preds, missing = [], [], [], 0
    for q in questions:
        a = answers.get(q.id)
        if a is None or not np.all(np.isfinite(np.asarray(a["score"], dtype=float))):
            missing += 1
            continue
        if plain_way(q) == 1:
            refs.append(q.reference)
            scores.append(a["score"])
            preds.append(a["prediction"])
        else:  # turned back: reference, score and prediction of the plain question
            refs.append(1.0 - q.reference)
            scores.append(-a["score"])
            preds.append(1 - a["prediction"])
    return np.asarray(refs), np.asarray(scores, dtype=float), np.asarray(preds), missing


def plain_way(question: Question) -> int:
    """-1 for a yes/no or first/second question asked the other way round (negated: "Can ADHD be ruled
    out?"; reversed: "younger than", "less likely"), whose answers `collect` turns back, so that a row's
    AUC measures the attribute and not the mix of forms (answering from the wording alone scores 0.5)."""
    if question.target != "binary":
        return 1
    way = -1 if getattr(question, "negated", False) else 1
    return way * (-1 if getattr(question, "direction", 1) == -1 else 1)


def row_metrics(questions: list[Question], answers: dict[str, dict]) -> dict[str, float] | None:
    """Metrics of one method on one row's questions; None if it answered none."""
    target = questions[0].target
    refs, scores, preds, missing = collect(questions, answers)
    if len(refs) == 0 and (target != "regression" or not any(q.id in answers for q in questions)):
        return None
    if target == "regression":  # generated numbers: unparseable answers are counted, not scored
        out = regression_metrics(refs, preds)
        out["n_unparseable"] = missing
        out["unparseable_rate"] = missing / len(questions)
        return out
    out = classification_metrics(refs.astype(np.int64), scores, preds.astype(np.int64))
    if missing:
        out["n_missing"] = missing
    within = auc_within_asked_class(questions, answers)
    if within is not None:
        out["auc_within_asked_class"] = within
    return out


def auc_within_asked_class(questions: list[Question], answers: dict[str, dict]) -> float | None:
    """Class judgments ("Is this subject left-handed?"): the mean over asked classes of the AUC among the questions
    asking about that class (classes with both answers); None for other questions. The row's pooled AUC also
    rewards knowing which class is common (most subjects are right-handed, so "right-handed?" is mostly "Yes"
    whoever the subject is); this one counts only telling subjects apart."""
    asked = sorted({q.class_index for q in questions if q.class_index is not None})
    values = []
    for k in asked:
        refs, scores, _, _ = collect([q for q in questions if q.class_index == k], answers)
        if len(set(refs.tolist())) == 2:
            values.append(classification_metrics(refs.astype(np.int64), scores)["auc"])
    return float(np.mean(values)) if values else None


def chance_metrics(questions: list[Question]) -> dict[str, float]:
    """What a label-blind answer reaches: AUC 0.5, accuracy of the majority answer, or MAE of the median."""
    refs = np.asarray([q.reference for q in questions], dtype=float)
    if questions[0].target == "regression":
        return {"mae": float(np.mean(np.abs(refs - np.median(refs)))), "pearson_r": float("nan")}
    _, counts = np.unique(refs, return_counts=True)
    return {"auc": 0.5, "accuracy": float(counts.max() / counts.sum()), "balanced_accuracy": 1.0 / len(counts)
            if questions[0].target == "multiclass" else 0.5}


def build_results(questions: list[Question], answers: dict[str, dict[str, dict]], registry,
                  method_notes: dict[str, list[str]] | None = None) -> dict[str, dict]:
    """The ``results`` mapping of results.json. `answers`: method -> question id -> {"score", "prediction"}."""
    results = {}
    for (key, paradigm, held_out), group in group_questions(questions).items():
        attribute = registry[key]
        notes = []
        metrics = {}
        for method in METHODS:
            if method not in answers:
                continue
            m = row_metrics(group, answers[method])
            if m is None and method in SCOPED_CONTROLS:
                continue
            if m is None:
                notes.append(f"{method}: no predictions for this attribute")
                continue
            metrics[method] = m
        for method, method_notes_list in (method_notes or {}).items():
            notes.extend(f"{method}: {n}" for n in method_notes_list if n.split(":")[0] == key)
        results[row_key(key, paradigm, held_out)] = {
            "attribute": key, "name": attribute.name, "kind": attribute.kind, "paradigm": paradigm,
            "forms": "held_out" if held_out else "training",
            "target": group[0].target, "n": len(group), "n_subjects": len({s for q in group for s in q.subject_ids}),
            "main_metric": list(main_metrics(group[0].target, paradigm)), "chance": chance_metrics(group),
            "metrics": metrics, "notes": notes,
        }
    return results


def _clean(value):
    """JSON-safe: NaN/inf -> None, numpy scalars/arrays -> Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_json(report: dict, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(_clean(report), indent=1, allow_nan=False) + "\n")
    return path


def _fmt(value, metric: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.2f}" if metric == "mae" else f"{value:.3f}"


def markdown_table(results: dict[str, dict], methods: tuple[str, ...] | None = None) -> str:
    """One row per attribute/paradigm: n, the main metric (r / MAE for continuous), chance, each method
    (default: those with metrics in some row, in `METHODS` order)."""
    if methods is None:
        methods = tuple(m for m in METHODS if any(m in row["metrics"] for row in results.values()))
    header = ["attribute", "paradigm", "n", "metric", "chance", *methods]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in results.values():
        metrics = row["main_metric"]
        paradigm = row["paradigm"] + (" (held-out wording)" if row.get("forms") == "held_out" else "")
        cells = [row["name"], paradigm, str(row["n"]), " / ".join("r" if m == "pearson_r" else m.upper()
                 if m in ("auc", "mae") else m for m in metrics),
                 " / ".join(_fmt(row["chance"].get(m), m) for m in metrics)]
        for method in methods:
            values = row["metrics"].get(method)
            cells.append("n/a" if values is None else " / ".join(_fmt(values.get(m), m) for m in metrics))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(report: dict, path: str | Path) -> Path:
    """results.md: the table, then the settings, notes and unparseable-answer counts."""
    path = Path(path)
    results = report["results"]
    parts = ["# FCN-LLM zero-shot evaluation\n",
             "Main metric per row: AUC (yes/no and binary questions), accuracy (categorical, comparative), "
             "Pearson r / MAE (continuous, generated numbers). `chance`: a label-blind answer (AUC 0.5, the "
             "majority answer's accuracy, the median's MAE). `fcn_llm_heads`: the model's own attribute heads read "
             "without the LLM (the classifier on the same graph tokens). All methods are scored on the same zero-shot "
             "subjects (the 80 % not used by `edge_regression_in_domain`).\n",
             markdown_table(results)]
    unparseable = [(k, r["metrics"]["fcn_llm"]["n_unparseable"], r["n"]) for k, r in results.items()
                   if "fcn_llm" in r["metrics"] and r["metrics"]["fcn_llm"].get("n_unparseable")]
    if unparseable:
        parts.append("\nFCN-LLM answers with no number (excluded from its MAE/r): "
                     + ", ".join(f"{k} {u}/{n}" for k, u, n in unparseable) + ".\n")
    parts.extend(condition_target_sections(report.get("condition_targets")))
    parts.extend(answer_check_sections(report))
    notes = list(report.get("notes", [])) + [f"{k}: {n}" for k, r in results.items() for n in r["notes"]]
    if notes:
        parts.append("\n## Notes\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    settings = report.get("settings", {})
    if settings:
        parts.append("\n## Settings\n\n" + "\n".join(f"- {k}: {v}" for k, v in settings.items()) + "\n")
    timings = report.get("timings", {})
    if timings:
        parts.append("\n## Timings (s)\n\n" + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()) + "\n")
    path.write_text("".join(parts))
    return path


def _pct(rate) -> str:
    return "–" if rate is None or (isinstance(rate, float) and not math.isfinite(rate)) else f"{100 * rate:.1f} %"


def _counts(entry: dict, hit: str) -> str:
    return f"{_pct(entry['rate'])} ({entry[hit]}/{entry['n']})"


def _signed(value: float) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:+.3f}"


def condition_target_sections(targets: dict | None) -> list[str]:
    """results.md's section on the condition targets (`condition_targets`): one line per comparison, then the
    shuffled control; empty without them."""
    if not targets:
        return []
    share = f"{targets['interval']:.0%}"
    lines = [f"\n## Condition judgments against the targets ({share} intervals, {targets['draws']} bootstrap draws "
             "over subjects)\n\n",
             "FCN-LLM's AUC in held-out wording minus each baseline's on the same questions (the oracle's minus 0.10); "
             "the target is a difference >= 0. Verdicts: met, within noise (the interval reaches the target), "
             "missed.\n\n"]
    for baseline, entry in targets["comparisons"].items():
        mean = entry["mean"]
        lines.append(f"- vs {baseline}{' - %.2f' % entry['margin'] if entry['margin'] else ''}: mean "
                     f"{_signed(mean['difference'])} [{_signed(mean['low'])}, {_signed(mean['high'])}] {mean['verdict']}"
                     + "".join(f"; {k} {_signed(v['difference'])} [{_signed(v['low'])}, {_signed(v['high'])}] "
                               f"{v['verdict']}" for k, v in entry["by_condition"].items()) + "\n")
    sizes = next(iter(targets["comparisons"].values()), {}).get("by_condition", {})
    if sizes:
        lines.append("- subjects compared (with the condition): "
                     + ", ".join(f"{k} {v['n_subjects']} ({v['n_with_condition']})" for k, v in sizes.items()) + "\n")
    shuffled = targets.get("shuffled")
    if shuffled:
        mean = shuffled["mean"]
        lines.append(f"- shuffled FCNs (target: AUC within 0.05 of 0.5): mean {_fmt(mean['auc'], 'auc')} "
                     f"[{_fmt(mean['low'], 'auc')}, {_fmt(mean['high'], 'auc')}] {mean['verdict']}"
                     + "".join(f"; {k} {_fmt(v['auc'], 'auc')} [{_fmt(v['low'], 'auc')}, {_fmt(v['high'], 'auc')}] "
                               f"{v['verdict']} (n {v['n_subjects']}, {v['n_with_condition']} with)"
                               for k, v in shuffled["by_condition"].items())
                     + "\n")
    return ["".join(lines)]


def answer_check_sections(report: dict) -> list[str]:
    """results.md sections (lists, the results table stays the only table) of FCN-LLM's own answers:
    parsability, consistency, the real HCP FCNs."""
    parts = []
    parsing = report.get("parsability")
    if parsing:
        lines = [f"\n## Answers in the asked form (greedy generation; target {_pct(parsing['target'])})\n\n",
                 f"- overall: {_counts(parsing['overall'], 'parsable')} ({parsing['generated_numbers']} generated "
                 f"numbers, {parsing['sampled_choice_questions']} scored-choice questions generated as well)\n"]
        lines += [f"- {k}: {_counts(v, 'parsable')}\n" for k, v in {**parsing["by_paradigm"], **parsing["by_forms"]}.items()]
        if parsing["unparsable_examples"]:
            lines.append("- unparsable, e.g.: " + "; ".join(f"{e['row']} {e['answer']!r}"
                                                           for e in parsing["unparsable_examples"][:4]) + "\n")
        parts.append("".join(lines))
    forms = report.get("forms")
    if forms:
        turned, thresholds = forms["turned_vs_plain"], forms["thresholds"]
        parts.append(
            "\n## Judgments by form (FCN-LLM, AUC, both wordings)\n\n"
            f"- turned (negated or reversed, answers turned back) vs plain: {_fmt(turned['mean_turned'], 'auc')} vs "
            f"{_fmt(turned['mean_plain'], 'auc')} over {turned['attributes_compared']} attributes, ratio "
            f"{_fmt(turned['ratio'], 'auc')} (target >= {turned['target']})"
            + "".join(f"; {k} {_fmt(v['turned'], 'auc')} ({v['n_turned']}) vs {_fmt(v['plain'], 'auc')} ({v['n_plain']})"
                      for k, v in turned["by_attribute"].items()) + "\n"
            f"- thresholds never named in training vs named: {_fmt(thresholds['mean_unseen'], 'auc')} vs "
            f"{_fmt(thresholds['mean_seen'], 'auc')} over {thresholds['attributes_compared']} attributes, difference "
            f"{_fmt(thresholds['difference'], 'auc')} (target within {thresholds['target']})"
            + "".join(f"; {k} {_fmt(v['unseen'], 'auc')} ({v['n_unseen']}) vs {_fmt(v['seen'], 'auc')} ({v['n_seen']})"
                      for k, v in thresholds["by_attribute"].items()) + "\n")
        worst = forms.get("held_out_parts", [])[:HELD_OUT_PARTS_SHOWN]
        if worst:
            parts.append("\n## Held-out wording by part (FCN-LLM)\n\n"
                         "The parts of held-out wording (frame, term, answer instruction) whose questions lose most: the "
                         "row's main metric on the held-out questions carrying the part vs on the training wording.\n\n"
                         + "".join(f"- {e['attribute']}/{e['paradigm']} {e['part']}"
                                   + (f" (pooled: {', '.join(e['pooled'])})" if e.get("pooled") else "")
                                   + f": {e['metric']} "
                                   f"{_fmt(e['value'], e['metric'])} vs {_fmt(e['training_value'], e['metric'])} "
                                   f"(n {e['n']}), e.g. {e['example']!r}\n" for e in worst))
    consistency = report.get("consistency")
    if consistency:
        lines = [f"\n## Consistency across paradigms ({len(consistency['subjects'])} subjects; target "
                 f"{_pct(consistency['target'])})\n\n",
                 "Each judgment or comparative checked against the answer that the model's own predictive answers "
                 "(generated numbers, predicted classes) imply.\n\n"]
        for check in ("threshold_vs_number", "class_vs_prediction", "comparative_vs_values"):
            entry = consistency[check]
            lines.append(f"- {check}: {_counts(entry['overall'], 'agree')}"
                         + "".join(f"; {k} {_counts(v, 'agree')}" for k, v in entry["by_attribute"].items()) + "\n")
        if consistency.get("unparsable_numbers"):
            lines.append("- generated numbers missing or outside the valid range (not checked): "
                         + ", ".join(f"{k} {v}" for k, v in consistency["unparsable_numbers"].items()) + "\n")
        parts.append("".join(lines))
    real = report.get("real_data")
    if real:
        if real["status"] != "done":
            parts.append(f"\n## Real HCP FCNs\n\nSkipped: {real['reason']}.\n")
        else:
            lines = [f"\n## Real HCP FCNs ({len(real['subjects'])} healthy young adults, {real['parcellation']}, "
                     "brainspace; no labels)\n\n- answers in the asked form: "
                     + "; ".join(f"{k} {_pct(v['in_form_rate'])} ({v['in_form']}/{v['n']})"
                                 for k, v in real["answers_in_form"].items()) + "\n",
                     "- conditions, judgments answered No / predictive answers naming no condition: "
                     + "; ".join(f"{k} {_pct(v['no_rate'])} of {v['judgments']} / {_pct(v['negative_label_rate'])} "
                                 f"of {v['predictive_labels']}" for k, v in real["conditions"].items()) + "\n"]
            age = real.get("age")
            if age:
                lines.append(f"- generated ages: {age['numbers']}/{age['answers']} numbers, median {age['median']:.0f}; "
                             f"inside the valid range {_pct(age['in_valid_range'])}, inside 18-40 "
                             f"{_pct(age['in_18_40'])}, inside 22-35 {_pct(age['in_22_35'])}; per subject: "
                             + "; ".join(f"{s}: {', '.join(repr(a) for a in v)}" for s, v in age["generated"].items())
                             + "\n")
            parts.append("".join(lines))
    return parts
