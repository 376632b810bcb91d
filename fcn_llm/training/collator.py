"""Instruction rows -> FCN-LLM training batches (answer tokens only carry loss).

A row of the `instructions` config holds `messages` (chat turns with `<graph>` placeholders, an
optional final assistant turn), `answer` and `subject_ids` (one per placeholder). The collator renders
the user turns with the processor's chat template and looks the FCNs up by subject id; the processor
(`processor(text=..., fcns=..., answers=...)`) appends each answer and the end-of-turn marker (exactly
what zero-shot scoring measures), checks and normalises the FCNs, checks the `<graph>` expansions and
masks every prompt token with -100.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .readout_fitting import asked_class
from .router_fitting import turn_label


class FCNInstructionCollator:
    """Collate instruction rows into `input_ids`, `attention_mask`, `labels`, `graph_values`
    (and `graph_attribute_labels` when auxiliary targets are given, `routing_labels` when routing keys are).

    Args:
        processor: an `FCNProcessor` (chat template, `<graph>` expansion, FCN checks and normalisation).
        graph_lookup: subject id -> FCN `(N, N)` (a mapping or a callable).
        max_length: longest sequence; a longer one raises (never a silently cut answer).
        attribute_targets: subject id -> `(A,)` auxiliary targets (NaN = unknown), or None.
        routing_keys: the attribute heads' keys; each row's `attribute` becomes its index in them
            (`routing_labels`, -100 if absent), which supervises the evidence token's router.
        question_heads: the attribute heads (`config.auxiliary_heads`): each row also gets `turn_labels` (1 where a
            judgment or comparison asks the other way round, 0 where plainly, -100 otherwise: `turn_label`) and
            `sign_labels` `(A,)` (its head's outputs: +1 for the class a judgment asks about, -1 for the others, +1
            where it asks none; NaN for other heads), which supervise the evidence token's turn classifier and class
            signs.
        paradigms: the evidence readouts' paradigms (`config.evidence_paradigms`): each row's paradigm becomes its
            index in them (`paradigm_labels`, -100 if absent), which supervises the paradigm classifier.
    """

    def __init__(
        self,
        processor,
        graph_lookup: Mapping[str, Any] | Callable[[str], Any],
        max_length: int = 1024,
        attribute_targets: Mapping[str, np.ndarray] | None = None,
        num_attribute_targets: int = 0,
        routing_keys: Sequence[str] | None = None,
        question_heads: Sequence[Mapping[str, Any]] | None = None,
        paradigms: Sequence[str] | None = None,
    ):
        self.processor = processor
        self.lookup = graph_lookup if callable(graph_lookup) else graph_lookup.__getitem__
        self.max_length = max_length
        self.attribute_targets = attribute_targets
        self.num_attribute_targets = num_attribute_targets
        self.routing_index = None if routing_keys is None else {key: i for i, key in enumerate(routing_keys)}
        self.question_heads = None if question_heads is None else list(question_heads)
        self.paradigm_index = None if not paradigms or len(paradigms) < 2 else {p: i for i, p in enumerate(paradigms)}
        self.end_of_turn = processor.end_of_turn

    def prompt(self, row: Mapping[str, Any]) -> str:
        """The row's chat-template prompt (user turns, assistant prefix); its placeholders must match its subjects."""
        processor = self.processor
        prompt = processor.apply_chat_template(processor.prompt_messages(row["messages"]), add_generation_prompt=True)
        count, subjects = prompt.count(processor.graph_token), len(row["subject_ids"])
        if count != subjects:
            raise ValueError(
                f"Instruction {row.get('id', '?')}: {count} {processor.graph_token} placeholder(s) but "
                f"{subjects} subject id(s)."
            )
        return prompt

    def token_length(self, row: Mapping[str, Any]) -> int:
        """The row's token count as the processor encodes it (prompt, answer, end-of-turn), without its FCNs;
        a row over `max_length` raises."""
        answer = str(row["answer"]) + self.end_of_turn
        prompt_ids, answer_ids = self.processor.prompt_and_answer_ids(self.prompt(row), answer)
        length = len(prompt_ids) + len(answer_ids)
        if self.max_length is not None and length > self.max_length:
            raise ValueError(f"Instruction {row.get('id', '?')} is {length} tokens long, over max_length={self.max_length}.")
        return length

    def _process(self, rows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, torch.Tensor], list]:
        """The processor's `input_ids`, `attention_mask`, `labels` `(B, L)` (right padding, as training wants) and
        `graph_values` of `rows` (its errors name the batch's instruction ids), and the looked-up FCNs."""
        prompts = [self.prompt(row) for row in rows]
        fcns = [self.lookup(sid) for row in rows for sid in row["subject_ids"]]
        try:
            encoded = self.processor(
                text=prompts, fcns=fcns or None, answers=[str(row["answer"]) for row in rows],
                padding=True, padding_side="right", max_length=self.max_length, return_tensors="pt",
            )
        except ValueError as err:
            ids = [row.get("id", "?") for row in rows]
            raise ValueError(f"Instruction(s) {ids} (samples in this order): {err}") from err
        return dict(encoded), fcns

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch, fcns = self._process(rows)
        if self.attribute_targets is not None and fcns:
            subject_ids = [sid for row in rows for sid in row["subject_ids"]]
            nan = np.full(self.num_attribute_targets, np.nan, dtype=np.float32)
            targets = [self.attribute_targets.get(sid, nan) for sid in subject_ids]
            batch["graph_attribute_labels"] = torch.from_numpy(np.stack(targets).astype(np.float32))
        if self.routing_index is not None and fcns:
            batch["routing_labels"] = torch.tensor([self.routing_index.get(row.get("attribute"), -100) for row in rows])
        if self.paradigm_index is not None and fcns:
            batch["paradigm_labels"] = torch.tensor([self.paradigm_index.get(row.get("paradigm"), -100) for row in rows])
        if self.question_heads is not None and fcns:
            batch["turn_labels"] = torch.tensor([-100 if (label := turn_label(row)) is None else label for row in rows])
            batch["sign_labels"] = torch.from_numpy(np.stack([self.class_signs(row) for row in rows]))
        return batch

    def class_signs(self, row: Mapping[str, Any]) -> np.ndarray:
        """`(A,)` the row's `sign_labels`: for its attribute's head, +1 on the output of the class a judgment asks
        about and -1 on the others (+1 on all where it asks none); NaN for the other heads."""
        signs = []
        for spec in self.question_heads:
            width = int(spec["num_outputs"])
            if spec["key"] != row.get("attribute"):
                signs += [np.nan] * width
                continue
            asked = asked_class(row, spec) if spec["kind"] == "categorical" else None
            signs += [1.0] * width if asked is None else [1.0 if k == asked else -1.0 for k in range(width)]
        return np.array(signs, dtype=np.float32)
