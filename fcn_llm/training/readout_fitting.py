"""Fit the evidence token's readout of the attribute heads before stage 1 (closed form, forward passes only).

The evidence token adds `out(w * (z - t))` to a graph's tokens (`InstructionConditioning`): `z` the
standardised attribute-head outputs, `w` the router's weights, `t` the threshold the question names.
Each head's column of `out` must turn "this subject scores high on the head" into the positive answer.
The columns are written in the LLM's own words: the embedding of the positive answer's first token minus
the negative answer's, unit length, on the head's judgments ("Yes" - "No"; a binary head without
judgments: its predictive answers, e.g. "ADHD" - "Control"), in the column of the paradigm the answers
belong to when the model has one readout per paradigm (`evidence_paradigms`), else in the shared column
(the paradigms' directions summed); with one readout per paradigm, a binary or categorical head's predictive
columns are written along its class names ("ADHD" - "Control"; "Female" - the other names). A continuous head is
read out on its threshold judgments ("Is this subject older than 30 years?"), whose threshold `t` comes from the
question's number or `fit_thresholds`.
A categorical head's outputs all get the judgments' column; `fit_signs` turns them to the class asked.

How far, and which way, a frozen LLM's answer moves when the answer words' direction is added to its graph
tokens is an empirical fact about that LLM, so each kind of head ("binary", "categorical", "continuous",
"comparative") gets a signed scale, in units of the mean input-embedding norm: the sign is the one of
`+probe` and `-probe` (probe: the middle of `SCALES`) whose answer margins log P(positive) - log P(negative)
separate balanced training judgments better, then the other magnitudes of `SCALES` are tried with that sign,
and 0 (no readout) is always compared; it is chosen only where no other scale separates the judgments (`choose_scale`).
Otherwise the chosen scale is the one whose answers are right most often: the
mean over heads of the balanced accuracy of the margin's sign (a scale too small to outweigh the answer prior of
a question's wording ranks subjects as well but answers them alike); ties go to the better separation, the mean
over heads of each head's AUC (pooled over heads, a per-head answer prior would count as separation), then to
the smaller magnitude. Fit it after the router and the paradigm
classifier (each column acts through its head's routing weight and its paradigm's weight).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import RidgeCV
from sklearn.metrics import roc_auc_score

from datasets_scripts.attributes import load_registry
from fcn_llm.questions import FIRST, SECOND, YES, build_question, parse_choice, row_value
from fcn_llm.scoring import choice_log_likelihoods
from processing import FCNProcessor

from .router_fitting import routing_dataset

logger = logging.getLogger("fcn_llm.train")


SCALES = (0.5, 2.0, 8.0)
READABLE_KINDS = ("binary", "categorical", "continuous")


def paradigm_answers(rows: Sequence[dict], label: np.ndarray) -> dict[str, tuple[str, str]]:
    """Per paradigm of `rows`, its (positive, negative) answers: the most frequent answer per label."""
    answers = {}
    for paradigm in sorted({str(row.get("paradigm", "")) for row in rows}):
        pair = []
        for value in (1, 0):
            said = [str(row["answer"]) for row, y in zip(rows, label) if y == value and row.get("paradigm", "") == paradigm]
            pair.append(max(set(said), key=said.count) if said else None)
        if None not in pair:
            answers[paradigm] = tuple(pair)
    return answers


def answer_directions(embeddings: torch.Tensor, tokenizer, answers: dict[str, tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Per paradigm, `(D,)` unit(E[positive answer] - E[negative answer]) at the first token where the two
    answers differ ("First" / "Second"; "The first" / "The second": " first" - " second"); paradigms whose answers never differ
    token for token are left out."""
    directions = {}
    for paradigm, (positive, negative) in answers.items():
        ids = [tokenizer(answer, add_special_tokens=False)["input_ids"] for answer in (positive, negative)]
        differ = [a != b for a, b in zip(*ids)]
        if True not in differ:
            continue
        k = differ.index(True)
        difference = (embeddings[ids[0][k]] - embeddings[ids[1][k]]).float()
        if difference.norm() > 0:
            directions[paradigm] = difference / difference.norm()
    return directions


def evidence_columns(conditioning, output: int, directions: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
    """The columns of `out` that read head output `output`, each with its direction: one per paradigm with
    per-paradigm readouts; else one shared column, the sum of the paradigms' directions (each paradigm's
    answers then move as with its direction alone: the directions are near-orthogonal)."""
    if len(getattr(conditioning, "paradigms", [])) > 1:
        return {conditioning.evidence_column(output, p): d for p, d in directions.items() if p in conditioning.paradigms}
    return {output: torch.stack(list(directions.values())).sum(0)} if directions else {}


@torch.no_grad()
def answer_margins(model, collate, rows: Sequence[dict], answers: Sequence[tuple[str, str]], bf16: bool = False,
                   batch_size: int = 16) -> np.ndarray:
    """`(len(rows),)` log P(positive answer) - log P(negative answer) after each row's prompt (`answers[i]` is
    row i's pair), scored as zero-shot evaluation scores (`choice_log_likelihoods`)."""
    processor, device = collate.processor, next(model.parameters()).device
    margins = np.zeros(len(rows))
    for pair in sorted(set(answers)):
        idx = [i for i, a in enumerate(answers) if a == pair]
        prompts = [processor.apply_chat_template(processor.prompt_messages(rows[i]["messages"]), add_generation_prompt=True)
                   for i in idx]
        fcns = [[collate.lookup(sid) for sid in rows[i]["subject_ids"]] for i in idx]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            ll = choice_log_likelihoods(model, processor, prompts, fcns, list(pair), batch_size=batch_size)
        margins[idx] = ll[:, 0] - ll[:, 1]
    return margins


def rows_by_attribute(rows: Sequence[dict]) -> dict[str, list[dict]]:
    """The instructions grouped by the attribute they ask about (one pass over a possibly large dataset)."""
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row.get("attribute"), []).append(row)
    return grouped


NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def named_threshold(row: dict) -> float | None:
    """The threshold a judgment names: its `threshold` column where the row has one (rows that record their form,
    `template_id`, and leave it empty name none), else the first number in its question ("older than 30 years?"
    -> 30.0); None for other rows."""
    if row.get("paradigm") != "judgment":
        return None
    threshold = row_value(row, "threshold")
    if threshold is not None:
        return float(threshold)
    if row_value(row, "template_id") is not None:
        return None
    question = " ".join(str(m["content"]) for m in FCNProcessor.prompt_messages(row["messages"]) if m["role"] == "user")
    found = NUMBER.search(question)
    return float(found.group()) if found else None


def standardised_threshold(model, j: int, threshold: float) -> float:
    """`threshold` in head `j`'s standardised target units, then in the evidence's (`evidence_norm`) units."""
    spec = model.config.auxiliary_heads[j]
    column = int(np.sum([int(s["num_outputs"]) for s in model.config.auxiliary_heads[:j]]))
    norm = model.model.instruction_conditioning.evidence_norm
    target = (threshold - float(spec.get("mean", 0.0))) / float(spec.get("std", 1.0))
    return (target - float(norm.running_mean[column])) / float(norm.running_var[column] + norm.eps) ** 0.5


def _fit_question_maps(model, collate: Callable[[Sequence[dict]], dict], grouped: dict[str, list[dict]], kind: str,
                       target_of: Callable[[int, dict, list[dict]], np.ndarray | None], maps: str, max_rows: int,
                       seed: int) -> dict[str, float]:
    """For each head of `kind`: ridge regression (alpha by CV) of `target_of(j, spec, about)` `(S, K)` (K: the
    head's outputs; None skips the head) on the router's bag-of-words features of up to `max_rows` instructions
    `about` it (`grouped`: the instructions by attribute, `rows_by_attribute`), written into the head's rows of `{maps}_weight` / `{maps}_bias`. Returns per
    fitted head the fit's R^2 on those rows."""
    conditioning = model.model.instruction_conditioning
    weight, bias = getattr(conditioning, f"{maps}_weight"), getattr(conditioning, f"{maps}_bias")
    specs = model.config.auxiliary_heads
    offsets = np.cumsum([0] + [int(spec["num_outputs"]) for spec in specs])
    rng = np.random.default_rng(seed)
    was_training = model.training
    model.eval()
    fitted = {}
    for j, spec in enumerate(specs):
        about = grouped.get(spec["key"], [])
        if spec["kind"] != kind or not about:
            continue
        about = [about[i] for i in sorted(rng.permutation(len(about))[:max_rows])]
        target = target_of(j, spec, about)
        if target is None:
            continue
        features, _ = routing_dataset(model, collate, about)
        ridge = RidgeCV(alphas=np.logspace(-3, 3, 7)).fit(features, target)
        block = slice(offsets[j], offsets[j + 1])
        with torch.no_grad():  # the sign maps are trained parameters; this fit initialises them
            weight[block] = torch.from_numpy(ridge.coef_.reshape(target.shape[1], -1)).to(weight.dtype)
            bias[block] = torch.from_numpy(np.asarray(ridge.intercept_).reshape(-1)).to(bias.dtype)
        fitted[spec["key"]] = float(ridge.score(features, target))
    model.train(was_training)
    return fitted


def fit_thresholds(model, collate: Callable[[Sequence[dict]], dict], rows: Sequence[dict], *, max_rows: int = 512,
                   seed: int = 0, grouped: dict[str, list[dict]] | None = None) -> dict[str, float]:
    """For each continuous head: ridge regression (alpha by CV) of the standardised threshold its judgments name
    (0 for its other instructions) on the router's bag-of-words features of up to `max_rows` instructions about
    it; written into `instruction_conditioning.threshold_weight` / `threshold_bias` (buffers). Returns per
    fitted head the fit's R^2 on those rows. `grouped`: `rows_by_attribute(rows)`, if the caller has it."""

    def standardised(j: int, spec: dict, about: list[dict]) -> np.ndarray | None:
        named = [named_threshold(row) for row in about]
        if all(t is None for t in named):
            return None
        return np.array([[0.0 if t is None else standardised_threshold(model, j, t)] for t in named])

    grouped = rows_by_attribute(rows) if grouped is None else grouped
    return _fit_question_maps(model, collate, grouped, "continuous", standardised, "threshold", max_rows, seed)


@functools.lru_cache(maxsize=1)
def _registry():
    return load_registry()


def asked_class(row: dict, spec: dict) -> int | None:
    """The output of categorical head `spec` a judgment asks about ("Is this subject female?" -> Female's): the
    row's `asked_class` column where it has one (rows that record their form, `template_id`, and leave it empty
    ask none), else read with the attribute registry's templates; None for other rows and (without the column)
    attributes the registry does not know."""
    if row.get("paradigm") != "judgment":
        return None
    name = row_value(row, "asked_class")
    if name is None:
        registry = _registry()
        if row_value(row, "template_id") is not None or spec["key"] not in registry:
            return None
        attribute = registry[spec["key"]]
        name = attribute.classes[build_question(pd.Series(row), attribute).class_index]
    name = str(name)
    classes = list(spec.get("classes") or (_registry()[spec["key"]].classes if spec["key"] in _registry() else ()))
    if name not in classes:
        raise ValueError(f"Judgment {row.get('id')!r} asks about class {name!r}, which the {spec['key']!r} head "
                         f"does not output (its classes: {classes}).")
    return classes.index(name)


def fit_signs(model, collate: Callable[[Sequence[dict]], dict], rows: Sequence[dict], *, max_rows: int = 512,
              seed: int = 0, grouped: dict[str, list[dict]] | None = None) -> dict[str, float]:
    """For each categorical head whose judgments ask about a class: ridge regression (alpha by CV) of which way
    each question asks about each of its outputs (+1 for the asked class, -1 for the others; +1 for questions
    that ask no class) on the router's bag-of-words features of up to `max_rows` instructions about it; written
    into `instruction_conditioning.sign_weight` / `sign_bias` (their initialisation; stage 1 trains them with
    `sign_labels`). Negated and reversed questions are
    the turn classifier's (`router_fitting.fit_turns`). Returns per fitted head the fit's R^2.
    `grouped`: `rows_by_attribute(rows)`, if the caller has it."""

    def ways(j: int, spec: dict, about: list[dict]) -> np.ndarray | None:
        outputs = np.arange(int(spec["num_outputs"]))
        asked = [asked_class(row, spec) for row in about]
        if all(c is None for c in asked):
            return None
        return np.array([np.ones(len(outputs)) if c is None else np.where(outputs == c, 1.0, -1.0) for c in asked])

    grouped = rows_by_attribute(rows) if grouped is None else grouped
    return _fit_question_maps(model, collate, grouped, "categorical", ways, "sign", max_rows, seed)


def readout_rows(model, rows: Sequence[dict], targets, j: int) -> tuple[list[dict], np.ndarray]:
    """The instructions about head `j` the readout is fitted on, and their labels (1: the positive answer).

    Binary heads: single-subject instructions with a known label. Continuous heads: threshold judgments
    with a known value. Categorical heads: class judgments with a known class. Judgments are labelled by
    their answer ("Yes": 1), so negated and reversed forms count the way they are answered; predictive
    questions by the subject's value."""
    spec = model.config.auxiliary_heads[j]
    known = [row for row in rows if row.get("attribute") == spec["key"] and len(row["subject_ids"]) == 1
             and not np.isnan(targets.get(row["subject_ids"][0], [np.nan] * (j + 1))[j])]
    value = lambda row: float(targets[row["subject_ids"][0]][j])  # noqa: E731
    said_yes = lambda row: float(str(row["answer"]).strip() == YES)  # noqa: E731
    if spec["kind"] == "binary":
        return known, np.array([said_yes(row) if row.get("paradigm") == "judgment" else value(row) for row in known])
    if spec["kind"] == "categorical":
        asked = [row for row in known if asked_class(row, spec) is not None]
        return asked, np.array([said_yes(row) for row in asked])
    known = [row for row in known if named_threshold(row) is not None]
    return known, np.array([said_yes(row) for row in known])


def comparison_rows(rows: Sequence[dict]) -> tuple[list[dict], np.ndarray]:
    """The comparative instructions of `rows` (two subjects) and their labels (1: the answer is the first)."""
    pairs = [row for row in rows if row.get("paradigm") == "comparative" and len(row["subject_ids"]) == 2
             and parse_choice(str(row["answer"]), (FIRST, SECOND)) is not None]
    return pairs, np.array([float(parse_choice(str(row["answer"]), (FIRST, SECOND)) == 0) for row in pairs])


def predictive_readout(rows: Sequence[dict], targets, j: int, spec: dict, first_output: int, embeddings: torch.Tensor,
                       tokenizer) -> tuple[dict[int, torch.Tensor], list[tuple]]:
    """The predictive answers' directions of a binary or categorical head `j` and the rows to compare scales on.

    The class names the predictive instructions about the head answer with (per class, its most frequent answer:
    "ADHD" / "Control", "Female" / "Male") set, per head output, the direction its predictive column is written in:
    a binary head's output along unit(E[positive name] - E[negative name]); a categorical head's output k along
    unit(E[name k] - mean of the other names' E), each at the first token of the name. Returns {head output:
    `(D,)` direction} (empty where names are missing or share a first token) and the rows compared, as
    (row, label, (answer read as positive, the other answer)): binary rows by class, categorical rows of its first
    two classes."""
    about = [row for row in rows if row.get("paradigm") == "predictive" and len(row["subject_ids"]) == 1
             and not np.isnan(targets.get(row["subject_ids"][0], [np.nan] * (j + 1))[j])]
    classes = np.array([int(targets[row["subject_ids"][0]][j]) for row in about])
    names = {}
    for k in range(2 if spec["kind"] == "binary" else int(spec["num_outputs"])):
        said = [str(row["answer"]) for row, c in zip(about, classes) if c == k]
        if said:
            names[k] = max(set(said), key=said.count)
    first = {k: tokenizer(name, add_special_tokens=False)["input_ids"][0] for k, name in names.items()}
    if len(names) < 2 or len(set(first.values())) < len(first):
        return {}, []
    if spec["kind"] == "binary":
        directions = {first_output: embeddings[first[1]] - embeddings[first[0]]}
        compared = [(row, float(c), (names[1], names[0])) for row, c in zip(about, classes)]
    else:
        others = {k: torch.stack([embeddings[first[i]] for i in first if i != k]).mean(0) for k in first}
        directions = {first_output + k: embeddings[first[k]] - others[k] for k in first}
        compared = [(row, float(c == 0), (names[0], names[1])) for row, c in zip(about, classes) if c in (0, 1)
                    and {0, 1} <= set(names)]
    directions = {o: (d.float() / d.float().norm()) for o, d in directions.items() if d.float().norm() > 0}
    return directions, compared


def mean_head_accuracy(labels: np.ndarray, margins: np.ndarray, heads: np.ndarray) -> float:
    """Mean over heads of the balanced accuracy of the answers the `margins` give (positive where > 0)."""
    values = []
    for h in sorted(set(heads.tolist())):
        mine = heads == h
        values.append(np.mean([np.mean((margins[mine & (labels == y)] > 0) == bool(y))
                               for y in (0, 1) if (mine & (labels == y)).any()]))
    return float(np.mean(values))


def mean_head_auc(labels: np.ndarray, scores: np.ndarray, heads: np.ndarray) -> float | None:
    """Mean over heads of the AUC of `scores` for `labels` among each head's rows (heads with both labels);
    None if no head has both."""
    values = [roc_auc_score(labels[heads == h], scores[heads == h]) for h in sorted(set(heads.tolist()))
              if len(set(labels[heads == h].tolist())) == 2]
    return float(np.mean(values)) if values else None


def choose_scale(auc: dict[float, float], accuracy: dict[float, float]) -> float:
    """One kind's readout scale out of those compared (`auc`, `accuracy`: compared scale -> the compared rows' mean
    per-head AUC and accuracy): the one whose answers are right most often, then the better-separating one, then the
    smaller magnitude. 0, answers that ignore the FCN, only where no other scale separates the rows (AUC > 0.5): on a
    few rows per head, answers that ignore the FCN can be right more often by chance."""
    separating = [scale for scale in auc if scale != 0.0 and auc[scale] > 0.5]
    return max(separating or list(auc), key=lambda scale: (accuracy[scale], auc[scale], -abs(scale)))


def names_classes(spec: dict) -> bool:
    """Whether a head's predictive answers are class names (binary and categorical heads)."""
    return spec["kind"] in ("binary", "categorical")


def fit_readout(model, collate: Callable[[Sequence[dict]], dict], rows: Sequence[dict], *,
                kinds: Sequence[str] = ("binary", "continuous"), per_class: int = 4, scales: Sequence[float] = SCALES,
                seed: int = 0, bf16: bool = False) -> dict:
    """Fit the continuous heads' thresholds (`fit_thresholds`, unless the model reads them as numbers: its
    `config.numeral_tokens`) and the categorical heads' signs (`fit_signs`),
    then set the evidence token's columns of every attribute head of `kinds` ("binary", "categorical",
    "continuous"; a categorical head: all its outputs' columns) to `scale * direction` (module docstring), one
    signed scale per kind. With one readout per paradigm, a head compared in comparative instructions also gets its
    comparative columns in the direction of "First" - "Second" (the evidence of a pair reads the
    difference between its subjects), their scale chosen as a kind of its own, `comparative`; and a binary or
    categorical head asked predictive questions gets its predictive columns along its class names
    (`predictive_readout`), at a scale of their own, `predictive`.

    Args:
        collate: the training collator, built with the heads' `attribute_targets` (its labels are the classes)
            and holding the processor (`collate.processor.tokenizer` tokenizes the answers).
        rows: training instructions; those `readout_rows` picks are used.
        per_class: judgments per head and label on which the scales are compared (fewer if fewer exist; other
            instructions about the head where it has no judgments with both answers).
        scales: candidate magnitudes, in units of the mean input-embedding norm, tried with the sign that
            separates better at the middle one (0, no readout, is always compared).
        bf16: compare the scales under bfloat16 autocast (as training runs).
    Returns:
        `heads` (the keys of the heads given a nonzero column), `scale` (per kind, the chosen signed one, in
        embedding norms), `auc` (per kind and compared scale, the compared judgments' mean per-head AUC; ties
        go to the smaller magnitude), `threshold_r2` (`fit_thresholds`) and `sign_r2` (`fit_signs`).
    """
    conditioning = model.model.instruction_conditioning
    if conditioning is None or not conditioning.reads_attributes:
        raise ValueError("fit_readout needs instruction_evidence='attributes' (an evidence token over the attribute heads).")
    targets = getattr(collate, "attribute_targets", None)
    if targets is None:
        raise ValueError("fit_readout needs a collator built with the heads' attribute targets (attribute_targets).")
    specs = model.config.auxiliary_heads
    offsets = np.cumsum([0] + [int(spec["num_outputs"]) for spec in specs])
    unknown = set(kinds) - set(READABLE_KINDS)
    if unknown:
        raise ValueError(f"fit_readout reads out {', '.join(READABLE_KINDS)} heads, not {sorted(unknown)}.")
    readable = {spec["key"]: j for j, spec in enumerate(specs) if spec["kind"] in kinds}
    grouped = rows_by_attribute(rows)
    reads_numbers = bool(getattr(conditioning, "numerals", None))  # thresholds read as numbers: nothing to fit
    thresholds = fit_thresholds(model, collate, rows, seed=seed, grouped=grouped) if "continuous" in kinds and not reads_numbers else {}
    signs = fit_signs(model, collate, rows, seed=seed, grouped=grouped) if "categorical" in kinds else {}
    # the answer position adds the evidence to the hidden state the output embeddings read; graph tokens are inputs
    at_answer = getattr(conditioning, "at_answer", False)
    embeddings = (model.get_output_embeddings() if at_answer else model.get_input_embeddings()).weight.detach()
    rng = np.random.default_rng(seed)
    directions, written, compared = {}, {}, []  # compared: (row, label, its paradigm's answers, kind, head)
    for key, j in readable.items():
        about, label = readout_rows(model, grouped.get(key, []), targets, j)
        if not about:
            continue
        if not 0 < label.sum() < len(label):
            raise ValueError(f"fit_readout needs training instructions with both answers about {key!r}; "
                             f"got {int(label.sum())} positive and {int((label == 0).sum())} negative.")
        # read out on judgments ("Yes"/"No", what the quality bar scores) where there are some with both answers
        judged = np.array([row.get("paradigm") == "judgment" for row in about])
        pool = judged if (judged & (label == 1)).any() and (judged & (label == 0)).any() else np.ones_like(judged)
        answers = paradigm_answers([about[i] for i in np.flatnonzero(pool)], label[pool])
        said = answer_directions(embeddings, collate.processor.tokenizer, answers)
        columns = {column: direction for output in range(offsets[j], offsets[j + 1])  # a categorical head: all its outputs
                   for column, direction in evidence_columns(conditioning, output, said).items()}
        if not columns:
            logger.warning("evidence readout: the positive and negative answers about %r start with the same token "
                           "(or have no readout of their own); its column is left to training.", key)
            continue
        written[key] = str(specs[j]["kind"])
        directions.update({column: (written[key], direction) for column, direction in columns.items()})
        for value in (1, 0):
            for i in rng.permutation(np.flatnonzero(pool & (label == value)))[:per_class]:
                compared.append((about[i], value, answers[str(about[i].get("paradigm", ""))], str(specs[j]["kind"]), key))
        if names_classes(specs[j]) and "predictive" in getattr(conditioning, "paradigms", []):
            named, asked = predictive_readout(grouped.get(key, []), targets, j, specs[j], int(offsets[j]), embeddings,
                                              collate.processor.tokenizer)
            directions.update({conditioning.evidence_column(output, "predictive"): ("predictive", direction)
                               for output, direction in named.items()})
            labels_asked = np.array([label for _, label, _ in asked])
            for value in (1, 0):
                for i in rng.permutation(np.flatnonzero(labels_asked == value))[:per_class]:
                    compared.append((asked[i][0], value, asked[i][2], "predictive", key))
        pairs, first = comparison_rows(grouped.get(key, []))
        if "comparative" in getattr(conditioning, "paradigms", []) and 0 < first.sum() < len(first):
            said = answer_directions(embeddings, collate.processor.tokenizer, {"comparative": (FIRST, SECOND)})
            directions.update({column: ("comparative", direction) for output in range(offsets[j], offsets[j + 1])
                               for column, direction in evidence_columns(conditioning, output, said).items()})
            for value in (1, 0):
                for i in rng.permutation(np.flatnonzero(first == value))[:per_class]:
                    compared.append((pairs[i], value, (FIRST, SECOND), "comparative", key))
    if not directions:
        raise ValueError(f"fit_readout found no instructions about a {' or '.join(kinds)} attribute head "
                         f"({sorted(readable)}) with a known label.")
    unit = float(embeddings.float().norm(dim=-1).mean())
    weight = conditioning.out.weight
    original = weight.detach().clone()

    def write(scale_of: Callable[[str], float]) -> None:
        with torch.no_grad():
            weight.copy_(original)
            for column, (kind, direction) in directions.items():
                weight[:, column] = (scale_of(kind) * unit * direction).to(weight.dtype)

    rows_compared, labels, pairs, kinds, heads_of = (list(x) for x in zip(*compared))
    labels, kinds, heads_of = np.array(labels), np.array(kinds), np.array(heads_of)
    kinds_compared = sorted(set(kinds.tolist()))
    was_training = model.training
    model.eval()
    auc: dict[str, dict[float, float]] = {kind: {} for kind in kinds_compared}
    accuracy: dict[str, dict[float, float]] = {kind: {} for kind in kinds_compared}

    def compare(scale_of: Callable[[str], float]) -> None:
        """Score the compared rows with each kind's column at `scale_of(kind)`; record each kind's AUC and accuracy."""
        write(scale_of)
        margins = answer_margins(model, collate, rows_compared, pairs, bf16=bf16)
        for kind in kinds_compared:
            mine = kinds == kind
            value = mean_head_auc(labels[mine], margins[mine], heads_of[mine])
            if value is not None:
                auc[kind][float(scale_of(kind))] = value
                accuracy[kind][float(scale_of(kind))] = mean_head_accuracy(labels[mine], margins[mine], heads_of[mine])

    probe = float(sorted(scales)[len(scales) // 2])
    for scale in (0.0, probe, -probe):  # each instruction reads its own head's column (the router's weight)
        compare(lambda kind: scale)
    sign = {kind: 1.0 if by.get(probe, -1.0) >= by.get(-probe, -1.0) else -1.0 for kind, by in auc.items()}
    for magnitude in sorted(float(s) for s in scales if float(s) != probe):
        compare(lambda kind: sign.get(kind, 1.0) * magnitude)
    model.train(was_training)
    auc = {kind: by for kind, by in auc.items() if by}
    best = {kind: choose_scale(by, accuracy[kind]) for kind, by in auc.items()}
    write(lambda kind: best.get(kind, 0.0))
    heads = [key for key, kind in written.items() if best.get(kind, 0.0) != 0.0]
    logger.info("evidence readout of %d heads in the answers' words: scale %s embedding norms (balanced accuracy / "
                "AUC on %d training instructions: %s); thresholds and asked classes read from the instructions, R^2 %s",
                len(heads), best, len(compared),
                "; ".join(f"{kind} " + ", ".join(f"{s:g}: {accuracy[kind][s]:.3f}/{v:.3f}" for s, v in by_scale.items())
                          for kind, by_scale in auc.items()),
                ", ".join(f"{k} {v:.2f}" for k, v in {**thresholds, **signs}.items()) or "-")
    return {"heads": heads, "scale": best, "auc": auc, "accuracy": {kind: accuracy[kind] for kind in auc},
            "threshold_r2": thresholds, "sign_r2": signs}
