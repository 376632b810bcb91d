"""How the evidence token reads questions, in the wording it was trained on and in held-out wording.

    python -m bench.question_reading --model outputs/demo/model --data outputs/demo/data [--rows 1500]

For a sample of the `train` split (training forms) and of `validation` (held-out frames and terms): the
router's accuracy (the asked attribute's head gets the largest weight) overall and per attribute, the
paradigm classifier's accuracy, the turn classifier's (negated and reversed judgments and comparisons; also per
question frame, where held-out negations show up), and, for continuous judgments, how far the threshold the
evidence subtracts is from the one the question names (in the evidence's standard units). Needs a model whose
evidence token reads the attribute heads. Reads prompts only: no FCN is encoded.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from datasets_scripts.loading import load_instruction_set
from fcn_llm.evaluation.model_io import load_model_and_processor
from fcn_llm.training.readout_fitting import named_threshold, standardised_threshold
from fcn_llm.training.router_fitting import question_sign


def sample_rows(instructions, split: str, rows: int, seed: int) -> list[dict]:
    """Up to `rows` instruction rows of `split` (a `load_instruction_set` instructions `DatasetDict`), sampled."""
    frame = instructions[split].to_pandas()
    return frame.sample(min(rows, len(frame)), random_state=seed).to_dict("records")


def prompt_batch(processor, rows: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows' prompts (chat template, assistant prefix, `<graph>` expanded), right-padded: `input_ids` and
    `attention_mask` `(B, L)`."""
    tokenizer = processor.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = []
    for row in rows:
        prompt = processor.apply_chat_template(processor.prompt_messages(row["messages"]), add_generation_prompt=True)
        ids.append(tokenizer(processor.expand_graphs(prompt))["input_ids"])
    input_ids = torch.full((len(ids), max(map(len, ids))), pad)
    attention_mask = torch.zeros_like(input_ids)
    for i, row_ids in enumerate(ids):
        input_ids[i, : len(row_ids)] = torch.tensor(row_ids)
        attention_mask[i, : len(row_ids)] = 1
    return input_ids, attention_mask


@torch.no_grad()
def read_questions(model, processor, rows: Sequence[dict], batch_size: int = 64) -> dict[str, np.ndarray]:
    """The evidence token's reading of each row's prompt: `routing` `(S, heads)` softmax weights, `paradigm`
    `(S, P)`, `turned` `(S,)` P(asked the other way round), `signs` `(S, A)` and `thresholds` `(S, A)`."""
    conditioning = model.model.instruction_conditioning
    if conditioning is None or not conditioning.reads_attributes:
        raise ValueError("read_questions needs a model whose evidence token reads the attribute heads "
                         "(instruction_evidence='attributes').")
    out: dict[str, list] = {"routing": [], "paradigm": [], "turned": [], "signs": [], "thresholds": []}
    for start in range(0, len(rows), batch_size):
        input_ids, attention_mask = prompt_batch(processor, rows[start : start + batch_size])
        placeholders = input_ids == processor.graph_token_id
        instruction = model.model.instruction_tokens(placeholders, attention_mask, None)
        features = model.model.routing_features(input_ids, attention_mask)
        numbers = conditioning.question_numbers(input_ids, instruction, placeholders) if conditioning.numerals else None
        out["routing"].append(conditioning.route_features(features, instruction).softmax(-1).numpy())
        out["paradigm"].append(conditioning.paradigm_weights(features).numpy())
        out["turned"].append(torch.sigmoid(features.float() @ conditioning.turn_weight.float()
                                           + conditioning.turn_bias.float()).numpy())
        out["signs"].append(conditioning.signs(features).numpy())
        out["thresholds"].append(conditioning.threshold_features(features, numbers).numpy())
    return {key: np.concatenate(value) for key, value in out.items()}


def frame_of(row: dict) -> str:
    """"paradigm/frame" of an instruction row from its `template_id` ("adhd/judgment/ruled_out/term1/answer" ->
    "judgment/ruled_out"; "unknown" without one): frames are shared by the attributes of a family."""
    parts = str(row.get("template_id") or "").split("/")
    return "/".join(parts[1:3]) if len(parts) >= 3 else "unknown"


def reading_accuracy(model, processor, rows: Sequence[dict]) -> dict:
    """Router, paradigm and turn accuracy and threshold error of the evidence token on `rows` (those about an
    attribute the model has a head for)."""
    if not model.config.auxiliary_heads or model.config.instruction_evidence != "attributes":
        raise ValueError("reading_accuracy needs a model whose evidence token reads the attribute heads "
                         "(instruction_evidence='attributes').")
    keys = [head["key"] for head in model.config.auxiliary_heads]
    rows = [row for row in rows if row.get("attribute") in keys]
    if not rows:
        raise ValueError(f"No instructions about the model's attributes ({', '.join(keys)}).")
    read = read_questions(model, processor, rows)
    asked = np.array([keys.index(row["attribute"]) for row in rows])
    offsets = np.cumsum([0] + [int(head["num_outputs"]) for head in model.config.auxiliary_heads])
    routed = read["routing"].argmax(1) == asked
    report = {"rows": len(rows), "routing_accuracy": float(routed.mean()),
              "routing_by_attribute": pd.Series(routed).groupby([row["attribute"] for row in rows]).mean().round(3).to_dict()}
    paradigms = model.model.instruction_conditioning.paradigms
    if len(paradigms) > 1:
        known = [i for i, row in enumerate(rows) if row.get("paradigm") in paradigms]
        truth = np.array([paradigms.index(rows[i]["paradigm"]) for i in known])
        report["paradigm_accuracy"] = float((read["paradigm"][known].argmax(1) == truth).mean())
    judged = [i for i, row in enumerate(rows) if row.get("paradigm") == "judgment"]
    asked_round = [i for i, row in enumerate(rows) if row.get("paradigm") in ("judgment", "comparative")]
    if asked_round:
        truth = np.array([question_sign(rows[i]) == -1 for i in asked_round])
        right = (read["turned"][asked_round] > 0.5) == truth
        report["turn_accuracy"] = float(right.mean())
        report["turn_accuracy_turned_questions"] = float(right[truth].mean()) if truth.any() else None
        frames = [frame_of(rows[i]) for i in asked_round]  # which frames a linear reader of words misreads
        report["turn_accuracy_by_frame"] = pd.Series(right).groupby(frames).mean().round(3).to_dict()
    errors = [abs(float(read["thresholds"][i, offsets[asked[i]]]) - standardised_threshold(model, asked[i], named))
              for i in judged if model.config.auxiliary_heads[asked[i]]["kind"] == "continuous"
              and (named := named_threshold(rows[i])) is not None]
    report["threshold_error_median"] = float(np.median(errors)) if errors else None
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="instruction-set folder (its instructions config, splits train and validation)")
    parser.add_argument("--rows", type=int, default=1500, help="rows sampled per split")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model, processor = load_model_and_processor(args.model)
    _, instructions = load_instruction_set(args.data)
    report = {wording: reading_accuracy(model, processor, sample_rows(instructions, split, args.rows, args.seed))
              for split, wording in (("train", "training_forms"), ("validation", "held_out_forms"))}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
