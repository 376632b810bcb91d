"""FCNProcessor: tokenizer + FCN preprocessing for FCN-LLM.

`processor(text=..., fcns=... | time_series=...)` returns a `BatchFeature` with
- `input_ids` / `attention_mask` `(B, L)`: each `<graph>` placeholder expanded to G graph tokens;
- `graph_values` `(num_graphs, N, N)` float32: the FCNs, in order of their placeholders across the batch
  (a comparative question holds two placeholders and takes two FCNs);
- `labels` `(B, L)` when `answers` are given: each answer and the end-of-turn marker follow their
  prompt and carry the labels, -100 on prompt tokens and padding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin

from .connectivity import compute_fcns, validate_fcn

NORMALIZATIONS = ("none", "zscore")

# ChatML without a default system prompt: a backbone's own default system prompt (SmolLM2 adds one)
# would be noise in every FCN question. Content is a string or a list of {"type": "text"|"graph"} parts.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'graph' %}{{ '<graph>' }}{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def normalize_fcn(fcn: np.ndarray, method: str) -> np.ndarray:
    """Label-free per-subject normalisation of FCNs `(..., N, N)`.

    ``"zscore"``: each FCN's off-diagonal edges to zero mean and unit SD, diagonal set to 0 (removes
    subject- and site-level global shifts such as global-signal differences). ``"none"``: unchanged.
    """
    if method == "none":
        return fcn
    if method != "zscore":
        raise ValueError(f"Unknown FCN normalization {method!r}; choose one of {NORMALIZATIONS}.")
    num_rois = fcn.shape[-1]
    off_diagonal = ~np.eye(num_rois, dtype=bool)
    edges = fcn[..., off_diagonal]  # (..., N * (N - 1))
    mean, std = edges.mean(-1), edges.std(-1)
    if np.any(std == 0):
        raise ValueError("Cannot z-score an FCN whose off-diagonal edges are all equal (zero variance).")
    out = (fcn - mean[..., None, None]) / std[..., None, None]
    out[..., ~off_diagonal] = 0.0
    return out.astype(np.float32)


def prepare_fcn_stack(fcns, normalization: str = "zscore", num_rois: int | None = None,
                      symmetry_atol: float = 1e-4) -> np.ndarray:
    """FCNs (a stack `(S, N, N)` or S matrices `(N, N)`) checked one by one with `validate_fcn` (errors name
    "FCN i"), then normalised each on its own (`normalize_fcn`): `(S, N, N)` float32 (`(0, 0, 0)` for none)."""
    prepared = [normalize_fcn(validate_fcn(fcn, num_rois, symmetry_atol, name=f"FCN {i}"), normalization)
                for i, fcn in enumerate(fcns)]
    return np.stack(prepared).astype(np.float32, copy=False) if prepared else np.zeros((0, 0, 0), dtype=np.float32)


def _as_list(items) -> list:
    """A single array `(N, N)`/`(T, N)`, a stack `(S, ., .)`, or (nested) lists of arrays -> flat list."""
    if items is None:
        return []
    if isinstance(items, (np.ndarray, torch.Tensor)):
        if items.ndim == 3:
            return list(items)
        return [items]
    flat = []
    for item in items:
        flat.extend(_as_list(item) if isinstance(item, (list, tuple)) else [item])
    return flat


class FCNProcessor(ProcessorMixin):
    r"""Processor of FCN-LLM: a tokenizer plus FCN validation, normalisation and `<graph>` expansion.

    Args:
        tokenizer: the LLM's tokenizer, with `graph_token` added as a special token.
        chat_template: Jinja chat template; default ChatML without a system prompt.
        graph_token: the placeholder string in prompts.
        num_graph_tokens: G, graph tokens per FCN (`model.config.graph_seq_length`).
        num_rois: N expected by the model (checked on every FCN); None to skip the check.
        connectivity_kind: measure used for `time_series` inputs (`"correlation"`, `"partial correlation"`, `"tangent"`).
        fisher_z: Fisher-z transform FCNs computed from `time_series`.
        normalization: label-free per-subject FCN normalisation, `"zscore"` or `"none"`.
        symmetry_atol: largest |A - A.T| accepted for an FCN.
    """

    def __init__(
        self,
        tokenizer=None,
        chat_template: str | None = None,
        graph_token: str = "<graph>",
        num_graph_tokens: int | None = None,
        num_rois: int | None = None,
        connectivity_kind: str = "correlation",
        fisher_z: bool = False,
        normalization: str = "zscore",
        symmetry_atol: float = 1e-4,
        **kwargs,
    ):
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"Unknown FCN normalization {normalization!r}; choose one of {NORMALIZATIONS}.")
        self.graph_token = graph_token
        self.num_graph_tokens = num_graph_tokens
        self.num_rois = num_rois
        self.connectivity_kind = connectivity_kind
        self.fisher_z = fisher_z
        self.normalization = normalization
        self.symmetry_atol = symmetry_atol
        if tokenizer is not None:
            if graph_token not in tokenizer.get_vocab():
                tokenizer.add_special_tokens({"additional_special_tokens": [graph_token]})
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
        super().__init__(tokenizer, chat_template=chat_template or DEFAULT_CHAT_TEMPLATE)

    @property
    def graph_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.graph_token)

    @staticmethod
    def prompt_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict]:
        """The conversation up to and including the last user turn (a final answer turn is dropped)."""
        turns = [dict(m) for m in messages]
        last_user = max((i for i, m in enumerate(turns) if m.get("role") == "user"), default=None)
        if last_user is None:
            raise ValueError("A conversation without a user turn has no question to answer.")
        return turns[: last_user + 1]

    @property
    def end_of_turn(self) -> str:
        """What the chat template writes after an assistant answer, without trailing whitespace ("<|im_end|>");
        the tokenizer's EOS token where the template's answer turn cannot be probed."""
        probe, user = "PROBE_ANSWER", [{"role": "user", "content": "q"}]
        prompt = self.apply_chat_template(user, add_generation_prompt=True)
        full = self.apply_chat_template(user + [{"role": "assistant", "content": probe}])
        if not full.startswith(prompt + probe):
            return self.tokenizer.eos_token or ""
        return full[len(prompt) + len(probe):].rstrip()

    @property
    def answer_prefix_ids(self) -> list[int]:
        """The token ids the chat template puts before an assistant answer ("<|im_start|>assistant\\n"): what
        `FCNLLMConfig.answer_prefix_ids` holds, so the model finds where an answer starts."""
        user = [{"role": "user", "content": "q"}]
        prompt = self.apply_chat_template(user, add_generation_prompt=True)
        bare = self.apply_chat_template(user, add_generation_prompt=False)
        if not prompt.startswith(bare) or prompt == bare:
            raise ValueError("The chat template writes no assistant prefix with add_generation_prompt=True; the model "
                             "cannot find where an answer starts.")
        return self.tokenizer(prompt[len(bare):], add_special_tokens=False)["input_ids"]

    @property
    def answer_end_id(self) -> int | None:
        """The token id of `end_of_turn` where it is one token (None otherwise): `FCNLLMConfig.answer_end_id`."""
        ids = self.tokenizer(self.end_of_turn, add_special_tokens=False)["input_ids"] if self.end_of_turn else []
        return ids[0] if len(ids) == 1 else None

    def expand_graphs(self, text: str) -> str:
        """`text` with each `<graph>` placeholder repeated G times, as the model reads it."""
        if self.num_graph_tokens is None and self.graph_token in text:
            raise ValueError(
                "This processor has no num_graph_tokens; build it with "
                "FCNProcessor.from_model_config(tokenizer, model.config)."
            )
        return text.replace(self.graph_token, self.graph_token * (self.num_graph_tokens or 1))

    def answer_word_ids(self, words: Sequence[str]) -> list[list[int]]:
        """Token ids of each of `words` as an answer writes it (after the chat template's assistant prefix): what
        `FCNLLMConfig.class_answer_ids` holds per head."""
        prompt = self.apply_chat_template([{"role": "user", "content": "q"}], add_generation_prompt=True)
        return [self.answer_ids(prompt, word) for word in words]

    def answer_ids(self, prompt: str, answer: str) -> list[int]:
        """Token ids of `answer` after the chat-template `prompt`, tokenized jointly with it (so training labels
        and scored continuations are the same tokens); the answer alone where a token would merge across the
        boundary."""
        return self.prompt_and_answer_ids(prompt, answer)[1]

    def prompt_and_answer_ids(self, prompt: str, answer: str) -> tuple[list[int], list[int]]:
        """Token ids of the `<graph>`-expanded `prompt`, and of `answer` after it (`answer_ids`)."""
        expanded = self.expand_graphs(prompt)
        prompt_ids = list(self.tokenizer(expanded)["input_ids"])
        full_ids = self.tokenizer(expanded + answer)["input_ids"]
        if full_ids[: len(prompt_ids)] == prompt_ids and len(full_ids) > len(prompt_ids):
            return prompt_ids, list(full_ids[len(prompt_ids):])
        return prompt_ids, list(self.tokenizer(answer, add_special_tokens=False)["input_ids"])

    @classmethod
    def from_model_config(cls, tokenizer, config, **kwargs) -> "FCNProcessor":
        """A processor matching an `FCNLLMConfig` (G, N and the `<graph>` token id are checked)."""
        processor = cls(
            tokenizer,
            num_graph_tokens=config.graph_seq_length,
            num_rois=config.encoder_config.num_rois,
            **kwargs,
        )
        if processor.graph_token_id != config.graph_token_id:
            raise ValueError(
                f"The tokenizer maps {processor.graph_token!r} to id {processor.graph_token_id} but the model's "
                f"graph_token_id is {config.graph_token_id}; use the tokenizer the model was built with."
            )
        return processor

    def prepare_fcns(self, fcns=None, time_series=None) -> list[np.ndarray]:
        """Validated, normalised FCNs `(N, N)` float32 from FCNs or ROI time series `(T, N)`."""
        if fcns is not None and time_series is not None:
            raise ValueError("Give either fcns or time_series, not both.")
        if time_series is not None:
            series = [np.asarray(ts.detach().cpu() if torch.is_tensor(ts) else ts) for ts in _as_list(time_series)]
            fcns = list(compute_fcns(series, kind=self.connectivity_kind, fisher_z=self.fisher_z)) if series else []
        return list(prepare_fcn_stack(_as_list(fcns), self.normalization, self.num_rois, self.symmetry_atol))

    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        fcns=None,
        time_series=None,
        answers: str | Sequence[str] | None = None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Tokenize `text` (one `<graph>` per FCN) and prepare the FCNs.

        Args:
            text: a prompt or a batch of prompts.
            fcns: FCNs `(N, N)`, as one array, a stack `(S, N, N)` or a (per-sample nested) list,
                in order of the placeholders across the batch.
            time_series: ROI time series `(T, N)` instead of FCNs, turned into FCNs here.
            answers: one answer per prompt (training batches): "answer<end-of-turn>" is appended after its
                prompt (the tokens `answer_ids` gives, which scoring measures) and `labels` are returned.
                Takes `padding`, `padding_side`, `max_length` (a longer sequence raises; an answer is never
                cut) and `pad_to_multiple_of`.
            kwargs: passed to the tokenizer (`padding`, `truncation`, `max_length`, `padding_side`, ...).
        """
        if text is None:
            raise ValueError("FCNProcessor needs `text` with one <graph> placeholder per FCN.")
        texts = [text] if isinstance(text, str) else list(text)
        graphs = self.prepare_fcns(fcns, time_series)
        counts = [t.count(self.graph_token) for t in texts]
        if sum(counts) != len(graphs):
            if graphs and not sum(counts):
                raise ValueError(
                    f"{len(graphs)} graph(s) were given but the text has no {self.graph_token} placeholder; "
                    f"put one {self.graph_token} where each FCN belongs."
                )
            raise ValueError(
                f"The text holds {sum(counts)} {self.graph_token} placeholder(s) (per sample: {counts}) "
                f"but {len(graphs)} graph(s) were given; give one FCN per placeholder."
            )
        if graphs and self.num_graph_tokens is None:
            raise ValueError(
                "This processor has no num_graph_tokens; build it with "
                "FCNProcessor.from_model_config(tokenizer, model.config)."
            )
        if answers is not None:
            data = self._encode_with_answers(texts, answers, **kwargs)
        else:
            if self.num_graph_tokens:
                texts = [self.expand_graphs(t) for t in texts]
            kwargs.setdefault("padding", True)
            data = dict(self.tokenizer(texts, return_tensors=return_tensors, **kwargs))
        self._check_expansions(data["input_ids"], counts)
        if graphs:
            stacked = np.stack(graphs).astype(np.float32)
            data["graph_values"] = torch.from_numpy(stacked) if return_tensors == "pt" else stacked
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _encode_with_answers(
        self,
        texts: list[str],
        answers: str | Sequence[str],
        padding: bool | str = True,
        padding_side: str | None = None,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        **kwargs,
    ) -> dict[str, list[list[int]]]:
        """`input_ids`, `attention_mask` and `labels` (lists `(B, L)`) of prompts followed by their answers."""
        answers = [answers] if isinstance(answers, str) else list(answers)
        if len(answers) != len(texts):
            raise ValueError(f"{len(texts)} prompt(s) but {len(answers)} answer(s); give one answer per prompt.")
        if kwargs.get("truncation"):
            raise ValueError("answers are never truncated; give max_length alone (a longer sequence raises).")
        kwargs.pop("truncation", None)
        if kwargs:
            raise ValueError(f"Tokenizer argument(s) {sorted(kwargs)} are not supported with answers.")
        ids, labels = [], []
        end_of_turn = self.end_of_turn
        for i, (prompt, answer) in enumerate(zip(texts, answers)):
            prompt_ids, answer_ids = self.prompt_and_answer_ids(prompt, str(answer) + end_of_turn)
            if max_length is not None and len(prompt_ids) + len(answer_ids) > max_length:
                raise ValueError(
                    f"Sample {i} is {len(prompt_ids) + len(answer_ids)} tokens long (prompt {len(prompt_ids)}, answer "
                    f"{len(answer_ids)}), over max_length={max_length}; raise max_length or shorten the prompt."
                )
            ids.append(prompt_ids + answer_ids)
            labels.append([-100] * len(prompt_ids) + answer_ids)
        longest = max(len(seq) for seq in ids)
        if padding == "max_length":
            if max_length is None:
                raise ValueError('padding="max_length" needs max_length.')
            longest = max_length
        elif not padding or padding == "do_not_pad":
            if len({len(seq) for seq in ids}) > 1:
                raise ValueError("Sequences of different lengths need padding=True to be batched.")
        if pad_to_multiple_of:
            longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
        side = padding_side or self.tokenizer.padding_side
        pad_id = self.tokenizer.pad_token_id

        def pad(seq: list[int], value: int) -> list[int]:
            fill = [value] * (longest - len(seq))
            return fill + seq if side == "left" else seq + fill

        return {
            "input_ids": [pad(seq, pad_id) for seq in ids],
            "attention_mask": [pad([1] * len(seq), 0) for seq in ids],
            "labels": [pad(seq, -100) for seq in labels],
        }

    def _check_expansions(self, input_ids, counts: list[int]) -> None:
        """Each sample must hold exactly G graph tokens per placeholder (truncation may cut them)."""
        graph_id = self.graph_token_id
        for i, (ids, count) in enumerate(zip(input_ids, counts)):
            found = int((torch.as_tensor(ids) == graph_id).sum())
            expected = count * (self.num_graph_tokens or 0)
            if found != expected:
                raise ValueError(
                    f"Sample {i} holds {found} graph tokens after tokenization but its {count} placeholder(s) need "
                    f"{expected}: truncation cut a <graph> expansion. Raise max_length or shorten the prompt."
                )

    @property
    def model_input_names(self) -> list[str]:
        return list(self.tokenizer.model_input_names) + ["graph_values"]


__all__ = ["FCNProcessor", "normalize_fcn", "prepare_fcn_stack", "DEFAULT_CHAT_TEMPLATE"]
