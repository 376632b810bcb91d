"""FCN-LLM answers: log-likelihoods of fixed choices (one prefill per prompt) and greedy numbers.

`choice_log_likelihoods` scores C allowed answers of B prompts in one forward pass per batch of
prompts (left-padded, graphs encoded once): the choices' tokens are appended after the prompt as C
side branches that see the prompt and themselves only (a 4-D attention mask, positions continuing
the prompt's), and only the last positions' logits are computed (`logits_to_keep`). A separate
continuation pass over a repeated KV cache costs a second read of every weight; with SmolLM2-135M
it was 18 % of the scoring time (bench/answering.py). Attention kernels that take no custom mask
(flash attention) use that cache path. A choice's score is the sum of the log-probabilities of its
tokens (including the end-of-turn marker, so "No" is not a free prefix of "Not sure"), conditioned
on the chat-template prompt with the assistant prefix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from fcn_llm.threads import rebalance


_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")


def length_sorted_batches(processor, prompts: Sequence[str], batch_size: int) -> list[list[int]]:
    """Prompt indices in batches of `batch_size`, ordered by token length (graphs expanded), so that
    each batch pads to a length close to all of its prompts'."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    lengths = [len(ids) for ids in processor.tokenizer([processor.expand_graphs(p) for p in prompts])["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


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
    single_pass: bool | None = None,
) -> np.ndarray:
    """Sum log-probabilities of each choice after each prompt.

    Args:
        prompts: B chat-template prompts ending with the assistant prefix, with `<graph>` placeholders.
        fcns: per prompt, its FCNs `(N, N)` in placeholder order.
        choices: the C allowed answers (same for every prompt).
        append_end_of_turn: score "answer<end-of-turn>" (the complete answer), not just its prefix.
        single_pass: choices as masked branches of the prompt's forward (default where the attention
            implementation takes a 4-D mask: eager, sdpa), else prefill + cached continuation.
    Returns:
        `(B, C)` float64 log-likelihoods.
    """
    if len(prompts) != len(fcns):
        raise ValueError(f"{len(prompts)} prompts but {len(fcns)} FCN lists.")
    if not choices:
        raise ValueError("No choices to score.")
    if single_pass is None:
        config = getattr(model, "config", None)
        text_config = getattr(config, "text_config", config)
        single_pass = getattr(text_config, "_attn_implementation", None) in ("eager", "sdpa")
    suffix = processor.end_of_turn if append_end_of_turn else ""
    device = next(model.parameters()).device
    out = np.zeros((len(prompts), len(choices)), dtype=np.float64)
    for batch in length_sorted_batches(processor, prompts, batch_size):
        rebalance()
        batch_prompts = [prompts[i] for i in batch]
        batch_fcns = [list(fcns[i]) for i in batch]
        cont = [[processor.answer_ids(p, c + suffix) for c in choices] for p in batch_prompts]
        if any(len(ids) == 0 for row in cont for ids in row):
            raise ValueError(f"A choice tokenizes to no tokens: {list(choices)}.")
        inputs = processor(text=batch_prompts, fcns=[f for row in batch_fcns for f in row] or None,
                           padding=True, padding_side="left", return_tensors="pt").to(device)
        score = _score_single_pass if single_pass else _score_with_cache
        out[batch] = score(model, processor, inputs, cont)
    return out


def _score_single_pass(model, processor, inputs, cont: list[list[list[int]]]) -> np.ndarray:
    """One forward of [prompt | branch 1 | ... | branch C] per row; branch c holds choice c's tokens but its
    last, sees the (unpadded) prompt and its own earlier tokens, and is placed at the positions after the prompt."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    device, (b, length) = ids.device, ids.shape
    feeds = [[t for c in row for t in c[:-1]] for row in cont]
    width = max(len(f) for f in feeds)
    pad_id = processor.tokenizer.pad_token_id or 0
    tail = torch.full((b, width), pad_id, dtype=torch.long, device=device)
    tail_pos = torch.zeros((b, width), dtype=torch.long, device=device)
    total = length + width
    allowed = torch.zeros((b, total, total), dtype=torch.bool, device=device)
    keys = mask.bool()  # (B, L) real prompt tokens
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=device))
    allowed[:, :length, :length] = causal & keys[:, None, :]
    prompt_len = mask.sum(-1)
    for i, row in enumerate(cont):
        col = 0
        for c in row:
            n = len(c) - 1
            if n:
                tail[i, col : col + n] = torch.tensor(c[:-1], device=device)
                tail_pos[i, col : col + n] = prompt_len[i] + torch.arange(n, device=device)
                q = length + col + torch.arange(n, device=device)
                allowed[i, q, :length] = keys[i]
                allowed[i, q[:, None], q[None, :]] = torch.tril(torch.ones(n, n, dtype=torch.bool, device=device))
            col += n
    idx = torch.arange(total, device=device)
    allowed[:, idx, idx] |= ~allowed.any(-1)  # padding queries see themselves (no all-masked rows)
    dtype = model.get_input_embeddings().weight.dtype
    additive = torch.zeros((b, 1, total, total), dtype=dtype, device=device)
    additive.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    outputs = model(input_ids=torch.cat([ids, tail], -1), attention_mask=additive,
                    graph_values=inputs.get("graph_values"),
                    position_ids=torch.cat([_position_ids(mask), tail_pos], -1), logits_to_keep=width + 1,
                    # instruction conditioning reads the prompt only, never the answer branches
                    instruction_mask=torch.cat([keys, torch.zeros_like(tail, dtype=torch.bool)], -1))
    logp = torch.log_softmax(outputs.logits.float(), -1)  # (B, 1 + width, V): prompt end, then each branch token
    scores = np.zeros((b, len(cont[0])), dtype=np.float64)
    for i, row in enumerate(cont):
        col = 0
        for c, choice_ids in enumerate(row):
            total_lp = logp[i, 0, choice_ids[0]]
            for j in range(1, len(choice_ids)):
                total_lp = total_lp + logp[i, 1 + col + j - 1, choice_ids[j]]
            scores[i, c] = float(total_lp)
            col += len(choice_ids) - 1
    return scores


def _score_with_cache(model, processor, inputs, cont: list[list[list[int]]]) -> np.ndarray:
    """Prefill (`logits_to_keep=1`), repeat the KV cache per choice, run the choices' remaining tokens."""
    device = inputs["input_ids"].device
    b, num_choices = len(cont), len(cont[0])
    scores = np.zeros((b, num_choices), dtype=np.float64)
    mask = inputs["attention_mask"]
    prefill = model(input_ids=inputs["input_ids"], attention_mask=mask,
                    graph_values=inputs.get("graph_values"), position_ids=_position_ids(mask),
                    use_cache=True, logits_to_keep=1)
    first_logp = torch.log_softmax(prefill.logits[:, -1].float(), -1)  # (B, V)
    for i in range(b):
        for c in range(num_choices):
            scores[i, c] = float(first_logp[i, cont[i][c][0]])
    max_rest = max(len(ids) for row in cont for ids in row) - 1
    if max_rest == 0:
        return scores
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
                scores[i, c] += float(logp[row, j - 1, ids[j]])
    return scores


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
    answers: list[str] = [""] * len(prompts)
    tokenizer = processor.tokenizer
    for batch in length_sorted_batches(processor, prompts, batch_size):
        rebalance()
        batch_prompts = [prompts[i] for i in batch]
        batch_fcns = [f for i in batch for f in fcns[i]]
        inputs = processor(text=batch_prompts, fcns=batch_fcns or None, padding=True, padding_side="left",
                           return_tensors="pt").to(device)
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=_stop_ids(processor))
        new = output[:, inputs["input_ids"].shape[1]:]
        for i, text in zip(batch, tokenizer.batch_decode(new, skip_special_tokens=True)):
            answers[i] = text
    return answers


def _stop_ids(processor) -> list[int]:
    """Token ids that end an answer: the tokenizer's EOS and the chat template's end-of-turn token."""
    tokenizer = processor.tokenizer
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    marker = processor.end_of_turn
    if marker:
        marker_ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
        if len(marker_ids) == 1:
            ids.add(marker_ids[0])
    return sorted(ids)
