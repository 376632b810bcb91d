"""FCN-LLM answers: log-likelihoods of fixed choices (one prefill per prompt) and greedy numbers.

`choice_log_likelihoods` scores C allowed answers of B prompts: the prompts are prefilled once
(left-padded batch, graphs encoded once, `logits_to_keep=1`), the KV cache is repeated C times and
the choices' remaining tokens run as a short continuation. A choice's score is the sum of the
log-probabilities of its tokens (including the end-of-turn marker, so "No" is not a free prefix of
"Not sure"), conditioned on the chat-template prompt with the assistant prefix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from training.collator import end_of_turn  # training labels and scoring must end answers alike

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")


def expand_graphs(processor, text: str) -> str:
    """`text` with each `<graph>` placeholder repeated G times, as the processor feeds the model."""
    return text.replace(processor.graph_token, processor.graph_token * int(processor.num_graph_tokens or 1))


def continuation_ids(processor, prompt: str, answer: str) -> list[int]:
    """Token ids of `answer` after `prompt`, tokenized jointly as training does (falls back to alone)."""
    tokenizer = processor.tokenizer
    expanded = expand_graphs(processor, prompt)
    prompt_ids = tokenizer(expanded)["input_ids"]
    full_ids = tokenizer(expanded + answer)["input_ids"]
    if full_ids[: len(prompt_ids)] == prompt_ids and len(full_ids) > len(prompt_ids):
        return list(full_ids[len(prompt_ids):])
    return list(tokenizer(answer, add_special_tokens=False)["input_ids"])


def _position_ids(attention_mask: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
    """Positions `(B, L)` counting only attended tokens (left padding gets position 0), plus `offset` `(B,)`."""
    pos = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    return pos if offset is None else pos + offset[:, None]


@torch.no_grad()
def choice_log_likelihoods(
    model,
    processor,
    prompts: Sequence[str],
    fcns: Sequence[Sequence[np.ndarray]],
    choices: Sequence[str],
    *,
    batch_size: int = 8,
    append_end_of_turn: bool = True,
) -> np.ndarray:
    """Sum log-probabilities of each choice after each prompt.

    Args:
        prompts: B chat-template prompts ending with the assistant prefix, with `<graph>` placeholders.
        fcns: per prompt, its FCNs `(N, N)` in placeholder order.
        choices: the C allowed answers (same for every prompt).
        append_end_of_turn: score "answer<end-of-turn>" (the complete answer), not just its prefix.
    Returns:
        `(B, C)` float64 log-likelihoods.
    """
    if len(prompts) != len(fcns):
        raise ValueError(f"{len(prompts)} prompts but {len(fcns)} FCN lists.")
    if not choices:
        raise ValueError("No choices to score.")
    suffix = end_of_turn(processor) if append_end_of_turn else ""
    device = next(model.parameters()).device
    num_choices = len(choices)
    out = np.zeros((len(prompts), num_choices), dtype=np.float64)
    for start in range(0, len(prompts), batch_size):
        batch_prompts = list(prompts[start : start + batch_size])
        batch_fcns = [list(f) for f in fcns[start : start + batch_size]]
        b = len(batch_prompts)
        cont = [[continuation_ids(processor, p, c + suffix) for c in choices] for p in batch_prompts]
        if any(len(ids) == 0 for row in cont for ids in row):
            raise ValueError(f"A choice tokenizes to no tokens: {list(choices)}.")
        inputs = processor(text=batch_prompts, fcns=[f for row in batch_fcns for f in row] or None,
                           padding=True, padding_side="left", return_tensors="pt").to(device)
        mask = inputs["attention_mask"]
        prefill = model(input_ids=inputs["input_ids"], attention_mask=mask,
                        graph_values=inputs.get("graph_values"), position_ids=_position_ids(mask),
                        use_cache=True, logits_to_keep=1)
        first_logp = torch.log_softmax(prefill.logits[:, -1].float(), -1)  # (B, V)
        for i in range(b):
            for c in range(num_choices):
                out[start + i, c] = float(first_logp[i, cont[i][c][0]])
        max_rest = max(len(ids) for row in cont for ids in row) - 1
        if max_rest == 0:
            continue
        # Continuation: feed tokens 0..L-2 of each choice; their logits score tokens 1..L-1.
        cache = prefill.cache
        cache.batch_repeat_interleave(num_choices)
        pad_id = processor.tokenizer.pad_token_id or 0
        feed = torch.full((b * num_choices, max_rest), pad_id, dtype=torch.long, device=device)
        feed_mask = torch.zeros_like(feed)
        for i in range(b):
            for c in range(num_choices):
                ids = cont[i][c][:-1]
                if ids:
                    feed[i * num_choices + c, : len(ids)] = torch.tensor(ids, device=device)
                    feed_mask[i * num_choices + c, : len(ids)] = 1
        prefix_mask = mask.repeat_interleave(num_choices, 0)
        offset = prefix_mask.sum(-1)
        positions = offset[:, None] + torch.arange(max_rest, device=device)[None]
        step = model(input_ids=feed, attention_mask=torch.cat([prefix_mask, feed_mask], -1),
                     position_ids=positions, cache=cache, use_cache=True)
        logp = torch.log_softmax(step.logits.float(), -1)  # (B*C, max_rest, V)
        for i in range(b):
            for c in range(num_choices):
                ids = cont[i][c]
                row = i * num_choices + c
                for j in range(1, len(ids)):
                    out[start + i, c] += float(logp[row, j - 1, ids[j]])
    return out


def parse_number(text: str) -> float | None:
    """The first number in `text` ("about 34 years" -> 34.0), None if there is none."""
    match = _NUMBER.search(text.replace(",", ""))
    if match is None:
        return None
    try:
        return float(match.group())
    except ValueError:
        return None


@torch.no_grad()
def generate_answers(
    model,
    processor,
    prompts: Sequence[str],
    fcns: Sequence[Sequence[np.ndarray]],
    *,
    batch_size: int = 8,
    max_new_tokens: int = 8,
) -> list[str]:
    """Greedy answers (decoded, special tokens dropped) to B prompts with their FCNs."""
    device = next(model.parameters()).device
    answers: list[str] = []
    tokenizer = processor.tokenizer
    for start in range(0, len(prompts), batch_size):
        batch_prompts = list(prompts[start : start + batch_size])
        batch_fcns = [f for row in fcns[start : start + batch_size] for f in row]
        inputs = processor(text=batch_prompts, fcns=batch_fcns or None, padding=True, padding_side="left",
                           return_tensors="pt").to(device)
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=_stop_ids(processor))
        new = output[:, inputs["input_ids"].shape[1]:]
        answers.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    return answers


def _stop_ids(processor) -> list[int]:
    """Token ids that end an answer: the tokenizer's EOS and the chat template's end-of-turn token."""
    tokenizer = processor.tokenizer
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    marker = end_of_turn(processor)
    if marker:
        marker_ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
        if len(marker_ids) == 1:
            ids.add(marker_ids[0])
    return sorted(ids)
