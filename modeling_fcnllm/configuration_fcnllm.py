"""Configurations of FCN-LLM: the multi-scale FCN encoder and the LLaVA-style composite model."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

GNN_TYPES = ("graph", "gin", "gcn", "gat")
HEAD_KINDS = ("binary", "categorical", "continuous")

# SmolLM2-135M-Instruct, the default backbone, with one added token (`<graph>`, id 49152).
_DEFAULT_TEXT_CONFIG = {
    "vocab_size": 49153,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}


@dataclass(frozen=True)
class AttributeHeadConfig(Mapping):
    r"""One attribute head on the encoder's graph tokens: what it predicts and how its outputs read.

    Validated on construction (a ValueError names the head and the problem). Also reads as the plain
    mapping it is stored as in config.json (`head["key"]`, `head.get("mean")`, `dict(head)`).

    Args:
        key: the attribute's name (a column of the subjects' table), unique among the heads.
        kind: `"binary"` (one logit), `"categorical"` (one logit per class) or `"continuous"` (one
            standardised value).
        num_outputs: the head's output width: 1 for binary and continuous, the number of classes (>= 2)
            for categorical.
        classes: a categorical head's class names, in output order (empty: unnamed); empty otherwise.
        mean, std: a continuous head's target scaling, value = output * std + mean (std > 0).
        valid_range: a continuous head's `(lo, hi)` values (None: unbounded); a written estimate is clipped to it.
        decimals: a continuous head's digits after the decimal point when its estimate is written.
    """

    key: str
    kind: Literal["binary", "categorical", "continuous"]
    num_outputs: int
    classes: tuple[str, ...] = ()
    mean: float = 0.0
    std: float = 1.0
    valid_range: tuple[float, float] | None = None
    decimals: int = 0

    def __post_init__(self):
        name = f"Attribute head {self.key!r}"
        if not isinstance(self.key, str) or not self.key:
            raise ValueError(f"Attribute head key must be a non-empty string, got {self.key!r}.")
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"{name}: unknown kind {self.kind!r}; choose one of {', '.join(HEAD_KINDS)}.")
        if isinstance(self.num_outputs, bool) or not isinstance(self.num_outputs, int):
            raise ValueError(f"{name}: num_outputs must be an int, got {self.num_outputs!r}.")
        object.__setattr__(self, "classes", tuple(self.classes))
        if self.kind == "categorical":
            if self.num_outputs < 2:
                raise ValueError(f"{name}: a categorical head needs num_outputs >= 2 (one per class), got {self.num_outputs}.")
            if self.classes and len(self.classes) != self.num_outputs:
                raise ValueError(f"{name}: {len(self.classes)} classes for num_outputs={self.num_outputs}.")
            if len(set(self.classes)) != len(self.classes):
                raise ValueError(f"{name}: classes must be distinct, got {list(self.classes)}.")
        else:
            if self.num_outputs != 1:
                raise ValueError(f"{name}: a {self.kind} head has num_outputs=1, got {self.num_outputs}.")
            if self.classes:
                raise ValueError(f"{name}: only categorical heads have classes, got {list(self.classes)}.")
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise ValueError(f"{name}: mean must be finite and std finite and > 0, got mean={self.mean}, std={self.std}.")
        if self.valid_range is not None:
            bounds = tuple(float(b) for b in self.valid_range)
            if self.kind != "continuous" or len(bounds) != 2 or not bounds[0] < bounds[1]:
                raise ValueError(f"{name}: valid_range is a continuous head's (lo, hi) with lo < hi, got {self.valid_range!r}.")
            object.__setattr__(self, "valid_range", bounds)
        if isinstance(self.decimals, bool) or not isinstance(self.decimals, int) or not 0 <= self.decimals <= 3:
            raise ValueError(f"{name}: decimals must be an int in [0, 3], got {self.decimals!r}.")

    @classmethod
    def from_dict(cls, head: Mapping[str, Any]) -> "AttributeHeadConfig":
        """A head from its config.json mapping; missing or unknown fields are a ValueError naming them."""
        if isinstance(head, cls):
            return head
        if not isinstance(head, Mapping):
            raise ValueError(f"An attribute head is a mapping with key, kind and num_outputs, got {head!r}.")
        names = [f.name for f in fields(cls)]
        label = f"Attribute head {head.get('key')!r}"
        missing = [n for n in ("key", "kind", "num_outputs") if n not in head]
        if missing:
            raise ValueError(f"{label} lacks {', '.join(missing)} (it needs key, kind and num_outputs), got {dict(head)}.")
        unknown = sorted(set(head) - set(names))
        if unknown:
            raise ValueError(f"{label} has unknown fields {unknown}; its fields are {names}.")
        return cls(**head)

    def to_dict(self) -> dict[str, Any]:
        """The plain mapping stored in config.json."""
        return {**asdict(self), "classes": list(self.classes),
                "valid_range": None if self.valid_range is None else list(self.valid_range)}

    def __getitem__(self, name: str) -> Any:
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self):
        return iter(self.__dataclass_fields__)

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)


def attribute_head_configs(heads: list | None, field_name: str) -> list[AttributeHeadConfig] | None:
    """`heads` (mappings or `AttributeHeadConfig`s, None) as validated `AttributeHeadConfig`s with distinct keys."""
    if heads is None:
        return None
    typed = []
    for i, head in enumerate(heads):
        try:
            typed.append(AttributeHeadConfig.from_dict(head))
        except ValueError as err:
            raise ValueError(f"{field_name}[{i}]: {err}") from None
    keys = [head.key for head in typed]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{field_name} keys must be distinct, got {keys}.")
    return typed


def _heads_to_dicts(output: dict, field_name: str) -> dict:
    if output.get(field_name) is not None:
        output[field_name] = [AttributeHeadConfig.from_dict(head).to_dict() for head in output[field_name]]
    return output


@strict
class FCNEncoderConfig(PreTrainedConfig):
    r"""Configuration of `FCNEncoderModel`, the GNN that turns an FCN `(N, N)` into G graph tokens.

    Args:
        num_rois: N, the number of ROIs of the atlas.
        network_assignment: N ints in `[0, K)`, each ROI's subnetwork (e.g. Yeo-7). `None`: one network.
        network_names: K names of the subnetworks (for reports); optional.
        hidden_size: width of node embeddings and graph tokens before the projector.
        num_layers: message-passing layers.
        gnn_type: PyG dense layer: `"graph"` (signed weighted sum, default), `"gin"`, `"gcn"` or `"gat"` (on |r|).
        num_attention_heads: heads of GAT layers and of the ROI-token attention pooling.
        edge_density: fraction of the N - 1 possible neighbours kept per node (strongest |r|).
        num_roi_tokens: R, learned queries of the ROI-level attention pooling.
        use_roi_tokens / use_network_tokens / use_global_token: switch each scale on or off.
        dropout: dropout inside the GNN.
        attribute_heads: the heads of `FCNEncoderForAttributePrediction` (stage 0), as `AttributeHeadConfig`s
            or their mappings; unused by `FCNEncoderModel`.
    """

    model_type = "fcn_encoder"
    base_config_key = "encoder_config"

    num_rois: int = 100
    network_assignment: list[int] | None = None
    network_names: list[str] | None = None
    hidden_size: int = 128
    num_layers: int = 2
    gnn_type: Literal["graph", "gin", "gcn", "gat"] = "graph"
    num_attention_heads: int = 4
    edge_density: float = 0.1
    num_roi_tokens: int = 8
    use_roi_tokens: bool = True
    use_network_tokens: bool = True
    use_global_token: bool = True
    dropout: float = 0.1
    initializer_range: float = 0.02
    attribute_heads: list[AttributeHeadConfig | dict] | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.attribute_heads = attribute_head_configs(self.attribute_heads, "attribute_heads")
        if self.num_rois < 2:
            raise ValueError(f"num_rois must be at least 2, got {self.num_rois}.")
        if self.network_assignment is not None:
            assignment = list(self.network_assignment)
            if len(assignment) != self.num_rois:
                raise ValueError(
                    f"network_assignment has {len(assignment)} entries but num_rois={self.num_rois}; "
                    "give one subnetwork index per ROI."
                )
            if min(assignment) < 0 or sorted(set(assignment)) != list(range(max(assignment) + 1)):
                raise ValueError(
                    f"network_assignment must use every index 0..K-1 with no gaps, got {sorted(set(assignment))}."
                )
        if self.network_names is not None and len(self.network_names) != self.num_networks:
            raise ValueError(f"{len(self.network_names)} network_names for {self.num_networks} networks.")
        if self.gnn_type not in GNN_TYPES:
            raise ValueError(f"Unknown gnn_type {self.gnn_type!r}; choose one of {GNN_TYPES}.")
        if not 0.0 < self.edge_density <= 1.0:
            raise ValueError(f"edge_density must be in (0, 1], got {self.edge_density}.")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be divisible by num_attention_heads={self.num_attention_heads}."
            )
        if self.use_roi_tokens and self.num_roi_tokens < 1:
            raise ValueError(f"num_roi_tokens must be >= 1 when use_roi_tokens, got {self.num_roi_tokens}.")
        if self.graph_seq_length == 0:
            raise ValueError("All token scales are switched off: enable at least one of ROI, network, global tokens.")

    @property
    def num_networks(self) -> int:
        """K, the number of subnetworks."""
        return 1 if self.network_assignment is None else max(self.network_assignment) + 1

    @property
    def neighbours_per_node(self) -> int:
        """k, the strongest connections kept per ROI."""
        return max(1, round(self.edge_density * (self.num_rois - 1)))

    @property
    def graph_seq_length(self) -> int:
        """G = R (ROI tokens) + K (subnetwork tokens) + 1 (whole-brain token), for the scales switched on."""
        return (
            self.num_roi_tokens * self.use_roi_tokens
            + self.num_networks * self.use_network_tokens
            + int(self.use_global_token)
        )

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON types (attribute heads as mappings)."""
        return _heads_to_dicts(super().to_dict(), "attribute_heads")


@strict
class FCNLLMConfig(PreTrainedConfig):
    r"""Configuration of `FCNLLMForCausalLM`: an FCN encoder, a projector and any causal LM.

    Args:
        text_config: the causal LM's config (Llama/SmolLM2, GPT-2, Qwen2, ...); default SmolLM2-135M.
        encoder_config: an `FCNEncoderConfig` (or its dict).
        graph_token_id: id of the `<graph>` placeholder token, repeated G times per FCN in `input_ids`.
        projector_hidden_act: activation between the projector's two linear layers.
        projector_layernorm: end the projector with a LayerNorm whose gain is set to the LLM's
            word-embedding RMS, so graph tokens have the scale of word tokens.
        projector_batchnorm: standardise every (token, channel) of the encoder output over subjects
            before projecting (removes what is the same for every subject).
        auxiliary_heads: optional attribute heads on the encoder's graph tokens, `AttributeHeadConfig`s
            (or their mappings, `{"key": str, "kind": "binary"|"categorical"|"continuous", "num_outputs": int,
            ...}`); pre-trained
            in stage 0, trained with `graph_attribute_labels` (the auxiliary loss) and returned as
            `graph_attribute_outputs`.
        auxiliary_loss_weight: weight of the auxiliary attribute loss added to the LM loss.
        instruction_conditioning: add to each graph's last token a question-aware vector (the
            instruction's attention-pooled word embeddings gating the graph's pooled tokens, as
            InstructBLIP's instruction-aware Q-Former), so a frozen LLM is handed the evidence its
            question needs; zero-initialised, so a new model starts as the plain LLaVA splice.
        instruction_rank: width of that gated product.
        instruction_evidence: what the question gates. ``"tokens"``: the graph's pooled projected
            tokens (D features); ``"attributes"``: the auxiliary heads' outputs (one logit or
            standardised value per attribute, needs `auxiliary_heads`), so the question only has to
            pick and sign the attribute it asks about instead of learning a readout of D features.
        evidence_paradigms: with ``"attributes"``, the instruction paradigms (e.g. ``["predictive",
            "judgment", "comparative"]``) that get their own readout of the heads: a judgment ("Yes"/"No")
            and a predictive question ("ADHD"/"Control") need different words from the same head, so
            each paradigm has its own columns in the evidence token's `out`, picked by a bag-of-words
            classifier of the question's paradigm. None or one paradigm: one readout shared by all.
        numeral_tokens: with ``"attributes"``, the tokenizer's tokens that spell a number, `{token id: its
            text}` (digits, with a leading space where the token starts a word, or ``"."``): the evidence
            token reads the number a judgment names ("older than 37?") as a number from them, so any
            threshold is compared exactly. None: the threshold is a linear map of the question's bag of
            words (fitted to the training questions). `FCNLLMForCausalLM.from_text_model` fills it from the
            tokenizer (`numeral_tokens_of`).
        evidence_position: with ``"attributes"``, where the evidence enters. ``"graph"``: added to every graph
            token, read by the LLM like the rest of its input; ``"answer"``: added to the LLM's last hidden state
            where the answer starts (the position whose logits give the answer's first token), so the answer
            words' logits move linearly with the asked head's output (the LLM writes the answer's form, the
            heads decide it).
        evidence_decides_answer: with ``"answer"``, the LLM's hidden state where the answer starts loses its component
            along the directions the row's readout writes (the columns of the asked head in the question's paradigm:
            "Yes" - "No", the class names, "First" - "Second"), and so does the readout's bias: on those words the
            heads' evidence alone sets the answer's margin, whatever the question's wording makes the LLM prefer, so
            the answers of every paradigm read the heads from the same zero and agree with each other.
        answer_prefix_ids: the token ids that end every prompt before an answer (the chat template's assistant
            prefix, `FCNProcessor.answer_prefix_ids`): with ``"answer"``, the evidence is added at the positions
            where they end; a row without them gets it at its last attended position.
        answer_end_id: the token that ends an answer (the chat template's end of turn), written after an estimate.
        number_writing_bias: with ``"answer"`` and `numeral_tokens`, at inference, logits added to each token of
            the asked continuous head's estimate (rounded to its `decimals`, clipped to its `valid_range`, then
            `answer_end_id`) as the answer is written, times the question's predictive-paradigm and routing
            weights: "What is this subject's age?" is answered with the head's estimate. 0: the LLM writes numbers
            alone. The same bias writes class words whole (`class_answer_ids`).
        class_answer_ids: with ``"answer"``, per binary or categorical head key, the token ids of each of its answer
            words as an answer writes them (binary: the positive label, then the negative; categorical: its classes in
            output order). At inference, once an answer has begun one of the words of the head the question is routed
            to, the rest of that word and then `answer_end_id` get `number_writing_bias` times the routing weight, so
            the word the evidence chose ("Amb" of "Ambidextrous") is written whole. None: the LLM goes on alone.

    Example:
        >>> config = FCNLLMConfig()  # SmolLM2-135M text config, 100-ROI encoder
        >>> config.graph_seq_length
        10
    """

    model_type = "fcn_llm"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama", init_kwargs=_DEFAULT_TEXT_CONFIG),
        "encoder_config": SubConfigSpec(config_class=FCNEncoderConfig),
    }

    text_config: dict | PreTrainedConfig | None = None
    encoder_config: dict | PreTrainedConfig | None = None
    graph_token_id: int = 49152
    projector_hidden_act: str = "gelu"
    projector_layernorm: bool = True
    projector_batchnorm: bool = True
    auxiliary_heads: list[AttributeHeadConfig | dict] | None = None
    auxiliary_loss_weight: float = 0.0
    instruction_conditioning: bool = True
    instruction_rank: int = 256
    instruction_evidence: str = "tokens"
    evidence_paradigms: list[str] | None = None
    numeral_tokens: dict[str, str] | None = None
    evidence_position: str = "graph"
    evidence_decides_answer: bool = False
    answer_prefix_ids: list[int] | None = None
    answer_end_id: int | None = None
    number_writing_bias: float = 20.0
    class_answer_ids: dict[str, list[list[int]]] | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        kwargs.pop("graph_seq_length", None)  # derived, never stored
        super().__post_init__(**kwargs)
        self.auxiliary_heads = attribute_head_configs(self.auxiliary_heads, "auxiliary_heads")
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True
        vocab_size = getattr(self.text_config, "vocab_size", None)
        if vocab_size is not None and not 0 <= self.graph_token_id < vocab_size:
            raise ValueError(
                f"graph_token_id={self.graph_token_id} is outside the text model's vocabulary (size {vocab_size}); "
                "add the <graph> token to the tokenizer and resize the embeddings."
            )

        if self.instruction_evidence not in ("tokens", "attributes"):
            raise ValueError(f"instruction_evidence must be 'tokens' or 'attributes', got {self.instruction_evidence!r}.")
        if self.instruction_evidence == "attributes" and not self.auxiliary_heads:
            raise ValueError("instruction_evidence='attributes' reads the auxiliary heads' outputs, but auxiliary_heads is empty.")
        if self.evidence_position not in ("graph", "answer"):
            raise ValueError(f"evidence_position must be 'graph' or 'answer', got {self.evidence_position!r}.")
        if self.evidence_position == "answer" and self.instruction_evidence != "attributes":
            raise ValueError("evidence_position='answer' adds the attribute heads' evidence to the answer's logits: it "
                             "needs instruction_evidence='attributes'.")
        if self.evidence_decides_answer and self.evidence_position != "answer":
            raise ValueError("evidence_decides_answer needs evidence_position='answer' (it sets the answer's margin "
                             f"where the answer starts), got evidence_position={self.evidence_position!r}.")
        if self.answer_prefix_ids is not None and not all(isinstance(t, int) and t >= 0 for t in self.answer_prefix_ids):
            raise ValueError(f"answer_prefix_ids must be token ids, got {self.answer_prefix_ids!r}.")
        if not (math.isfinite(self.number_writing_bias) and self.number_writing_bias >= 0):
            raise ValueError(f"number_writing_bias must be finite and >= 0, got {self.number_writing_bias!r}.")
        for key, words in (self.class_answer_ids or {}).items():
            if not (isinstance(words, (list, tuple)) and len(words) >= 2 and all(
                    isinstance(w, (list, tuple)) and w and all(isinstance(t, int) and t >= 0 for t in w) for w in words)):
                raise ValueError(f"class_answer_ids[{key!r}] must list two or more answer words, each as token ids, "
                                 f"got {words!r}.")
        paradigms = list(self.evidence_paradigms or [])
        if len(set(paradigms)) != len(paradigms) or not all(isinstance(p, str) and p for p in paradigms):
            raise ValueError(f"evidence_paradigms must be distinct paradigm names, got {self.evidence_paradigms!r}.")
        for token, text in (self.numeral_tokens or {}).items():
            if not str(token).isdigit() or not (text.strip().isdigit() or text == "."):
                raise ValueError(
                    f"numeral_tokens maps token ids to the number text they spell (digits or '.'), got {token!r}: {text!r}."
                )

    @property
    def graph_seq_length(self) -> int:
        """G, the number of graph tokens per FCN (derived from `encoder_config`)."""
        return self.encoder_config.graph_seq_length

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON types (attribute heads as mappings)."""
        return _heads_to_dicts(super().to_dict(), "auxiliary_heads")


def numeral_tokens_of(tokenizer, max_digits: int = 4) -> dict[str, str]:
    """`{token id: text}` of the tokenizer's tokens that spell a number of at most `max_digits` digits (with an
    optional leading space) or a decimal point: `FCNLLMConfig.numeral_tokens`."""
    numerals = {}
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        digits = text[1:] if text.startswith(" ") else text
        if (digits.isascii() and digits.isdigit() and len(digits) <= max_digits) or text == ".":
            numerals[str(token_id)] = text
    return numerals


__all__ = ["AttributeHeadConfig", "FCNEncoderConfig", "FCNLLMConfig", "attribute_head_configs", "numeral_tokens_of"]
