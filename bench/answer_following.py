"""Whether judgments follow the asked attribute head, the way each question asks, in every question frame.

    python -m bench.answer_following --model outputs/demo/model --data outputs/demo/data [--split validation]

For judgments about binary attributes (conditions) in one split (`validation`, held-out frames and terms, by
default; `train` for the training forms): each answer's Yes - No log-likelihood margin next to the asked head's
output for the subject, standardised as the evidence reads it. Per attribute, the slope of the margin on the head's
output in plain questions ("Does this subject have ADHD?": positive when the answer follows the head) and in negated
ones ("Can ADHD be ruled out?": negative), and the answers' AUC for the condition next to the head's own. An
attribute whose plain slope is negative is answered against its head (an inverted readout, a misread question).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from datasets_scripts.graph_lookup import GraphLookup
from datasets_scripts.loading import load_instruction_set
from fcn_llm.evaluation.model_io import load_model_and_processor
from fcn_llm.scoring import choice_log_likelihoods

YES, NO = "Yes", "No"


@torch.no_grad()
def standardised_head_outputs(model, processor, fcns: Sequence[np.ndarray]) -> np.ndarray:
    """The attribute heads' outputs as the evidence reads them (`InstructionConditioning.standardise`): FCNs
    `(N, N)` each, as stored -> `(S, A)`."""
    prepared = torch.from_numpy(np.stack(processor.prepare_fcns(list(fcns))))
    encoded = model.graph_encoder(prepared.to(model.dtype))
    return model.model.instruction_conditioning.standardise(model.graph_attribute_heads(encoded)).numpy()


def _slope(x: np.ndarray, y: np.ndarray) -> float | None:
    return float(np.polyfit(x, y, 1)[0]) if len(x) >= 3 and np.ptp(x) > 0 else None


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    return float(roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else None


def answer_following(model, processor, rows: Sequence[dict], fcns_of: Callable[[Sequence[str]], np.ndarray],
                     batch_size: int = 8) -> dict:
    """Per binary attribute asked about in `rows` (judgments with one subject; others are skipped): `n`,
    `plain_slope` and `negated_slope` (the Yes - No margin on the head's standardised output), `answer_auc` and
    `head_auc` for the condition; `inverted`: the attributes whose plain slope is negative.

    Args:
        fcns_of: subject ids -> their FCNs `(S, N, N)` as stored (the processor prepares them), in order.
    """
    conditioning = model.model.instruction_conditioning
    if conditioning is None or not conditioning.reads_attributes:
        raise ValueError("answer_following needs a model whose evidence token reads the attribute heads "
                         "(instruction_evidence='attributes').")
    heads = model.config.auxiliary_heads
    binary = {head["key"]: sum(h["num_outputs"] for h in heads[:j]) for j, head in enumerate(heads)
              if head["kind"] == "binary"}
    rows = [row for row in rows if row.get("paradigm") == "judgment" and row.get("attribute") in binary
            and len(row["subject_ids"]) == 1]
    if not rows:
        raise ValueError(f"No judgments with one subject about the model's binary attributes ({', '.join(binary)}).")
    subjects = sorted({row["subject_ids"][0] for row in rows})
    stored = dict(zip(subjects, fcns_of(subjects)))
    outputs = dict(zip(subjects, standardised_head_outputs(model, processor, list(stored.values()))))
    prompts = [processor.apply_chat_template(processor.prompt_messages(row["messages"]), add_generation_prompt=True,
                                             tokenize=False) for row in rows]
    fcns = [[stored[row["subject_ids"][0]]] for row in rows]
    likelihoods = choice_log_likelihoods(model, processor, prompts, fcns, [YES, NO], batch_size=batch_size)
    margin = likelihoods[:, 0] - likelihoods[:, 1]
    head_output = np.array([outputs[row["subject_ids"][0]][binary[row["attribute"]]] for row in rows])
    negated = np.array([bool(row.get("negated")) for row in rows])
    condition = np.array([(row["answer"] == YES) != bool(row.get("negated")) for row in rows])
    attributes = np.array([row["attribute"] for row in rows])
    report: dict = {"rows": len(rows), "attributes": {}}
    for key in sorted(set(attributes)):
        mine = attributes == key
        plain, turned = mine & ~negated, mine & negated
        report["attributes"][key] = {
            "n": int(mine.sum()),
            "plain_slope": _slope(head_output[plain], margin[plain]),
            "negated_slope": _slope(head_output[turned], margin[turned]),
            "answer_auc": _auc(condition[mine], np.where(negated, -margin, margin)[mine]),
            "head_auc": _auc(condition[mine], head_output[mine]),
        }
    report["inverted"] = [key for key, row in report["attributes"].items()
                          if row["plain_slope"] is not None and row["plain_slope"] < 0]
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="instruction-set folder (configs subjects and instructions)")
    parser.add_argument("--split", default="validation", choices=["train", "validation"])
    parser.add_argument("--rows", type=int, default=1500, help="judgments sampled from the split")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model, processor = load_model_and_processor(args.model)
    subjects, instructions = load_instruction_set(args.data)
    lookup = GraphLookup.from_dataset(subjects)
    frame = instructions[args.split].to_pandas()
    frame = frame[frame["paradigm"] == "judgment"]
    frame = frame.sample(min(args.rows, len(frame)), random_state=args.seed)
    report = answer_following(model, processor, frame.to_dict("records"), lambda ids: lookup.stack(ids).numpy())
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
