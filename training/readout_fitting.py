"""Fit the evidence token's readout of the binary attribute heads in closed form before stage 1.

The evidence token adds `out(w * z)` to a graph's tokens (`InstructionConditioning`): `z` the
standardised attribute-head outputs, `w` the router's weights. Each head's column of `out` must
find a direction in the frozen LLM's embedding space that turns "this subject scores high on the
head" into the answer "Yes" (or the attribute's positive class word). Learned by the answer loss
from zero, a condition gets ~50 judgment questions in the demo's 400 stage-1 steps: the demo's
autism and PTSD answers followed their heads with Spearman 0.23 and 0.46 after stage 1 (ADHD,
depression: 0.83, 0.85).

Here each binary head's column is written in the LLM's own words: the embedding of its positive
answer's first token minus its negative answer's ("Yes" - "No" for judgments, "ADHD" - "Control" for
predictive questions; unit length, averaged over the paradigms its training instructions use), times
one scale shared by the heads, the one of `SCALES` (x the mean embedding norm) under which the LLM
gives balanced training instructions' answers the highest likelihood. Measured on the demo data at
the start of stage 1 (SmolLM2, 4 conditions, 40 zero-shot questions each): the answers' AUC with the
word readout 0.69-0.78 (mean 0.74), with the margin gradient's direction (scaled to the heads'
logistic slopes) 0.53-0.76 (mean 0.60) — the margin responded to the gradient's direction at a fifth
of its first-order slope, and not monotonically. Fit it after the router (the column acts through the
router's weight).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch

logger = logging.getLogger("fcn_llm.train")


def answer_log_likelihoods(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`(B, L, V)` logits, `(B, L)` labels (-100 off the answer) -> `(B,)` the answers' summed log-probabilities."""
    targets = labels[:, 1:]
    known = targets != -100
    log_probs = logits[:, :-1].float().log_softmax(-1)
    picked = log_probs.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return (picked * known).sum(-1)


SCALES = (0.5, 1.0, 2.0, 4.0, 8.0)


def answer_directions(embeddings: torch.Tensor, tokenizer, rows: Sequence[dict], label: np.ndarray) -> torch.Tensor | None:
    """`(D,)` unit mean over the rows' paradigms of unit(E[positive answer] - E[negative answer]) (first
    tokens; each paradigm's most frequent answer per label); None if no paradigm's two answers differ."""
    directions = []
    for paradigm in sorted({row.get("paradigm", "") for row in rows}):
        answers = []
        for value in (1, 0):
            said = [str(row["answer"]) for row, y in zip(rows, label) if y == value and row.get("paradigm", "") == paradigm]
            answers.append(max(set(said), key=said.count) if said else None)
        if None in answers:
            continue
        first = [tokenizer(answer, add_special_tokens=False)["input_ids"][0] for answer in answers]
        difference = (embeddings[first[0]] - embeddings[first[1]]).float()
        if difference.norm() > 0:
            directions.append(difference / difference.norm())
    if not directions:
        return None
    mean = torch.stack(directions).mean(0)
    return mean / mean.norm()


@torch.no_grad()
def answer_log_likelihood(model, collate: Callable[[Sequence[dict]], dict], rows: Sequence[dict],
                          batch_size: int = 16) -> float:
    """Mean over `rows` of their answers' summed log-probability under `model`."""
    total = 0.0
    for start in range(0, len(rows), batch_size):
        batch = collate(list(rows[start : start + batch_size]))
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       graph_values=batch["graph_values"], labels=batch["labels"]).logits
        total += float(answer_log_likelihoods(logits, batch["labels"]).sum())
    return total / len(rows)


def fit_readout(model, collate: Callable[[Sequence[dict]], dict], rows: Sequence[dict], *, per_class: int = 8,
                scales: Sequence[float] = SCALES, seed: int = 0) -> dict:
    """Set the evidence token's column of every binary attribute head to `scale * direction` (module docstring).

    Args:
        collate: the training collator, built with the heads' `attribute_targets` (its labels are the classes)
            and holding the processor (`collate.processor.tokenizer` tokenizes the answers).
        rows: training instructions; those about one subject and a binary head, with a known label, are used.
        per_class: instructions per head and label on which the scales are compared (fewer if fewer exist).
        scales: candidate scales, in units of the mean input-embedding norm (0, no readout, is always compared).
    Returns:
        `heads` (the fitted heads' keys), `scale` (the chosen one, in embedding norms) and `log_likelihood`
        (per scale, the mean answer log-likelihood of the compared instructions).
    """
    conditioning = model.model.instruction_conditioning
    if conditioning is None or not conditioning.reads_attributes:
        raise ValueError("fit_readout needs instruction_evidence='attributes' (an evidence token over the attribute heads).")
    targets = getattr(collate, "attribute_targets", None)
    if targets is None:
        raise ValueError("fit_readout needs a collator built with the heads' attribute targets (attribute_targets).")
    specs = model.config.auxiliary_heads
    offsets = np.cumsum([0] + [int(spec["num_outputs"]) for spec in specs])
    binary = {spec["key"]: j for j, spec in enumerate(specs) if spec["kind"] == "binary"}
    embeddings = model.get_input_embeddings().weight.detach()
    rng = np.random.default_rng(seed)
    directions, compared = {}, []
    for key, j in binary.items():
        about = [row for row in rows if row.get("attribute") == key and len(row["subject_ids"]) == 1
                 and not np.isnan(targets.get(row["subject_ids"][0], [np.nan] * (j + 1))[j])]
        if not about:
            continue
        label = np.array([targets[row["subject_ids"][0]][j] for row in about])
        if not 0 < label.sum() < len(label):
            raise ValueError(f"fit_readout needs training instructions with both answers about {key!r}; "
                             f"got {int(label.sum())} positive and {int((label == 0).sum())} negative.")
        direction = answer_directions(embeddings, collate.processor.tokenizer, about, label)
        if direction is None:
            logger.warning("evidence readout: the positive and negative answers about %r start with the same token; "
                           "its column is left to training.", key)
            continue
        directions[offsets[j]] = direction
        compared += [about[i] for value in (1, 0) for i in rng.permutation(np.flatnonzero(label == value))[:per_class]]
    if not directions:
        raise ValueError(f"fit_readout found no instructions about a binary attribute head ({sorted(binary)}) "
                         "with a known label.")
    unit = float(embeddings.float().norm(dim=-1).mean())
    weight = conditioning.out.weight
    original = weight.detach().clone()
    was_training = model.training
    model.eval()
    log_likelihood = {}
    for scale in (0.0, *scales):
        with torch.no_grad():
            for column, direction in directions.items():
                weight[:, column] = (scale * unit * direction).to(weight.dtype)
        log_likelihood[scale] = answer_log_likelihood(model, collate, compared)
    model.train(was_training)
    best = max(log_likelihood, key=log_likelihood.get)
    with torch.no_grad():
        weight.copy_(original)
        for column, direction in directions.items():
            weight[:, column] = (best * unit * direction).to(weight.dtype)
    heads = [key for key, j in binary.items() if offsets[j] in directions]
    logger.info("evidence readout of %d binary heads in the answers' words: scale %.1f embedding norms "
                "(answer log-likelihood %s)", len(heads), best,
                ", ".join(f"{s:g}: {v:.3f}" for s, v in log_likelihood.items()))
    return {"heads": heads, "scale": best, "log_likelihood": log_likelihood}
