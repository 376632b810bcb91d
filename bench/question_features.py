"""Which representation of a question linear maps read held-out wording from: the bag of word embeddings or the
frozen LLM's hidden states.

    python -m bench.question_features --model OUT/stage1 --data OUT/data [--layers 15,30] [--rows 1500]

For `--rows` questions of `train` (training forms) and of `validation` (held-out frames and terms), each
representation of the prompt: `bag` (the router's features, `FCNLLMModel.routing_features`), `mean<k>` (the
language model's hidden states after layer k, layer-normed, averaged over the instruction's tokens), `last<k>` (the
same at the prompt's last token) and `bag+mean<k>` (both, the bag scaled to the same norm). Logistic regressions
fitted on the training forms read the asked attribute, the paradigm and the turn (judgments and comparisons asked
the other way round); their accuracy on the training and the held-out forms is reported per representation.
Reads prompts only: no FCN is encoded.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from bench.question_reading import prompt_batch, sample_rows
from datasets_scripts.loading import load_instruction_set
from fcn_llm.evaluation.model_io import load_model_and_processor
from fcn_llm.training.router_fitting import question_sign

TURNABLE = ("judgment", "comparative")


@torch.no_grad()
def question_representations(model, processor, rows: Sequence[dict], layers: Sequence[int],
                             batch_size: int = 32) -> dict[str, np.ndarray]:
    """Each representation of each row's prompt (see the module docstring): name -> `(S, D)` (`(S, 2D)` for
    `bag+mean<k>`)."""
    depth = model.config.text_config.num_hidden_layers
    bad = [k for k in layers if not 0 <= k <= depth]
    if bad:
        raise ValueError(f"Layers {bad} are outside the language model's 0..{depth}.")
    out: dict[str, list[torch.Tensor]] = {"bag": []}
    for start in range(0, len(rows), batch_size):
        input_ids, attention_mask = prompt_batch(processor, rows[start : start + batch_size])
        bag = model.model.routing_features(input_ids, attention_mask).float()
        out["bag"].append(bag)
        instruction = model.model.instruction_tokens(input_ids == processor.graph_token_id, attention_mask, None)
        weights = instruction[..., None].float() / instruction.sum(1).clamp(min=1)[:, None, None]
        states = model.model.language_model(input_ids=input_ids, attention_mask=attention_mask,
                                            output_hidden_states=True).hidden_states
        last = attention_mask.sum(1) - 1
        for k in layers:
            normed = F.layer_norm(states[k].float(), states[k].shape[-1:])
            mean = (normed * weights).sum(1)
            out.setdefault(f"mean{k}", []).append(mean)
            out.setdefault(f"last{k}", []).append(normed[torch.arange(len(last)), last])
            scaled = bag * (mean.norm(dim=-1, keepdim=True) / bag.norm(dim=-1, keepdim=True).clamp(min=1e-6))
            out.setdefault(f"bag+mean{k}", []).append(torch.cat([scaled, mean], -1))
    return {name: torch.cat(parts).numpy() for name, parts in out.items()}


def map_accuracy(train_features: np.ndarray, train_labels: Sequence, held_features: np.ndarray,
                 held_labels: Sequence, c: float = 1.0) -> dict[str, float]:
    """A logistic regression (inverse regularisation `c`) fitted on the training forms: its accuracy there and on
    the held-out forms."""
    if len(set(train_labels)) < 2:
        raise ValueError("map_accuracy needs training rows of at least two labels.")
    fitted = LogisticRegression(C=c, max_iter=2000).fit(train_features, list(train_labels))
    return {"training_forms": float(fitted.score(train_features, list(train_labels))),
            "held_out_forms": float(fitted.score(held_features, list(held_labels)))}


def compare_representations(model, processor, train_rows: Sequence[dict], held_rows: Sequence[dict],
                            layers: Sequence[int], c: float = 1.0) -> dict[str, dict[str, dict[str, float]]]:
    """Per representation, `map_accuracy` of the attribute, paradigm and turn maps (the turn on judgments and
    comparisons only)."""
    train = question_representations(model, processor, train_rows, layers)
    held = question_representations(model, processor, held_rows, layers)
    turnable_train = np.array([row["paradigm"] in TURNABLE for row in train_rows])
    turnable_held = np.array([row["paradigm"] in TURNABLE for row in held_rows])
    report = {}
    for name in train:
        report[name] = {
            target: map_accuracy(train[name], [row[target] for row in train_rows], held[name],
                                 [row[target] for row in held_rows], c)
            for target in ("attribute", "paradigm")
        }
        report[name]["turn"] = map_accuracy(
            train[name][turnable_train], [question_sign(r) for r, t in zip(train_rows, turnable_train) if t],
            held[name][turnable_held], [question_sign(r) for r, t in zip(held_rows, turnable_held) if t], c)
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="an FCN-LLM folder (stage 1: the language model as pretrained)")
    parser.add_argument("--data", required=True, help="instruction-set folder (its instructions config)")
    parser.add_argument("--layers", default="15,30", help="comma-separated language-model layers")
    parser.add_argument("--rows", type=int, default=1500, help="rows sampled per split")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model, processor = load_model_and_processor(args.model)
    _, instructions = load_instruction_set(args.data)
    train, held = (sample_rows(instructions, split, args.rows, args.seed) for split in ("train", "validation"))
    report = compare_representations(model, processor, train, held, [int(k) for k in args.layers.split(",")])
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
