"""A sanity report on real HCP individual FCNs (`brainspace`'s, see `datasets_scripts/hcp.py`): no labels.

The subjects are healthy young adults (HCP: 22-35 years), so a model whose answers come from the FC
should answer its questions in the asked form, mostly "No" to the conditions, and with ages a young
adult could have. Asked only when the model reads the FCNs' atlas: a Schaefer 7-network atlas with as
many ROIs (and the same network assignment) as the model's encoder; otherwise the report says why not.

Per subject and attribute the model is asked the predictive question in several forms (one per frame,
answered by greedy generation; age in every frame the bank has), and each condition's judgment in
several forms (answered as the evaluation does, by the choices' likelihood; negated forms turned back).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence

import numpy as np

from datasets_scripts.question_bank import load_bank
from processing.atlases import load_atlas

from .answer_forms import parse_answer
from .consistency import user_messages
from fcn_llm.questions import Question

PLAUSIBLE_AGE = (22.0, 35.0)  # the HCP young-adult cohort
WIDE_AGE = (18.0, 40.0)
_SCHAEFER_7 = re.compile(r"schaefer(?P<rois>100|200|300|400)-7")


def hcp_parcellation(atlas_name: str | None, model) -> tuple[str | None, str]:
    """(brainspace parcellation, "") when the model reads `atlas_name`'s FCNs and brainspace ships them;
    else (None, the reason)."""
    if not atlas_name:
        return None, "the evaluation data names no atlas (no 'atlas' column), so the model's atlas is unknown"
    found = _SCHAEFER_7.fullmatch(str(atlas_name).lower())
    if found is None:
        return None, (f"the model's atlas is {atlas_name!r}; brainspace ships individual HCP FCNs in the Schaefer "
                      f"7-network atlases (schaefer100-7 ... schaefer400-7) only")
    encoder = model.config.encoder_config
    rois = int(found["rois"])
    if encoder.num_rois != rois:
        return None, f"the model's encoder reads {encoder.num_rois} ROIs, the {atlas_name} FCNs have {rois}"
    if encoder.network_assignment is not None:
        if list(encoder.network_assignment) != list(load_atlas(atlas_name).network_assignment):
            return None, f"the model's network assignment is not {atlas_name}'s"
    return f"schaefer_{rois}", ""


def _forms_by_frame(bank, attribute, paradigm: str, count: int | None, rng: np.random.Generator) -> list:
    """One form per frame (drawn), for up to `count` frames (all if None) in a seeded order."""
    by_frame: dict[str, list] = {}
    for form in bank.forms(attribute, paradigm):
        by_frame.setdefault(form.frame.id, []).append(form)
    frames = [by_frame[k] for k in sorted(by_frame)]
    order = rng.permutation(len(frames))[: len(frames) if count is None else count]
    return [frames[i][int(rng.integers(len(frames[i])))] for i in order]


def real_data_questions(attributes: Sequence, subject_ids: Sequence[str], *, forms_per_attribute: int = 3,
                        seed: int = 0) -> tuple[list[Question], list[Question]]:
    """(predictive questions, condition judgments) about `subject_ids`; references are unknown (NaN)."""
    bank = load_bank()
    rng = np.random.default_rng(seed)
    predictive, judgments = [], []
    for attribute in attributes:
        if "predictive" in attribute.paradigms():
            count = None if attribute.key == "age" else forms_per_attribute
            for form in _forms_by_frame(bank, attribute, "predictive", count, rng):
                target = {"continuous": "regression", "binary": "binary", "categorical": "multiclass"}[attribute.kind]
                choices = {"continuous": (), "binary": (attribute.labels.get("1"), attribute.labels.get("0")),
                           "categorical": tuple(attribute.classes)}[attribute.kind]
                for sid in subject_ids:
                    predictive.append(Question(
                        id=f"hcp-predictive-{form.template_id}-{sid}", group=(attribute.key, "predictive"),
                        target=target, messages=user_messages(form.text(attribute), 1), subject_ids=(sid,),
                        choices=choices, reference=np.nan, held_out=form.held_out, template_id=form.template_id))
        if attribute.kind == "binary" and "judgment" in attribute.paradigms():
            for form in _forms_by_frame(bank, attribute, "judgment", forms_per_attribute, rng):
                for sid in subject_ids:
                    judgments.append(Question(
                        id=f"hcp-judgment-{form.template_id}-{sid}", group=(attribute.key, "judgment"),
                        target="binary", messages=user_messages(form.text(attribute), 1), subject_ids=(sid,),
                        choices=("Yes", "No"), reference=np.nan, negated=form.negated, held_out=form.held_out,
                        template_id=form.template_id))
    return predictive, judgments


def _share(flags: Sequence[bool]) -> float:
    return float(np.mean(flags)) if len(flags) else float("nan")


def summarise(predictive: Sequence[Question], texts: dict[str, str], judgments: Sequence[Question],
              answers: dict[str, dict], registry) -> dict:
    """Per attribute: the share of generated answers in the asked form (numbers inside the valid range);
    per condition: the share of judgments answered "does not have it" (negated forms turned back) and of
    predictive labels naming the negative label; the generated ages per subject and their shares inside
    the valid range, 18-40 and 22-35."""
    attributes: dict[str, dict] = {}
    ages: dict[str, list] = {}
    labels: dict[str, list[bool]] = {}
    for q in predictive:
        attribute = registry[q.group[0]]
        parsed = parse_answer(q, texts[q.id], attribute)
        row = attributes.setdefault(attribute.key, {"n": 0, "in_form": 0})
        row["n"] += 1
        row["in_form"] += parsed is not None
        if attribute.key == "age":
            ages.setdefault(q.subject_ids[0], []).append(texts[q.id].strip())
        if attribute.kind == "binary" and parsed is not None:
            labels.setdefault(attribute.key, []).append(parsed == 1)
    for row in attributes.values():
        row["in_form_rate"] = row["in_form"] / row["n"]
    conditions: dict[str, dict] = {}
    for q in judgments:
        if q.id not in answers:
            continue
        has = bool(answers[q.id]["prediction"]) != q.negated
        conditions.setdefault(q.group[0], {"judgments": []})["judgments"].append(not has)
    out_conditions = {}
    for key in sorted(set(conditions) | set(labels)):
        no = conditions.get(key, {}).get("judgments", [])
        out_conditions[key] = {"judgments": len(no), "no_rate": _share(no),
                               "predictive_labels": len(labels.get(key, [])),
                               "negative_label_rate": _share(labels.get(key, []))}
    report = {"answers_in_form": attributes, "conditions": out_conditions}
    if ages:
        age = registry["age"]
        numbers = [parse_answer(q, texts[q.id], _unbounded(age)) for q in predictive if q.group[0] == "age"]
        values = [v for v in numbers if v is not None]
        lo, hi = age.valid_range
        report["age"] = {
            "generated": ages, "numbers": len(values), "answers": len(numbers),
            "in_valid_range": _share([lo <= v <= hi for v in values]),
            "in_18_40": _share([WIDE_AGE[0] <= v <= WIDE_AGE[1] for v in values]),
            "in_22_35": _share([PLAUSIBLE_AGE[0] <= v <= PLAUSIBLE_AGE[1] for v in values]),
            "median": float(np.median(values)) if values else float("nan"),
        }
    return report


def _unbounded(attribute):
    """`attribute` without a valid range: any number parses (to see where the generated ages fall)."""
    return dataclasses.replace(attribute, valid_range=None)


def real_data_report(model, processor, atlas_name: str | None, attributes: Sequence, registry,
                     answer: Callable[..., dict[str, dict]], generate: Callable[..., dict[str, str]], *,
                     forms_per_attribute: int = 3, seed: int = 0) -> dict:
    """The sanity report on the real HCP FCNs of the model's atlas, or {"status": "skipped", "reason"}.

    Args:
        answer: `(model, processor, questions, fcns_of) -> {id: {"score", "prediction"}}` (likelihood answers).
        generate: `(model, processor, questions, fcns_of) -> {id: text}` (greedy answers).
    """
    parcellation, reason = hcp_parcellation(atlas_name, model)
    if parcellation is None:
        return {"status": "skipped", "reason": reason}
    try:
        from datasets_scripts.hcp import load_individual_fcns

        subjects = load_individual_fcns(parcellation)
    except ImportError as err:
        return {"status": "skipped", "reason": str(err)}
    if not subjects:
        return {"status": "skipped", "reason": f"brainspace ships no individual FCNs for {parcellation}"}
    fcns = {s.subject_id: s.fcn.astype(np.float32) for s in subjects}
    fcns_of = lambda ids: [fcns[s] for s in ids]  # noqa: E731
    predictive, judgments = real_data_questions(attributes, list(fcns), forms_per_attribute=forms_per_attribute,
                                                seed=seed)
    texts = generate(model, processor, predictive, fcns_of)
    answers = answer(model, processor, judgments, fcns_of) if judgments else {}
    report = {"status": "done", "atlas": atlas_name, "parcellation": parcellation, "subjects": list(fcns),
              "questions": {"generated": len(predictive), "judgments": len(judgments)}}
    report.update(summarise(predictive, texts, judgments, answers, registry))
    return report
