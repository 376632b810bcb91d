"""Does the model's answer follow its evidence? Judgment margins vs the attribute heads, zero-shot.

    python -m bench.readout --model outputs/demo/model --data outputs/demo/data \
        [--attributes autism,adhd,depression,anxiety] [--subjects 40]

For the zero-shot judgment questions ("Does this subject have ...?") about each attribute: the AUC
of the answer margin log P(Yes) - log P(No) and of the asked attribute head's output (`asked_score`:
relative to the threshold a continuous judgment names; the asked class's output), their Spearman
correlation, and, over all questions, how much of the margin the evidence token carries (the
correlation of the margins with and without it, `out` zeroed). Needs a model whose evidence token
reads the attribute heads (`instruction_evidence="attributes"`).
"""

from __future__ import annotations

import argparse
import copy
import json

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from bench.learning_curve import judgment_questions
from fcn_llm.evaluation.data import load_evaluation_data
from fcn_llm.questions import NO, YES
from fcn_llm.scoring import choice_log_likelihoods
from modeling_fcnllm import FCNLLMForCausalLM
from processing import FCNProcessor


def asked_score(question, outputs: np.ndarray, spec: dict, offset: int) -> float:
    """What the asked head says about a judgment's subject, from its outputs `(A,)`: a binary head's logit, a
    continuous head's prediction minus the question's threshold (both in the head's standardised units), a
    categorical head's output for the class asked; turned for questions asked the other way round (negated:
    "Can ADHD be ruled out?", reversed: "younger than"), so it scores the question's "Yes"."""
    way = (-1.0 if question.negated else 1.0) * (-1.0 if question.direction == -1 else 1.0)
    if spec["kind"] == "continuous" and question.threshold is not None:
        standard = (question.threshold - float(spec.get("mean", 0.0))) / float(spec.get("std", 1.0))
        return way * float(outputs[offset] - standard)
    if spec["kind"] == "categorical" and question.class_index is not None:
        return way * float(outputs[offset + question.class_index])
    return way * float(outputs[offset])


def _margins(model, processor, prompts, fcns) -> np.ndarray:
    ll = choice_log_likelihoods(model, processor, prompts, fcns, [YES, NO], batch_size=16)
    return ll[:, 0] - ll[:, 1]


@torch.no_grad()
def readout_diagnostic(model: FCNLLMForCausalLM, processor: FCNProcessor, data, attributes: list[str],
                       subjects: int = 40, seed: int = 0) -> dict:
    """Per attribute: `auc_answer`, `auc_head`, `spearman` (margin vs head output), `margin_sd`, `n`; and
    `margin_corr_without_evidence` over all questions."""
    if model.config.instruction_evidence != "attributes" or model.graph_attribute_heads is None:
        raise ValueError("The readout diagnostic needs a model whose evidence token reads the attribute heads "
                         "(instruction_evidence='attributes').")
    heads = model.graph_attribute_heads
    offsets = dict(zip(heads.heads.keys(), np.cumsum([0] + [int(s["num_outputs"]) for s in heads.specs])))
    unknown = [a for a in attributes if a not in offsets]
    if unknown:
        raise ValueError(f"No attribute head for {unknown}; the model's heads: {list(offsets)}.")
    model.eval()
    questions = judgment_questions(data, attributes, subjects, seed)
    prompts = [processor.apply_chat_template(q.messages, add_generation_prompt=True, tokenize=False) for q in questions]
    fcns = [[data.fcns[i] for i in data.rows(q.subject_ids)] for q in questions]
    margin = _margins(model, processor, prompts, fcns)
    graphs = torch.from_numpy(np.stack(processor.prepare_fcns([f[0] for f in fcns])))
    outputs = model.model.get_attribute_outputs(model.model.get_graph_features(graphs)[1]).float().numpy()
    silent = copy.deepcopy(model)
    torch.nn.init.zeros_(silent.model.instruction_conditioning.out.weight)
    torch.nn.init.zeros_(silent.model.instruction_conditioning.out.bias)
    without = _margins(silent, processor, prompts, fcns)
    report: dict = {"attributes": {}, "margin_corr_without_evidence": float(np.corrcoef(margin, without)[0, 1])}
    for key in attributes:
        idx = [i for i, q in enumerate(questions) if q.group[0] == key]
        y = np.array([questions[i].reference for i in idx], dtype=float)
        spec = heads.specs[list(offsets).index(key)]
        head = np.array([asked_score(questions[i], outputs[i], spec, offsets[key]) for i in idx])
        if not 0 < y.sum() < len(y):
            continue
        report["attributes"][key] = {
            "n": len(idx), "auc_answer": float(roc_auc_score(y, margin[idx])), "auc_head": float(roc_auc_score(y, head)),
            "spearman": float(spearmanr(margin[idx], head)[0]), "margin_sd": float(margin[idx].std()),
        }
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="outputs/demo/model")
    parser.add_argument("--data", default="outputs/demo/data")
    parser.add_argument("--attributes", default="autism,adhd,depression,anxiety")
    parser.add_argument("--subjects", type=int, default=40, help="zero-shot questions per attribute")
    args = parser.parse_args(argv)
    model = FCNLLMForCausalLM.from_pretrained(args.model)
    processor = FCNProcessor.from_pretrained(args.model)
    report = readout_diagnostic(model, processor, load_evaluation_data(args.data),
                                [a.strip() for a in args.attributes.split(",")], args.subjects)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
