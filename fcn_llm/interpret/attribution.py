"""Edge attributions of an FCN-LLM answer: gradient x input and integrated gradients w.r.t. the FCN.

For a question with allowed answers c_1..c_C and a target answer t, the explained function is the
answer margin

    f(X) = ll_t(X) - logsumexp_{c != t} ll_c(X),   ll_c = sum of log P(tokens of "c<|im_end|>" | prompt, X)

(``answer="first"`` keeps only each answer's first token: one sequence instead of C, the cheap variant).
X `(G, N, N)` are the question's FCNs *as the model sees them* (after the processor's per-subject
normalisation); a reference X' (the cohort's mean normalised FCN: "an average subject") anchors
the attribution:

- gradient x input: A = (X - X') * grad f(X);
- integrated gradients: A = (X - X') * mean_k grad f(X' + a_k (X - X')), a_k = (k + 1/2) / m
  (midpoint rule; sum of A over the matrix ~= f(X) - f(X'), reported as `completeness_gap`).

The encoder keeps each FCN row's top-k |r| and zeroes the diagonal; gradients reach the kept edges
(adjacency) and every edge through the ROI profiles (node features). The edge map is symmetrised,
S_ij = A_ij + A_ji (an edge appears twice in the matrix), diagonal 0, so the upper triangle of S
sums to the total attribution. Summaries: ROI `(N,)` = half the row sums of S (they add up to the
total), network pairs `(K, K)` = mean of S over each block's distinct edges, and the encoder's own
ROI attention `(N,)` (mean over its R learned queries) at X. A zero reference is a poor choice: the
encoder's input LayerNorm makes node features invariant to scaling X, so the path a * X mostly
changes the adjacency weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


from .questions import AttributionQuestion

METHODS = ("grad_x_input", "integrated_gradients")
ANSWER_MODES = ("full", "first")


class AtlasMismatchError(ValueError):
    """An FCN whose ROI count differs from the model's encoder."""


@dataclass
class GraphAttribution:
    """The attribution of one answer margin to one FCN (one graph of the question).

    Attributes:
        edges: `(N, N)` symmetric signed edge attribution S (diagonal 0).
        roi: `(N,)` signed ROI attribution (half the row sums of S).
        roi_abs: `(N,)` half the row sums of |S|.
        network: `(K, K)` mean of S over each network pair's distinct edges.
        network_abs: `(K, K)` mean of |S| over each network pair's distinct edges.
        roi_attention: `(N,)` encoder attention over ROIs (mean over its ROI-token queries); None if off.
        margin: f(X), the answer margin at the subject's FCN(s).
        reference_margin: f(X') (None for gradient x input, which does not evaluate it).
        graph_index: which `<graph>` of the question (0 or 1 for comparative questions).
        subject_id: the subject, if known.
    """

    edges: np.ndarray
    roi: np.ndarray
    roi_abs: np.ndarray
    network: np.ndarray
    network_abs: np.ndarray
    roi_attention: np.ndarray | None
    margin: float
    reference_margin: float | None
    graph_index: int = 0
    subject_id: str | None = None

    @property
    def total(self) -> float:
        """Sum of the attribution over distinct edges (upper triangle of S)."""
        return float(np.triu(self.edges, 1).sum())


def _block_sums(edge_map: np.ndarray, assignment: Sequence[int], num_networks: int | None) -> tuple[np.ndarray, np.ndarray]:
    """`(..., K, K)` sums of symmetric maps `(..., N, N)` over each block's ordered ROI pairs i != j, and
    their counts `(K, K)`."""
    assignment = np.asarray(assignment, dtype=int)
    k = int(num_networks or assignment.max() + 1)
    one_hot = np.eye(k)[assignment]  # (N, K)
    off = edge_map * (1.0 - np.eye(len(assignment)))
    sizes = one_hot.sum(0)
    return one_hot.T @ off @ one_hot, np.outer(sizes, sizes) - np.diag(sizes)


def network_block_mean(edge_map: np.ndarray, assignment: Sequence[int], num_networks: int | None = None) -> np.ndarray:
    """`(..., K, K)` mean of symmetric maps `(..., N, N)` over each network pair's distinct edges (no diagonal).

    Within-network blocks average the edges i < j of that network; a block with no edge (a one-ROI
    network) is 0.
    """
    sums, counts = _block_sums(edge_map, assignment, num_networks)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


def network_block_total(edge_map: np.ndarray, assignment: Sequence[int], num_networks: int | None = None) -> np.ndarray:
    """`(..., K, K)` sum of symmetric maps `(..., N, N)` over each network pair's distinct edges (each edge once).

    For an attribution map this is the block's share of the answer (attributions add up): a model
    that reads a block's mean edge gives each of its edges 1/(edges in the block) of that share, so
    per-edge means favour small networks and block totals do not.
    """
    sums, _ = _block_sums(edge_map, assignment, num_networks)
    return sums * (1.0 - 0.5 * np.eye(sums.shape[-1]))  # within-network edges were counted in both directions


def summarise(edges: np.ndarray, assignment: Sequence[int] | None) -> dict[str, np.ndarray]:
    """ROI and network-pair summaries of a symmetric edge map `(N, N)`."""
    n = edges.shape[0]
    assignment = np.zeros(n, dtype=int) if assignment is None else np.asarray(assignment, dtype=int)
    return {
        "roi": 0.5 * edges.sum(1),
        "roi_abs": 0.5 * np.abs(edges).sum(1),
        "network": network_block_mean(edges, assignment),
        "network_abs": network_block_mean(np.abs(edges), assignment),
    }


def check_fcn_sizes(fcns: Sequence[np.ndarray], num_rois: int, subject_ids: Sequence[str] | None = None) -> None:
    """AtlasMismatchError naming both sizes when an FCN is not `(num_rois, num_rois)`."""
    for i, fcn in enumerate(fcns):
        shape = tuple(np.shape(fcn))
        if len(shape) != 2 or shape[0] != shape[1]:
            raise AtlasMismatchError(f"FCN {i} has shape {shape}; expected a square (N, N) matrix.")
        if shape[0] != num_rois:
            who = f"subject {subject_ids[i]!r}" if subject_ids is not None and i < len(subject_ids) else f"FCN {i}"
            raise AtlasMismatchError(
                f"{who} has an FCN of N={shape[0]} ROIs but the model's encoder expects N={num_rois} ROIs: the subject "
                f"was parcellated with another atlas than the model was trained on; use FCNs of the model's atlas."
            )


class AnswerMargin:
    """f(X) of one question for batches of FCN sets, differentiable w.r.t. the FCNs.

    Token ids are built once: the prompt with every `<graph>` expanded to G tokens, and each choice's
    continuation tokenized jointly with the prompt (as training and scoring do). Each call runs the model's
    own forward (`model(input_ids=..., graph_values=...)`), so gradients reach the FCNs through its encoder.
    """

    def __init__(self, model, processor, question: AttributionQuestion, answer: str = "full"):
        if answer not in ANSWER_MODES:
            raise ValueError(f"Unknown answer mode {answer!r}; choose one of {ANSWER_MODES}.")
        self.model, self.processor, self.question, self.answer = model, processor, question, answer
        prompt = processor.apply_chat_template(list(question.messages), add_generation_prompt=True, tokenize=False)
        suffix = processor.end_of_turn
        self.prompt_ids = list(processor.tokenizer(processor.expand_graphs(prompt))["input_ids"])
        self.continuations = [processor.answer_ids(prompt, c + suffix) for c in question.choices]
        if any(not ids for ids in self.continuations):
            raise ValueError(f"An answer tokenizes to no tokens: {list(question.choices)}.")
        if answer == "first" and len({ids[0] for ids in self.continuations}) < len(self.continuations):
            raise ValueError(f"Answers {list(question.choices)} share their first token: use answer='full'.")
        found = self.prompt_ids.count(model.config.graph_token_id)
        expected = question.num_graphs * model.config.graph_seq_length
        if found != expected:
            raise ValueError(f"The prompt holds {found} graph tokens but {question.num_graphs} graph(s) need {expected}.")

    def __call__(self, graphs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Margins `(B,)` for `graphs` `(B, G, N, N)`, and the encoder's ROI attention `(B, G, R, N)` (or None)."""
        model = self.model
        device = graphs.device
        batch, num_graphs = graphs.shape[:2]
        n = graphs.shape[-1]
        if self.answer == "first":
            seqs = [self.prompt_ids]
        else:
            seqs = [self.prompt_ids + ids[:-1] for ids in self.continuations]  # last token only scored
        width = max(len(s) for s in seqs)
        pad = self.processor.tokenizer.pad_token_id or 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s, device=device)
            mask[r, : len(s)] = 1
        per_seq = len(seqs)
        # Sequence (b, s) reads graphs[b]: graphs flattened in order of appearance, as the model expects.
        flat_graphs = graphs.unsqueeze(1).expand(batch, per_seq, num_graphs, n, n).reshape(-1, n, n)
        input_ids = ids.repeat(batch, 1)
        # the question's evidence is read from the prompt only, never the answer tokens
        prompt_only = (torch.arange(width, device=device)[None] < len(self.prompt_ids)).expand_as(input_ids)
        start = len(self.prompt_ids) - 1  # logits at `start` score the first answer token
        out = model(input_ids=input_ids, attention_mask=mask.repeat(batch, 1), graph_values=flat_graphs,
                    instruction_mask=prompt_only, logits_to_keep=width - start)
        logp = torch.log_softmax(out.logits.float(), -1).view(batch, per_seq, width - start, -1)
        lls = []
        for c, cont in enumerate(self.continuations):
            if self.answer == "first":
                lls.append(logp[:, 0, 0, cont[0]])
            else:
                steps = torch.arange(len(cont), device=device)
                lls.append(logp[:, c, steps, torch.tensor(cont, device=device)].sum(-1))
        ll = torch.stack(lls, -1)  # (B, C)
        t = self.question.target
        others = torch.cat([ll[:, :t], ll[:, t + 1:]], -1)
        margin = ll[:, t] - torch.logsumexp(others, -1)
        with torch.no_grad():  # the encoder's own ROI attention, read off the FCNs alone
            roi_attention = model.model.get_graph_features(graphs.reshape(-1, n, n))[1].roi_attention
        attention = None if roi_attention is None else roi_attention.view(batch, num_graphs, *roi_attention.shape[1:])
        return margin, attention


def model_inputs(processor, fcns: Sequence[np.ndarray]) -> np.ndarray:
    """The FCNs as the model sees them `(S, N, N)` float32: the processor's per-subject normalisation, diagonal 0."""
    prepared = np.stack(processor.prepare_fcns(list(fcns))).astype(np.float32)
    prepared[:, np.arange(prepared.shape[-1]), np.arange(prepared.shape[-1])] = 0.0
    return prepared


def reference_fcn(processor, fcns: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of the normalised FCNs `(N, N)` (diagonal 0): the reference "average subject"."""
    return model_inputs(processor, fcns).mean(0)


def attribute_question(
    model,
    processor,
    question: AttributionQuestion,
    fcns: Sequence[np.ndarray],
    *,
    reference: np.ndarray | None = None,
    method: str = "grad_x_input",
    steps: int = 16,
    answer: str = "full",
    batch_size: int = 8,
    subject_ids: Sequence[str] | None = None,
    margin_fn: AnswerMargin | None = None,
) -> list[GraphAttribution]:
    """Attribute one question's answer margin to its FCN(s): one `GraphAttribution` per graph.

    Args:
        fcns: the question's FCNs `(N, N)` (raw; normalised here as the processor does), one per `<graph>`.
        reference: X' `(N, N)` in normalised units (`reference_fcn` of a cohort); None: zeros (see the
            module docstring for why a cohort mean is better).
        method: ``"grad_x_input"`` or ``"integrated_gradients"``.
        steps: integration steps m (integrated gradients).
        answer: ``"full"`` (score "answer<|im_end|>", as evaluation does) or ``"first"`` (first token).
        batch_size: path points per forward/backward pass.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown attribution method {method!r}; choose one of {METHODS}.")
    fcns = list(fcns)
    if len(fcns) != question.num_graphs:
        raise ValueError(f"The {question.paradigm} question takes {question.num_graphs} FCN(s), got {len(fcns)}.")
    num_rois = model.config.encoder_config.num_rois
    check_fcn_sizes(fcns, num_rois, subject_ids)
    margin_fn = margin_fn or AnswerMargin(model, processor, question, answer)
    device = next(model.parameters()).device
    dtype = torch.float32
    x = torch.as_tensor(model_inputs(processor, fcns), dtype=dtype, device=device)  # (G, N, N)
    eye = torch.eye(num_rois, dtype=torch.bool, device=device)
    ref = torch.zeros_like(x) if reference is None else torch.as_tensor(np.asarray(reference), dtype=dtype,
                                                                      device=device).expand_as(x).clone()
    if ref.shape != x.shape:
        raise AtlasMismatchError(f"The reference has shape {tuple(ref.shape[-2:])} but the FCNs are {tuple(x.shape[-2:])}.")
    ref = ref.masked_fill(eye, 0.0)
    delta = x - ref

    requires = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval()
    model.requires_grad_(False)  # gradients w.r.t. the FCNs only
    try:
        with torch.no_grad():
            margin_x, attention = margin_fn(x.unsqueeze(0))
        if method == "grad_x_input":
            alphas = torch.ones(1, device=device)
        else:
            alphas = (torch.arange(steps, device=device, dtype=dtype) + 0.5) / steps
        grad_sum = torch.zeros_like(x)
        for start in range(0, len(alphas), batch_size):
            a = alphas[start:start + batch_size].view(-1, 1, 1, 1)
            path = (ref.unsqueeze(0) + a * delta.unsqueeze(0)).detach().requires_grad_(True)
            margins, _ = margin_fn(path)
            (grad,) = torch.autograd.grad(margins.sum(), path)
            grad_sum += grad.sum(0)
        attribution = (delta * grad_sum / len(alphas)).detach()
        reference_margin = None
        if method == "integrated_gradients":
            with torch.no_grad():
                reference_margin = float(margin_fn(ref.unsqueeze(0))[0][0])
    finally:
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
        model.train(was_training)

    assignment = model.config.encoder_config.network_assignment
    results = []
    for g in range(question.num_graphs):
        a = attribution[g].double().cpu().numpy()
        edges = a + a.T
        np.fill_diagonal(edges, 0.0)
        att = None if attention is None else attention[0, g].float().mean(0).cpu().numpy()
        results.append(GraphAttribution(
            edges=edges, **summarise(edges, assignment), roi_attention=att, margin=float(margin_x[0]),
            reference_margin=reference_margin, graph_index=g,
            subject_id=None if subject_ids is None else str(subject_ids[g]),
        ))
    return results


def completeness_gap(attributions: Sequence[GraphAttribution]) -> float | None:
    """f(X) - f(X') minus the total attribution of a question's graphs (integrated gradients only)."""
    first = attributions[0]
    if first.reference_margin is None:
        return None
    return float(first.margin - first.reference_margin - sum(a.total for a in attributions))


__all__ = [
    "AnswerMargin", "AtlasMismatchError", "GraphAttribution", "METHODS", "attribute_question", "check_fcn_sizes",
    "completeness_gap", "model_inputs", "network_block_mean", "network_block_total", "reference_fcn", "summarise",
]
