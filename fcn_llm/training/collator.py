"""Instruction rows -> FCN-LLM training batches (answer tokens only carry loss).

A row of the `instructions` config holds `messages` (chat turns with `<graph>` placeholders, an
optional final assistant turn), `answer` and `subject_ids` (one per placeholder). The collator renders
the user turns with the processor's chat template, appends the answer and the end-of-turn marker
(exactly what zero-shot scoring measures), looks the FCNs up by subject id, and masks every prompt
token with -100.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch


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
    """

    def __init__(
        self,
        processor,
        graph_lookup: Mapping[str, Any] | Callable[[str], Any],
        max_length: int = 1024,
        attribute_targets: Mapping[str, np.ndarray] | None = None,
        num_attribute_targets: int = 0,
        routing_keys: Sequence[str] | None = None,
    ):
        self.processor = processor
        self.lookup = graph_lookup if callable(graph_lookup) else graph_lookup.__getitem__
        self.max_length = max_length
        self.attribute_targets = attribute_targets
        self.num_attribute_targets = num_attribute_targets
        self.routing_index = None if routing_keys is None else {key: i for i, key in enumerate(routing_keys)}
        self.end_of_turn = processor.end_of_turn
        tokenizer = processor.tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def encode(self, row: Mapping[str, Any]) -> tuple[list[int], list[int], list]:
        """Token ids, labels (-100 on the prompt) and the row's FCNs."""
        processor, tokenizer = self.processor, self.processor.tokenizer
        prompt = processor.apply_chat_template(processor.prompt_messages(row["messages"]), add_generation_prompt=True)
        subject_ids = list(row["subject_ids"])
        if prompt.count(processor.graph_token) != len(subject_ids):
            raise ValueError(
                f"Instruction {row.get('id', '?')}: {prompt.count(processor.graph_token)} {processor.graph_token} "
                f"placeholder(s) but {len(subject_ids)} subject id(s)."
            )
        fcns = [self.lookup(sid) for sid in subject_ids]
        prompt_ids = tokenizer(processor.expand_graphs(prompt))["input_ids"]
        full_ids = prompt_ids + processor.answer_ids(prompt, str(row["answer"]) + self.end_of_turn)
        if len(full_ids) > self.max_length:
            raise ValueError(
                f"Instruction {row.get('id', '?')} is {len(full_ids)} tokens long, over max_length={self.max_length}."
            )
        labels = [-100] * len(prompt_ids) + full_ids[len(prompt_ids):]
        return full_ids, labels, fcns

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        encoded = [self.encode(row) for row in rows]
        length = max(len(ids) for ids, _, _ in encoded)
        input_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), length), -100, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, (ids, lab, _) in enumerate(encoded):  # right padding, as training wants
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, : len(lab)] = torch.tensor(lab)
            attention_mask[i, : len(ids)] = 1
        fcns = [fcn for _, _, row_fcns in encoded for fcn in row_fcns]
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if fcns:
            batch["graph_values"] = torch.from_numpy(np.stack(self.processor.prepare_fcns(fcns)))
        if self.attribute_targets is not None and fcns:
            subject_ids = [sid for row in rows for sid in row["subject_ids"]]
            nan = np.full(self.num_attribute_targets, np.nan, dtype=np.float32)
            targets = [self.attribute_targets.get(sid, nan) for sid in subject_ids]
            batch["graph_attribute_labels"] = torch.from_numpy(np.stack(targets).astype(np.float32))
        if self.routing_index is not None and fcns:
            batch["routing_labels"] = torch.tensor([self.routing_index.get(row.get("attribute"), -100) for row in rows])
        return batch
