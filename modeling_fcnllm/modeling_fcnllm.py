"""FCN-LLM: a multi-scale GNN over functional connectivity networks, spliced into a causal LM (LLaVA-style).

Data flow for a batch with `num_graphs` FCNs of N ROIs:

    graph_values (num_graphs, N, N)
      -> FCNEncoderModel: top-k signed graph per FCN, PyG (dense) message passing over ROIs
         -> ROI tokens (R, attention pooling into learned queries)
          + subnetwork tokens (K, mean over each network's ROIs)
          + whole-brain token (1, global mean/max pooling)        = G tokens of size H
      -> FCNProjector (H -> D, the LLM's hidden size)
      -> masked_scatter into inputs_embeds where input_ids == graph_token_id (G per FCN)
      -> language model -> lm_head
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import DenseGATConv, DenseGCNConv, DenseGINConv, DenseGraphConv
from transformers import AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils import ModelOutput
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple

from .configuration_fcnllm import AttributeHeadConfig, FCNEncoderConfig, FCNLLMConfig, numeral_tokens_of

# The turn classifier's logit before it is fitted: every question asks the plain way.
PLAIN_LOGIT = -30.0

# Scale ids of the learned scale embedding.
ROI_SCALE, NETWORK_SCALE, GLOBAL_SCALE = 0, 1, 2


@dataclass
class FCNEncoderOutput(ModelOutput):
    """Output of `FCNEncoderModel`.

    Args:
        graph_tokens: `(B, G, H)` ROI, subnetwork and whole-brain tokens, in that order.
        node_embeddings: `(B, N, H)` ROI embeddings after message passing.
        roi_attention: `(B, R, N)` attention of each ROI-token query over the ROIs (None if off).
        network_connectivity: `(B, K, K)` the network-level FCN (mean r within and between subnetworks).
    """

    graph_tokens: torch.Tensor | None = None
    node_embeddings: torch.Tensor | None = None
    roi_attention: torch.Tensor | None = None
    network_connectivity: torch.Tensor | None = None


@dataclass
class FCNAttributePredictionOutput(ModelOutput):
    """Output of `FCNEncoderForAttributePrediction`.

    Args:
        loss: `()` the heads' loss on `labels` (mean over heads with known labels), when labels are given.
        attribute_outputs: `(num_graphs, A)` the heads' outputs (`GraphAttributeHeads`).
        graph_tokens: `(num_graphs, G, H)` the encoder's graph tokens.
        network_connectivity: `(num_graphs, K, K)` the network-level FCN.
    """

    loss: torch.Tensor | None = None
    attribute_outputs: torch.Tensor | None = None
    graph_tokens: torch.Tensor | None = None
    network_connectivity: torch.Tensor | None = None


@dataclass
class FCNLLMModelOutputWithPast(BaseModelOutputWithPast):
    """`BaseModelOutputWithPast` plus `graph_hidden_states`: `(num_graphs, G, D)` projected graph tokens,
    `graph_attribute_outputs`: `(num_graphs, A)` the attribute heads' outputs (None without heads) and
    `instruction_routing_logits`: `(B, num_heads)` which attribute each instruction asks about (None unless
    the evidence token reads the heads; with them, how it read each question's paradigm `paradigm_logits` `(B, P)`,
    turn `turn_logits` `(B,)` and asked class `class_signs` `(B, A)`) and `answer_evidence`: `(B, D)` what each row's answer position adds to
    the last hidden state (None unless `config.evidence_position == "answer"`), `answer_basis` `(B, D, r)` the
    orthonormal directions along which the evidence alone sets the answer (with `config.evidence_decides_answer`,
    `InstructionConditioning.answer_basis`; else None); `number_plan` `(B, P)` the tokens
    of the estimate each row's answer writes (-1 after its end) and `number_gate` `(B,)` how strongly (at inference
    with number writing, `InstructionConditioning.plan_numbers`; else None); `word_plan` `(B, C, T)` the answer words of
    the head each row is routed to, `word_gate` `(B,)` and `word_start_gate` `(B,)` (at inference with
    `config.class_answer_ids`, `InstructionConditioning.plan_words`; else None)."""

    graph_hidden_states: torch.Tensor | None = None
    graph_attribute_outputs: torch.Tensor | None = None
    instruction_routing_logits: torch.Tensor | None = None
    paradigm_logits: torch.Tensor | None = None
    turn_logits: torch.Tensor | None = None
    class_signs: torch.Tensor | None = None
    answer_evidence: torch.Tensor | None = None
    answer_basis: torch.Tensor | None = None
    number_plan: torch.Tensor | None = None
    number_gate: torch.Tensor | None = None
    word_plan: torch.Tensor | None = None
    word_gate: torch.Tensor | None = None
    word_start_gate: torch.Tensor | None = None


@dataclass
class FCNLLMCausalLMOutputWithPast(CausalLMOutputWithPast):
    """`CausalLMOutputWithPast` plus `graph_hidden_states` `(num_graphs, G, D)`, `graph_attribute_outputs`
    `(num_graphs, A)`, `instruction_routing_logits` `(B, num_heads)`, `paradigm_logits` `(B, P)`, `turn_logits`
    `(B,)`, `class_signs` `(B, A)` and `answer_evidence` `(B, D)`, as in
    `FCNLLMModelOutputWithPast`, and `answer_offset` `(B,)` the last position's place in the answer (0: it gives the
    answer's first token; -1: before the answer), with which generation goes on writing the `number_plan`, and
    `word_plan`, `word_gate` and `answer_tokens` `(B, k)` the answer's tokens so far (cached generation), with which
    it writes a begun class word whole."""

    graph_hidden_states: torch.Tensor | None = None
    graph_attribute_outputs: torch.Tensor | None = None
    instruction_routing_logits: torch.Tensor | None = None
    paradigm_logits: torch.Tensor | None = None
    turn_logits: torch.Tensor | None = None
    class_signs: torch.Tensor | None = None
    answer_evidence: torch.Tensor | None = None
    number_plan: torch.Tensor | None = None
    number_gate: torch.Tensor | None = None
    answer_offset: torch.Tensor | None = None
    word_plan: torch.Tensor | None = None
    word_gate: torch.Tensor | None = None
    answer_tokens: torch.Tensor | None = None


def check_graph_values(graph_values: torch.Tensor, num_rois: int) -> None:
    """Raise a ValueError naming the problem if `graph_values` is not `(num_graphs, N, N)` finite floats."""
    if not torch.is_tensor(graph_values):
        raise ValueError(f"graph_values must be a torch.Tensor, got {type(graph_values).__name__}.")
    if not torch.is_floating_point(graph_values):
        raise ValueError(f"graph_values must be a float tensor, got dtype {graph_values.dtype}.")
    if graph_values.ndim != 3 or graph_values.shape[1] != graph_values.shape[2]:
        raise ValueError(
            f"graph_values must have shape (num_graphs, N, N) with square FCNs, got {tuple(graph_values.shape)}."
        )
    if graph_values.shape[1] != num_rois:
        raise ValueError(
            f"graph_values have N={graph_values.shape[1]} ROIs but the encoder expects num_rois={num_rois}."
        )
    if not torch.isfinite(graph_values).all():
        raise ValueError("graph_values contain NaN or inf values.")


def sparsify_fcn(fcn: torch.Tensor, num_neighbours: int) -> torch.Tensor:
    """Keep each ROI's `num_neighbours` strongest |r| connections (row-wise top-k), signs kept.

    Args:
        fcn: `(B, N, N)` FCNs (diagonal ignored).
    Returns:
        `(B, N, N)` signed adjacency: row i holds r_ij for i's k strongest partners j, 0 elsewhere;
        differentiable w.r.t. the kept r_ij (the choice of edges is not).
    """
    num_rois = fcn.shape[-1]
    eye = torch.eye(num_rois, dtype=torch.bool, device=fcn.device)
    strength = fcn.detach().abs().masked_fill(eye, -1.0)
    neighbours = strength.topk(num_neighbours, dim=-1).indices  # (B, N, k)
    return torch.zeros_like(fcn).scatter(-1, neighbours, fcn.gather(-1, neighbours))


class FCNGraphLayer(nn.Module):
    """Pre-norm residual message passing with PyG's dense layers: `h + dropout(gelu(conv(norm(h), A)))`.

    - ``"graph"``: `DenseGraphConv` (sum aggregation weighted by the signed r_ij; the default);
    - ``"gin"``: `DenseGINConv` on the signed adjacency;
    - ``"gcn"``: `DenseGCNConv` on |r| (GCN normalisation needs non-negative weights);
    - ``"gat"``: `DenseGATConv`, attention over the kept neighbours.
    Dense layers on `(B, N, N)` suit an FCN's small top-k graph better than scatter-based sparse layers.
    """

    def __init__(self, config: FCNEncoderConfig):
        super().__init__()
        hidden, heads = config.hidden_size, config.num_attention_heads
        self.gnn_type = config.gnn_type
        if config.gnn_type == "graph":
            self.conv = DenseGraphConv(hidden, hidden, aggr="add")
        elif config.gnn_type == "gin":
            self.conv = DenseGINConv(nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden)))
        elif config.gnn_type == "gcn":
            self.conv = DenseGCNConv(hidden, hidden)
        else:
            self.conv = DenseGATConv(hidden, hidden // heads, heads=heads)
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        """`hidden`: `(B, N, H)`, `adjacency`: `(B, N, N)` signed -> `(B, N, H)`."""
        if self.gnn_type in ("gcn", "gat"):
            adjacency = adjacency.abs()
        return hidden + self.dropout(F.gelu(self.conv(self.norm(hidden), adjacency)))


class FCNEncoderPreTrainedModel(PreTrainedModel):
    """Base of the FCN encoder models: `FCNEncoderConfig`, weight initialisation, loading."""

    config_class = FCNEncoderConfig
    config: FCNEncoderConfig
    base_model_prefix = "encoder"
    main_input_name = "graph_values"
    input_modalities = ("graph",)
    # no attention of transformers' own (the ROI pooling is `nn.MultiheadAttention`): any implementation the
    # composite's language model is given leaves the encoder as it is
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, (FCNEncoderModel, GraphAttributeHeads)):
            module.reset_parameters()


class FCNEncoderModel(FCNEncoderPreTrainedModel):
    """Multi-scale FCN encoder: FCNs `(B, N, N)` -> graph tokens `(B, G, H)`.

    Node features are each ROI's connectivity profile (its FCN row, diagonal zeroed) projected to H,
    plus a learned ROI embedding. Edges are the `k` strongest |r| per ROI, weighted by the signed r.
    Subnetwork tokens also carry their row of the network-level FCN `(K, K)` (mean r within and
    between subnetworks), and the whole-brain token its upper triangle: the scale at which
    connectivity differences between groups are usually reported, which a sparsified graph keeps poorly.
    """

    def __init__(self, config: FCNEncoderConfig):
        super().__init__(config)
        hidden = config.hidden_size
        self.input_norm = nn.LayerNorm(config.num_rois)
        self.node_projection = nn.Linear(config.num_rois, hidden)
        self.roi_embedding = nn.Parameter(torch.zeros(config.num_rois, hidden))
        self.layers = nn.ModuleList(FCNGraphLayer(config) for _ in range(config.num_layers))
        self.node_norm = nn.LayerNorm(hidden)
        self.scale_embedding = nn.Embedding(3, hidden)
        if config.use_roi_tokens:
            self.roi_queries = nn.Parameter(torch.zeros(config.num_roi_tokens, hidden))
            self.roi_pooling = nn.MultiheadAttention(hidden, config.num_attention_heads, batch_first=True)
        num_networks = config.num_networks
        self.register_buffer("network_pooling", self.network_pooling_matrix(), persistent=False)
        if config.use_network_tokens:
            self.network_embedding = nn.Parameter(torch.zeros(num_networks, hidden))
            self.network_connectivity = nn.Linear(num_networks, hidden)
        if config.use_global_token:
            self.global_projection = nn.Linear(2 * hidden + num_networks * (num_networks + 1) // 2, hidden)
        self.output_norm = nn.LayerNorm(hidden)
        self.post_init()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise the encoder's own parameters (its submodules initialise themselves)."""
        std = self.config.initializer_range
        nn.init.normal_(self.roi_embedding, std=std)
        if self.config.use_roi_tokens:
            nn.init.normal_(self.roi_queries, std=1.0)
        if self.config.use_network_tokens:
            nn.init.normal_(self.network_embedding, std=std)
        # a non-persistent buffer: rebuilt here when from_pretrained creates the model on "meta"
        self.network_pooling.copy_(self.network_pooling_matrix())

    def network_pooling_matrix(self) -> torch.Tensor:
        """`(K, N)` row-normalised one-hot of the atlas assignment: row k averages network k's ROIs."""
        config = self.config
        assignment = torch.tensor(config.network_assignment or [0] * config.num_rois)
        one_hot = F.one_hot(assignment, config.num_networks).T.float()
        return one_hot / one_hot.sum(-1, keepdim=True)

    def network_connectivity_matrix(self, profiles: torch.Tensor) -> torch.Tensor:
        """Network-level FCN `(B, K, K)`: mean edge between (or within) subnetworks, diagonal excluded.

        Args:
            profiles: FCNs `(B, N, N)` with a zeroed diagonal.
        """
        pooling = self.network_pooling.to(profiles.dtype)
        sums = pooling @ profiles @ pooling.T  # (B, K, K): mean over all ROI pairs, self-pairs counted as 0
        sizes = (pooling > 0).sum(-1).to(profiles.dtype)  # ROIs per network, (K,)
        pairs = sizes[:, None] * sizes[None, :] - torch.diag(sizes)
        return sums * (sizes[:, None] * sizes[None, :]) / pairs.clamp_min(1.0)

    def forward(self, graph_values: torch.Tensor, **kwargs) -> FCNEncoderOutput:
        """`graph_values`: `(B, N, N)` FCNs (normalised as the processor does) -> `FCNEncoderOutput`."""
        check_graph_values(graph_values, self.config.num_rois)
        config = self.config
        batch, num_rois, _ = graph_values.shape
        eye = torch.eye(num_rois, dtype=torch.bool, device=graph_values.device)
        profiles = graph_values.masked_fill(eye, 0.0)
        hidden = self.node_projection(self.input_norm(profiles)) + self.roi_embedding  # (B, N, H)

        adjacency = sparsify_fcn(profiles, config.neighbours_per_node)
        for layer in self.layers:
            hidden = layer(hidden, adjacency)
        nodes = self.node_norm(hidden)
        networks = self.network_connectivity_matrix(profiles)  # (B, K, K)

        tokens, roi_attention = [], None
        if config.use_roi_tokens:
            queries = self.roi_queries.unsqueeze(0).expand(batch, -1, -1)
            pooled, roi_attention = self.roi_pooling(queries, nodes, nodes, need_weights=True)
            tokens.append(pooled + queries + self.scale_embedding.weight[ROI_SCALE])
        if config.use_network_tokens:
            pooled = torch.einsum("kn,bnh->bkh", self.network_pooling.to(nodes.dtype), nodes)
            pooled = pooled + self.network_connectivity(networks)
            tokens.append(pooled + self.network_embedding + self.scale_embedding.weight[NETWORK_SCALE])
        if config.use_global_token:
            upper = torch.triu_indices(networks.shape[-1], networks.shape[-1], device=networks.device)
            pooled = torch.cat([nodes.mean(1), nodes.amax(1), networks[:, upper[0], upper[1]]], dim=-1)
            tokens.append((self.global_projection(pooled) + self.scale_embedding.weight[GLOBAL_SCALE]).unsqueeze(1))
        graph_tokens = self.output_norm(torch.cat(tokens, dim=1))
        return FCNEncoderOutput(graph_tokens=graph_tokens, node_embeddings=nodes, roi_attention=roi_attention,
                                network_connectivity=networks)


class FCNProjector(nn.Module):
    """Graph tokens `(B, G, H)` -> LLM embeddings `(B, G, D)`: [BatchNorm,] Linear, act, Linear[, LayerNorm].

    - The optional BatchNorm standardises every (token, channel) over subjects: it removes the part of
      the tokens that is the same for everyone (learned queries, scale embeddings) and keeps what
      differs between subjects, which is all a frozen LLM can learn from.
    - The LayerNorm gain is set to the LLM's word-embedding RMS (`match_embedding_scale`), so graph
      tokens enter the LLM at the scale of word tokens.
    """

    def __init__(self, config: FCNLLMConfig):
        super().__init__()
        text_hidden = config.text_config.hidden_size
        width = config.graph_seq_length * config.encoder_config.hidden_size
        self.input_norm = nn.BatchNorm1d(width) if config.projector_batchnorm else None
        self.linear_1 = nn.Linear(config.encoder_config.hidden_size, text_hidden)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(text_hidden, text_hidden)
        self.norm = nn.LayerNorm(text_hidden) if config.projector_layernorm else nn.Identity()

    def forward(self, graph_tokens: torch.Tensor) -> torch.Tensor:
        if self.input_norm is not None:
            norm, flat = self.input_norm, graph_tokens.flatten(1)
            if self.training and flat.shape[0] > 1:
                flat = norm(flat)
            else:  # inference, or a single graph: the running statistics
                flat = F.batch_norm(flat, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)
            graph_tokens = flat.view_as(graph_tokens)
        return self.norm(self.linear_2(self.act(self.linear_1(graph_tokens))))

    @torch.no_grad()
    def calibrate(self, graph_tokens: torch.Tensor) -> None:
        """Set the BatchNorm's running statistics to those of `graph_tokens` `(S, G, H)` (before training)."""
        if self.input_norm is not None:
            flat = graph_tokens.flatten(1)
            self.input_norm.running_mean.copy_(flat.mean(0))
            self.input_norm.running_var.copy_(flat.var(0))

    @torch.no_grad()
    def match_embedding_scale(self, word_embeddings: torch.Tensor) -> None:
        """Set the LayerNorm gain to the RMS of the word embeddings `(V, D)`."""
        if isinstance(self.norm, nn.LayerNorm):
            self.norm.weight.fill_(word_embeddings.float().pow(2).mean().sqrt().item())


class InstructionConditioning(nn.Module):
    """Question-aware evidence for each graph, added to its tokens.

    - ``instruction_evidence="tokens"``: the instruction's word embeddings are attention-pooled (one
      learned query) into `q` `(B, D)` and gate the graph's pooled projected tokens `g` `(num_graphs, D)`:
      `out((A q) * (B g))` (rank `instruction_rank`), as InstructBLIP's instruction-aware Q-Former;
      added to the graph's last (whole-brain) token.
    - ``"attributes"``: a router reads which attribute the question is about, `w` `(B, num_heads)`
      (`route`: a bag-of-words linear classifier over the instruction), and the evidence is
      `out(w * (z - t))`, with `z` `(num_graphs, A)` the attribute heads' outputs, each standardised
      over subjects and weighted by its head's `w`, and `t` `(B, A)` the threshold the question names
      ("older than 30?": with `config.numeral_tokens` the number read as a number, `question_numbers`, in
      the head's units; else a linear map of the same bag of words, `thresholds`): the LLM is handed the
      prediction for the attribute it is asked about, relative to the question's threshold, on
      every graph token. The router can be supervised with the instruction's attribute
      (`routing_labels` in `FCNLLMForCausalLM.forward`). A categorical head's outputs enter as its classes'
      log-odds, scaled but not centred (`read_outputs`), and are read as the question asks:
      `out(w * s * (z - t))`, `s` `(B, A)` +1 for the class asked ("female?") and -1 for
      the others, times -1 for a question asked the other way round ("Can ADHD be ruled out?", "younger
      than 40?"; `signs`, bag-of-words classifiers). With `config.evidence_paradigms` (P > 1), `out`
      has one block of A columns per paradigm and reads `p_k * w * s * (z - t)` in block k, `p` `(B, P)`
      the question's paradigm (`paradigm_weights`, a bag-of-words classifier), so "Yes"/"No" and
      "ADHD"/"Control" get their own columns. These question maps (`QUESTION_MAPS`) are initialised by
      closed-form fits before stage 1 and trained by their own losses.
      A row with two graphs (a comparison) reads `(z_first - z_second) / 2` on both instead of `z - t`
      (`pair_difference`), so "which is older, the first or the second?" gets the difference between them.

    Where the evidence goes (`config.evidence_position`): ``"graph"`` adds it to every token of its graph;
    ``"answer"`` leaves the graph tokens as projected and returns it per row (the mean over the row's graphs)
    for `FCNLLMForCausalLM` to add to the last hidden state where the answer starts, so the answer words'
    logits move linearly with it.

    `out` starts at zero, so a new model equals the plain LLaVA splice (before stage 1,
    the training code fits the thresholds and signs and writes the heads' judgment columns
    in the answers' word embeddings).
    """

    # parameter-name prefixes of the question maps: the router, the class signs, the turn and paradigm classifiers
    QUESTION_MAPS = ("router", "sign_", "turn_", "paradigm_")
    # the paradigms whose questions can be asked the other way round ("Can ADHD be ruled out?", "which is younger?")
    TURNABLE_PARADIGMS = ("judgment", "comparative")

    def __init__(self, config: FCNLLMConfig):
        super().__init__()
        width = config.text_config.hidden_size
        self.reads_attributes = config.instruction_evidence == "attributes"
        self.word_ids = None  # with "attributes": the answer words per head (`answer_word_table`)
        self.at_answer = config.evidence_position == "answer"
        self.graph_len = config.graph_seq_length
        if self.reads_attributes:
            self.head_sizes = [head.num_outputs for head in config.auxiliary_heads]
            # no gain or bias: every question map below reads the same features after stage 1 as when fitted
            self.router_norm = nn.LayerNorm(width, elementwise_affine=False)
            self.router = nn.Linear(width, len(self.head_sizes))
            # standardises each head output over subjects (running statistics, set by `calibrate`), so `out`
            # learns from how a subject differs from others, not from the outputs' common offset
            self.evidence_norm = nn.BatchNorm1d(sum(self.head_sizes), affine=False)
            # The question maps below (signs, turns, paradigms) read the router's features. Each is initialised by a
            # closed-form fit on the training questions before stage 1 and then trained by its own supervised loss
            # (`FCNLLMForCausalLM.forward`: `sign_labels`, `turn_labels`, `paradigm_labels`), as the router by
            # `routing_labels`; the evidence reads them detached, so the answer loss never moves them (it would let
            # them drift to whatever helps an answer, as it did the router).
            # Without numbers read as numbers (`numeral_tokens` None, an ablation), the threshold a judgment names
            # ("older than 30?"), per head output in the standardised units: a linear map of the router's bag of
            # words, fitted in closed form before stage 1 (buffers; zero when numbers are read)
            self.register_buffer("threshold_weight", torch.zeros(sum(self.head_sizes), width))
            self.register_buffer("threshold_bias", torch.zeros(sum(self.head_sizes)))
            # with `config.numeral_tokens`, the threshold is the number the question spells, read as a number `v`:
            # `threshold_scale * v + threshold_offset` per head output, the exact conversion of a continuous head's
            # units into the evidence's (set by `calibrate`; buffers: arithmetic, never trained), and the map
            # above is not trained
            self.numerals = {int(token): text for token, text in (config.numeral_tokens or {}).items()}
            # the tokens an estimate is written with: digits and "." that start no word, then the end of the answer
            self.digit_ids = {text: token for token, text in self.numerals.items() if len(text) == 1}
            self.answer_end_id = config.answer_end_id
            self.head_specs = list(config.auxiliary_heads)
            # a categorical head's outputs (class logits) are read as each class's log-odds log p_k - log(1 - p_k) and
            # scaled but not centred by `calibrate`, so the evidence keeps the class prior ("left-handed?": "No" for
            # most subjects) and a class judgment's "Yes" means p_k > 0.5
            starts = list(itertools.accumulate(self.head_sizes, initial=0))
            self.categorical_slices = [(int(starts[j]), int(starts[j + 1])) for j, h in enumerate(config.auxiliary_heads)
                                       if h.kind == "categorical"]
            self.head_units = [(h.mean, h.std, h.kind == "continuous")
                               for h in config.auxiliary_heads for _ in range(h.num_outputs)]
            self.register_buffer("threshold_scale", torch.zeros(sum(self.head_sizes)))
            self.register_buffer("threshold_offset", torch.zeros(sum(self.head_sizes)))
            # which way a question asks about each head output: +1 as it is (binary, continuous, the asked class), -1 for
            # another class of its head ("female?" reads the sex head's Female output up and its Male output down); a
            # linear map of the same bag of words, +1 until fitted
            self.sign_weight = nn.Parameter(torch.zeros(sum(self.head_sizes), width))
            self.sign_bias = nn.Parameter(torch.ones(sum(self.head_sizes)))
            # whether a question asks the other way round ("Can ADHD be ruled out?", "younger than 40?"), for every
            # head alike: a logistic classifier of the same features; plain until fitted
            self.turn_weight = nn.Parameter(torch.zeros(width))
            self.turn_bias = nn.Parameter(torch.full((), PLAIN_LOGIT))
            # which paradigm a question is (judgment, predictive, ...): a classifier of the same features; uniform
            # until fitted
            self.paradigms = list(config.evidence_paradigms or [])
            if len(self.paradigms) > 1:
                self.paradigm_weight = nn.Parameter(torch.zeros(len(self.paradigms), width))
                self.paradigm_bias = nn.Parameter(torch.zeros(len(self.paradigms)))
            self.out = nn.Linear(sum(self.head_sizes) * max(1, len(self.paradigms)), width)
            # per head, its answer words' tokens then `answer_end_id` `(num_heads, C, T)`, -1 padded (`plan_words`): a CPU
            # tensor derived from the config, neither a parameter nor a buffer (from_pretrained would leave a buffer
            # that no checkpoint holds uninitialised)
            self.word_ids = self.answer_word_table(config)
        else:
            rank = config.instruction_rank
            self.query = nn.Parameter(torch.zeros(width))
            self.instruction_proj = nn.Linear(width, rank)
            self.graph_norm = nn.LayerNorm(width)
            self.graph_proj = nn.Linear(width, rank)
            self.out = nn.Linear(rank, width)
        self.out.starts_at_zero = True
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if not self.reads_attributes:
            nn.init.zeros_(self.query)
        else:
            self.threshold_weight.zero_()
            self.threshold_bias.zero_()
            self.threshold_scale.zero_()
            self.threshold_offset.zero_()
            self.sign_weight.zero_()
            self.sign_bias.fill_(1.0)
            self.turn_weight.zero_()
            self.turn_bias.fill_(PLAIN_LOGIT)
            if len(self.paradigms) > 1:
                self.paradigm_weight.zero_()
                self.paradigm_bias.zero_()
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def pool_question(self, word_embeds: torch.Tensor, instruction_mask: torch.Tensor) -> torch.Tensor:
        """`(B, L, D)` embeddings, `(B, L)` mask -> `(B, D)` attention-pooled instruction (zeros if none)."""
        scores = (word_embeds @ self.query.to(word_embeds.dtype)) / word_embeds.shape[-1] ** 0.5
        scores = scores.float().masked_fill(~instruction_mask, float("-inf"))
        weights = torch.nan_to_num(scores.softmax(-1)).to(word_embeds.dtype)  # a row without instruction -> zeros
        return torch.einsum("bl,bld->bd", weights, word_embeds)

    def read_outputs(self, attribute_outputs: torch.Tensor) -> torch.Tensor:
        """`(num_graphs, A)` head outputs as the evidence reads them (float32): categorical heads' class logits as the
        classes' log-odds, every other output as it is."""
        read = attribute_outputs.float()
        if not self.categorical_slices:
            return read
        read = read.clone()
        for start, end in self.categorical_slices:
            log_p = read[:, start:end].log_softmax(-1)
            read[:, start:end] = log_p - torch.log1p(-log_p.exp().clamp(max=1 - 1e-6))
        return read

    def standardise(self, attribute_outputs: torch.Tensor) -> torch.Tensor:
        """`(num_graphs, A)` head outputs as read (`read_outputs`), standardised by the running statistics that
        `calibrate` set (float32), whatever the module's training mode."""
        norm = self.evidence_norm
        return F.batch_norm(self.read_outputs(attribute_outputs), norm.running_mean.float(), norm.running_var.float(),
                            training=False, eps=norm.eps)

    @torch.no_grad()
    def calibrate(self, attribute_outputs: torch.Tensor) -> None:
        """Set the evidence standardisation to the mean and variance of `attribute_outputs` `(S, A)` as read
        (`read_outputs`; categorical outputs scaled only, their mean left at zero), and (when
        numbers are read) each continuous output's threshold map to the number's value in those units: the
        number in the head's target units `(v - mean) / std`, standardised like the output."""
        if not self.reads_attributes:
            return
        read = self.read_outputs(attribute_outputs)
        mean, var = read.mean(0), read.var(0)
        for start, end in self.categorical_slices:
            mean[start:end] = 0.0
        self.evidence_norm.running_mean.copy_(mean)
        self.evidence_norm.running_var.copy_(var)
        if self.numerals:
            spread = (var + self.evidence_norm.eps).sqrt()
            for k, (unit_mean, unit_std, continuous) in enumerate(self.head_units):
                self.threshold_scale[k] = 1.0 / (unit_std * spread[k]) if continuous else 0.0
                self.threshold_offset[k] = -(unit_mean / unit_std + mean[k]) / spread[k] if continuous else 0.0

    def question_numbers(self, input_ids: torch.Tensor, instruction_mask: torch.Tensor,
                         placeholder_mask: torch.Tensor) -> torch.Tensor:
        """The number each question names, `(B, L)` ids and masks -> `(B,)` (NaN where it names none).

        Read from `config.numeral_tokens` in the instruction tokens after the row's last graph (the question
        of "<graph> Is this subject older than 37?"), or before its graph when a single graph ends the
        question; the first number there counts ("27.5": digits, one decimal point, digits).
        """
        numbers = torch.full((input_ids.shape[0],), float("nan"))
        if not self.numerals:
            return numbers.to(input_ids.device)
        for row, (ids, readable, graphs) in enumerate(zip(input_ids.tolist(), instruction_mask.tolist(),
                                                          placeholder_mask.tolist())):
            at = [i for i, is_graph in enumerate(graphs) if is_graph]
            after = [t for i, (t, ok) in enumerate(zip(ids, readable)) if ok and (not at or i > at[-1])]
            number = self._first_number(after)
            if number is None and at and len(at) == self.graph_len:
                number = self._first_number([t for i, (t, ok) in enumerate(zip(ids, readable)) if ok and i < at[0]])
            if number is not None:
                numbers[row] = number
        return numbers.to(input_ids.device)

    def _first_number(self, token_ids: list[int]) -> float | None:
        """The first number `token_ids` spell (None if none)."""
        text = ""
        for token_id in token_ids:
            piece = self.numerals.get(token_id)
            starts_word = piece is not None and piece.startswith(" ")
            if piece is None or (text and starts_word) or (piece == "." and (not text or "." in text)):
                if text:
                    break
                continue
            text += piece.strip()
        text = text.rstrip(".")
        return float(text) if text else None

    def routing_features(self, word_embeds: torch.Tensor, instruction_mask: torch.Tensor) -> torch.Tensor:
        """`(B, L, D)` embeddings, `(B, L)` mask -> `(B, D)` sum of the instruction tokens' layer-normed embeddings."""
        normed = self.router_norm(word_embeds).float()
        return (normed * instruction_mask[..., None].to(normed.dtype)).sum(1)

    def route(self, word_embeds: torch.Tensor, instruction_mask: torch.Tensor) -> torch.Tensor:
        """Which attribute the instruction asks about: `(B, L, D)`, `(B, L)` -> logits `(B, num_heads)`.

        A bag-of-words linear classifier: `router` applied to the sum of the instruction tokens'
        layer-normed embeddings, i.e. every token's head scores summed. Tokens that every question
        shares add the same amount to every question, so the words that name the attribute decide.
        (A log-sum-exp over per-token scores would let the shared "?" and "." decide; a mean would dilute
        the attribute's word.) The training code fits it in closed form before stage 1.
        Rows without instruction tokens get zero logits (uniform).
        """
        return self.route_features(self.routing_features(word_embeds, instruction_mask), instruction_mask)

    def route_features(self, features: torch.Tensor, instruction_mask: torch.Tensor) -> torch.Tensor:
        """`route` on precomputed `routing_features` `(B, D)` -> logits `(B, num_heads)`."""
        return self.router(features.to(self.router.weight.dtype)).float() * instruction_mask.any(1, keepdim=True)

    def thresholds(self, word_embeds: torch.Tensor, instruction_mask: torch.Tensor) -> torch.Tensor:
        """The threshold the instruction names per head output, standardised: `(B, L, D)`, `(B, L)` -> `(B, A)`."""
        return self.threshold_features(self.routing_features(word_embeds, instruction_mask))

    def threshold_features(self, features: torch.Tensor, numbers: torch.Tensor | None = None) -> torch.Tensor:
        """`thresholds` on precomputed `routing_features` `(B, D)`: `threshold_weight` `(A, D)` and
        `threshold_bias` `(A,)` applied to them (zero until fitted), plus, for questions that name a number
        (`numbers` `(B,)`, NaN: none; `question_numbers`), `threshold_scale * number + threshold_offset` -> `(B, A)`."""
        thresholds = F.linear(features.to(self.threshold_weight.dtype), self.threshold_weight, self.threshold_bias).float()
        if numbers is None:
            return thresholds
        named = ~torch.isnan(numbers)
        value = torch.where(named, numbers, torch.zeros_like(numbers)).float()[:, None]
        read = value * self.threshold_scale.float() + self.threshold_offset.float()
        return thresholds + named[:, None].float() * read

    def class_signs(self, features: torch.Tensor) -> torch.Tensor:
        """The class each question asks about, on precomputed `routing_features` `(B, D)` -> `(B, A)` (`sign_weight`,
        `sign_bias`: +1 for the asked class's output, -1 for its head's other classes, +1 where no class is asked)."""
        return F.linear(features.to(self.sign_weight.dtype), self.sign_weight, self.sign_bias).float()

    def turn_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Whether each question asks the other way round ("Can ADHD be ruled out?", "younger than 40?"), on
        precomputed `routing_features` `(B, D)` -> logits `(B,)` (`turn_weight`, `turn_bias`)."""
        return features.float() @ self.turn_weight.float() + self.turn_bias.float()

    def signs(self, features: torch.Tensor) -> torch.Tensor:
        """Which way each question asks about each head output, on precomputed `routing_features` `(B, D)` ->
        `(B, A)`: `class_signs` times `1 - 2 P(turned)` (`turn_logits`), +1 until fitted. With a paradigm classifier,
        P(turned) counts only as far as the question is a judgment or a comparison (`TURNABLE_PARADIGMS`): a
        predictive question has no direction, and the turn classifier never learns one for it."""
        turned = torch.sigmoid(self.turn_logits(features))
        turnable = [k for k, paradigm in enumerate(self.paradigms) if paradigm in self.TURNABLE_PARADIGMS]
        if len(self.paradigms) > 1:
            turned = turned * self.paradigm_weights(features)[:, turnable].sum(-1)
        return (1.0 - 2.0 * turned)[:, None] * self.class_signs(features)

    def paradigm_logits(self, features: torch.Tensor) -> torch.Tensor | None:
        """Which paradigm each question is, on precomputed `routing_features` `(B, D)` -> logits `(B, P)` (None
        with one shared readout)."""
        if len(self.paradigms) <= 1:
            return None
        return F.linear(features.to(self.paradigm_weight.dtype), self.paradigm_weight, self.paradigm_bias).float()

    def paradigm_weights(self, features: torch.Tensor) -> torch.Tensor:
        """Which paradigm each question is, on precomputed `routing_features` `(B, D)` -> softmax weights `(B, P)`
        (`(B, 1)` ones with one shared readout)."""
        logits = self.paradigm_logits(features)
        return features.new_ones(features.shape[0], 1, dtype=torch.float32) if logits is None else logits.softmax(-1)

    @staticmethod
    def pair_difference(standard: torch.Tensor, graph_rows: torch.Tensor, batch_size: int) -> torch.Tensor:
        """For the graphs of rows that hold two (a comparison): `(z_first - z_second) / 2` on both graphs, so both
        carry "the first scores higher" the same way; NaN for the graphs of other rows. `standard` `(num_graphs,
        A)`, `graph_rows` `(num_graphs,)` in placeholder order -> `(num_graphs, A)`."""
        counts = torch.bincount(graph_rows, minlength=batch_size)
        first = torch.ones_like(graph_rows, dtype=torch.bool)
        first[1:] = graph_rows[1:] != graph_rows[:-1]
        row_mean = standard.new_zeros(batch_size, standard.shape[1]).index_add_(0, graph_rows, standard)
        row_mean = row_mean / counts.clamp(min=1)[:, None].to(standard.dtype)
        order = torch.where(first, 1.0, -1.0).to(standard.dtype)[:, None]
        paired = (counts[graph_rows] == 2)[:, None]
        return torch.where(paired, order * (standard - row_mean[graph_rows]), torch.full_like(standard, float("nan")))

    def writes_numbers(self) -> bool:
        """Whether estimates can be written: answer-position evidence, digit tokens, a predictive paradigm of its
        own and a continuous head."""
        return (self.reads_attributes and self.at_answer and len(self.digit_ids) >= 10 and "predictive" in self.paradigms
                and any(spec.kind == "continuous" for spec in self.head_specs))

    def estimate_text(self, head: int, output: float) -> str:
        """Continuous head `head`'s standardised `output` as the answer writes it: in its units, clipped to its
        `valid_range`, rounded to its `decimals`."""
        spec = self.head_specs[head]
        value = output * spec.std + spec.mean
        if spec.valid_range is not None:
            value = min(max(value, spec.valid_range[0]), spec.valid_range[1])
        return f"{round(value, spec.decimals):.{spec.decimals}f}"

    @torch.no_grad()
    def plan_numbers(self, attribute_outputs: torch.Tensor, routing_logits: torch.Tensor, features: torch.Tensor,
                     graph_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What each row's answer writes if it is a number: the estimate of the head the router weighs most, as
        tokens, where that head is continuous. `attribute_outputs` `(num_graphs, A)`, `routing_logits` `(B, num_heads)`, `features` `(B, D)`
        (`routing_features`), `graph_rows` `(num_graphs,)` -> `plan` `(B, P)` token ids (the estimate's digits, then
        `answer_end_id`; -1 after) and `gate` `(B,)`: P(predictive) x that head's routing weight (0 where the head
        is not continuous, and for rows without exactly one graph)."""
        batch_size = routing_logits.shape[0]
        routing = routing_logits.float().softmax(-1)
        continuous = torch.tensor([spec.kind == "continuous" for spec in self.head_specs], device=routing.device)
        head = routing.argmax(-1)  # (B,) the attribute asked about; a number only where it is continuous
        predictive = self.paradigm_weights(features)[:, self.paradigms.index("predictive")]
        gate = predictive * routing.gather(1, head[:, None])[:, 0] * continuous[head]
        counts = torch.bincount(graph_rows, minlength=batch_size)
        gate = torch.where(counts == 1, gate, torch.zeros_like(gate))
        starts = [0, *itertools.accumulate(self.head_sizes)]  # each head's first output column
        graph_of = {row: g for g, row in enumerate(graph_rows.tolist())}
        plans = []
        for row in range(batch_size):
            tokens = []
            if row in graph_of and counts[row] == 1:
                j = int(head[row])
                text = self.estimate_text(j, float(attribute_outputs[graph_of[row], starts[j]]))
                tokens = [self.digit_ids[ch] for ch in text if ch in self.digit_ids]
                tokens += [self.answer_end_id] if self.answer_end_id is not None else []
            plans.append(tokens)
        width = max(1, max(len(tokens) for tokens in plans))
        plan = torch.full((batch_size, width), -1, dtype=torch.long, device=routing.device)
        for row, tokens in enumerate(plans):
            plan[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        return plan, gate

    @staticmethod
    def answer_word_table(config: FCNLLMConfig) -> torch.Tensor | None:
        """`config.class_answer_ids` as `(num_heads, C, T)` token ids per head and answer word, each word followed by
        `config.answer_end_id` (when set), -1 padded (a head without words: all -1); None without words."""
        if not config.class_answer_ids:
            return None
        end = [] if config.answer_end_id is None else [config.answer_end_id]
        words = [[list(w) + end for w in config.class_answer_ids.get(head.key, [])] for head in config.auxiliary_heads]
        table = torch.full((len(words), max(1, max(map(len, words))), max(len(w) for ws in words for w in ws)), -1,
                           device="cpu")
        for j, head_words in enumerate(words):
            for c, word in enumerate(head_words):
                table[j, c, : len(word)] = torch.tensor(word, device="cpu")
        return table

    @torch.no_grad()
    def plan_words(self, routing_logits: torch.Tensor, features: torch.Tensor,
                   graph_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The answer words of the head each row is routed to (largest routing weight), for writing them whole:
        `routing_logits` `(B, num_heads)`, `features` `(B, D)` (`routing_features`), `graph_rows` `(num_graphs,)` ->
        `plan` `(B, C, T)` token ids (`word_ids` of that head), `gate` `(B,)` that head's routing weight (0 for rows
        without a graph), with which a begun word is finished, and `start_gate` `(B,)` the gate times P(predictive),
        with which a predictive answer starts with one of the words (0 without a predictive readout of its own)."""
        routing = routing_logits.float().softmax(-1)
        head = routing.argmax(-1)
        with_graph = torch.bincount(graph_rows, minlength=routing.shape[0]).gt(0)
        gate = torch.where(with_graph, routing.gather(1, head[:, None])[:, 0], torch.zeros_like(routing[:, 0]))
        start_gate = torch.zeros_like(gate)
        if len(self.paradigms) > 1 and "predictive" in self.paradigms:
            start_gate = gate * self.paradigm_weights(features)[:, self.paradigms.index("predictive")]
        return self.word_ids.to(head.device)[head], gate, start_gate

    @torch.no_grad()
    def answer_basis(self, routing_logits: torch.Tensor, features: torch.Tensor, graph_rows: torch.Tensor) -> torch.Tensor:
        """Per row, an orthonormal basis of the readout columns its answer reads: the columns of `out` for the
        outputs of the head the router weighs most, in the paradigm the question most likely is (one readout:
        its only block). `routing_logits` `(B, num_heads)`, `features` `(B, D)` (`routing_features`), `graph_rows`
        `(num_graphs,)` -> `(B, D, r)`, r the largest head's output count; zero columns past a row's rank, and
        for rows without a graph."""
        batch_size, width = routing_logits.shape[0], self.out.weight.shape[0]
        weight = self.out.weight.detach().float()  # (D, P * A)
        starts = [0, *itertools.accumulate(self.head_sizes)]
        heads = routing_logits.argmax(-1).tolist()
        blocks = (self.paradigm_weights(features).argmax(-1) * starts[-1]).tolist()
        with_graph = torch.bincount(graph_rows, minlength=batch_size).gt(0).tolist()
        basis = weight.new_zeros(batch_size, width, max(self.head_sizes))
        for row in range(batch_size):
            if not with_graph[row]:
                continue
            columns = weight[:, blocks[row] + starts[heads[row]]: blocks[row] + starts[heads[row] + 1]]
            vectors, values, _ = torch.linalg.svd(columns, full_matrices=False)
            rank = int((values > values.max().clamp(min=1e-12) * 1e-4).sum()) if values.max() > 0 else 0
            basis[row, :, :rank] = vectors[:, :rank]
        return basis

    def evidence_column(self, output: int, paradigm: str | None = None) -> int:
        """The column of `out` that reads head output `output` (of A) in questions of `paradigm` (ignored, and
        may be None, with one shared readout)."""
        if len(self.paradigms) <= 1:
            return output
        if paradigm not in self.paradigms:
            raise ValueError(f"No evidence readout for paradigm {paradigm!r}; the model's paradigms: {self.paradigms}.")
        return self.paradigms.index(paradigm) * sum(self.head_sizes) + output

    def forward(
        self,
        graph_features: torch.Tensor,
        word_embeds: torch.Tensor,
        instruction_mask: torch.Tensor,
        graph_rows: torch.Tensor,
        attribute_outputs: torch.Tensor | None = None,
        numbers: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Args:
        graph_features: `(num_graphs, G, D)` projected graph tokens.
        word_embeds: `(B, L, D)` the text's input embeddings.
        instruction_mask: `(B, L)` True on the instruction's tokens (no graph, answer or padding tokens).
        graph_rows: `(num_graphs,)` the batch row each graph belongs to.
        attribute_outputs: `(num_graphs, A)` the attribute heads' outputs (needed with `"attributes"`).
        numbers: `(B,)` the number each question names (NaN: none; `question_numbers`), read as its threshold.
        features: `(B, D)` `routing_features` of these embeddings, if the caller has them (computed here otherwise).
        Returns: `graph_features` with the evidence added (see the class docstring; as given with
        `evidence_position="answer"`), the router's logits `(B, num_heads)` (None with `"tokens"`) and the
        evidence per row `(B, D)` for the answer position (None unless `evidence_position="answer"`).
        """
        embeds = word_embeds.to(graph_features.dtype)
        if self.reads_attributes:
            if attribute_outputs is None:
                raise ValueError("instruction_evidence='attributes' needs the attribute heads' outputs.")
            if features is None:  # the router and the thresholds read it
                features = self.routing_features(embeds, instruction_mask)
            routing_logits = self.route_features(features, instruction_mask)
            sizes = torch.tensor(self.head_sizes, device=embeds.device)
            # the router learns from the routing loss only: the answer loss would route a question to any head
            # that helps its answer
            weights = routing_logits.detach().float().softmax(-1)[graph_rows].repeat_interleave(sizes, dim=-1)  # (num_graphs, A)
            standard = self.standardise(attribute_outputs)
            compared = self.pair_difference(standard, graph_rows, embeds.shape[0])
            named = standard - self.threshold_features(features, numbers)[graph_rows]
            # the question maps learn from their own losses only (see __init__)
            asked = self.signs(features).detach()[graph_rows] * torch.where(compared.isnan(), named, compared)
            relative = weights * asked  # (num_graphs, A)
            paradigm = self.paradigm_weights(features).detach()[graph_rows]  # (num_graphs, P)
            evidence = self.out((paradigm[:, :, None] * relative[:, None, :]).flatten(1).to(graph_features.dtype))
            if self.at_answer:
                batch_size = embeds.shape[0]
                counts = torch.bincount(graph_rows, minlength=batch_size).clamp(min=1)[:, None].to(evidence.dtype)
                per_row = evidence.new_zeros(batch_size, evidence.shape[-1]).index_add_(0, graph_rows, evidence)
                return graph_features, routing_logits, per_row / counts
            # on every graph token (on the last one only, the stage-1 learning curve gave 0.550 instead of 0.586)
            return graph_features + evidence[:, None, :], routing_logits, None
        pooled = self.graph_norm(graph_features).mean(1)
        question = self.pool_question(embeds, instruction_mask)
        evidence = self.out(self.instruction_proj(question[graph_rows]) * self.graph_proj(pooled))
        last = torch.zeros_like(graph_features)
        last[:, -1] = evidence
        return graph_features + last, None, None


class GraphAttributeHeads(nn.Module):
    """Attribute heads on an encoder output -> outputs `(num_graphs, A)`.

    Each attribute's output is the sum of two linear maps:
    - a *token* head on the encoder's flattened layer-normed graph tokens `(num_graphs, G * H)`;
    - a *network-level* path on the standardised upper triangle of the network-level FCN
      `(num_graphs, K(K+1)/2)` (`network_mean` / `network_std` buffers), zero in a new model.
    Stage 0 (`FCNEncoderForAttributePrediction`) trains the encoder with the token heads, then replaces
    both maps by a cross-validated linear stack of [network-level FCN, token outputs] fitted in closed
    form. A = the sum of the specs' `num_outputs` (a logit for binary, class logits for categorical, a
    standardised value for continuous attributes). Stage 1 starts from stage 0's heads, and the evidence
    token can read their outputs (`instruction_evidence="attributes"`). Labels `(num_graphs, len(specs))`
    hold a 0/1 value, a class index or a standardised value per head, NaN where unknown.
    """

    def __init__(self, specs: list[AttributeHeadConfig | dict], num_tokens: int, hidden_size: int,
                 num_networks: int = 1, dropout: float = 0.1):
        super().__init__()
        self.specs = [AttributeHeadConfig.from_dict(spec) for spec in specs]
        self.norm = nn.LayerNorm(hidden_size)
        self.dropout = nn.Dropout(dropout)
        width = num_tokens * hidden_size
        self.heads = nn.ModuleDict({spec.key: nn.Linear(width, spec.num_outputs) for spec in self.specs})
        self.num_network_features = num_networks * (num_networks + 1) // 2
        self.register_buffer("network_mean", torch.zeros(self.num_network_features))
        self.register_buffer("network_std", torch.ones(self.num_network_features))
        self.network_heads = nn.ModuleDict(
            {spec.key: nn.Linear(self.num_network_features, spec.num_outputs) for spec in self.specs})
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The network path starts silent (zero) until stage 0 fits the stack; the standardisation is the identity."""
        for head in self.network_heads.values():
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.network_mean.zero_()
        self.network_std.fill_(1.0)

    @classmethod
    def from_config(cls, config: FCNLLMConfig) -> "GraphAttributeHeads":
        """The composite's heads: `config.auxiliary_heads` on `config.encoder_config`'s tokens."""
        return cls.for_encoder(config.auxiliary_heads, config.encoder_config)

    @classmethod
    def for_encoder(cls, specs: list[AttributeHeadConfig | dict], config: FCNEncoderConfig) -> "GraphAttributeHeads":
        """Heads `specs` on the tokens of an encoder of `config` (G tokens of size H, K subnetworks)."""
        return cls(specs, config.graph_seq_length, config.hidden_size, config.num_networks)

    def network_features(self, network_connectivity: torch.Tensor) -> torch.Tensor:
        """`(num_graphs, K, K)` network-level FCNs -> `(num_graphs, K(K+1)/2)` upper triangles (diagonal kept), raw."""
        k = network_connectivity.shape[-1]
        if k * (k + 1) // 2 != self.num_network_features:
            raise ValueError(f"The heads expect a network-level FCN of {self.num_network_features} values, got "
                             f"{k} x {k}: heads and encoder disagree on the number of subnetworks.")
        rows, cols = torch.triu_indices(k, k, device=network_connectivity.device)
        return network_connectivity[:, rows, cols]

    def forward(self, encoded: FCNEncoderOutput) -> torch.Tensor:
        """`encoded`: an `FCNEncoderOutput` with `graph_tokens` `(num_graphs, G, H)` and `network_connectivity`
        `(num_graphs, K, K)` -> `(num_graphs, A)`."""
        if encoded.network_connectivity is None:
            raise ValueError("GraphAttributeHeads need the encoder output's network_connectivity.")
        flat = self.dropout(self.norm(encoded.graph_tokens).flatten(1))
        features = self.network_features(encoded.network_connectivity).to(self.network_mean.dtype)
        standard = ((features - self.network_mean) / self.network_std).to(flat.dtype)
        return torch.cat([head(flat) + self.network_heads[key](standard) for key, head in self.heads.items()], dim=-1)

    def split(self, outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """`(num_graphs, A)` outputs -> per attribute key `(num_graphs, num_outputs)`."""
        sizes = [spec.num_outputs for spec in self.specs]
        return dict(zip(self.heads.keys(), outputs.split(sizes, dim=-1)))

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean over heads with known labels of each head's mean loss; `outputs` `(num_graphs, A)` from `forward`."""
        if labels.shape != (outputs.shape[0], len(self.specs)):
            raise ValueError(
                f"graph_attribute_labels must have shape (num_graphs, {len(self.specs)}), got {tuple(labels.shape)}."
            )
        losses = []
        for j, (spec, out) in enumerate(zip(self.specs, self.split(outputs).values())):
            known = ~torch.isnan(labels[:, j])
            if not known.any():
                continue
            y, out = labels[known, j], out[known].float()
            if spec.kind == "binary":
                losses.append(F.binary_cross_entropy_with_logits(out[:, 0], y))
            elif spec.kind == "categorical":
                losses.append(F.cross_entropy(out, y.long()))
            else:
                losses.append(F.mse_loss(out[:, 0], y))
        return torch.stack(losses).mean() if losses else outputs.sum() * 0.0


class FCNEncoderForAttributePrediction(FCNEncoderPreTrainedModel):
    """The FCN encoder with attribute heads (`config.attribute_heads`): stage 0's model.

    FCNs `(num_graphs, N, N)` -> `FCNEncoderModel` -> `GraphAttributeHeads` -> outputs `(num_graphs, A)`;
    with `labels` `(num_graphs, len(config.attribute_heads))` (NaN = unknown) also the heads' loss.
    `encoder` and `attribute_heads` are what `FCNLLMModel`'s `graph_encoder` and `graph_attribute_heads`
    start from.
    """

    def __init__(self, config: FCNEncoderConfig):
        super().__init__(config)
        if not config.attribute_heads:
            raise ValueError("FCNEncoderForAttributePrediction needs config.attribute_heads (at least one head).")
        self.encoder = FCNEncoderModel(config)
        self.attribute_heads = GraphAttributeHeads.for_encoder(config.attribute_heads, config)
        self.post_init()

    @can_return_tuple
    def forward(self, graph_values: torch.Tensor, labels: torch.Tensor | None = None,
                **kwargs) -> FCNAttributePredictionOutput:
        """`graph_values` `(num_graphs, N, N)`, `labels` `(num_graphs, len(heads))` or None."""
        encoded = self.encoder(graph_values)
        outputs = self.attribute_heads(encoded)
        loss = None if labels is None else self.attribute_heads.loss(outputs, labels.to(outputs.device))
        return FCNAttributePredictionOutput(loss=loss, attribute_outputs=outputs, graph_tokens=encoded.graph_tokens,
                                            network_connectivity=encoded.network_connectivity)


class FCNLLMPreTrainedModel(PreTrainedModel):
    config_class = FCNLLMConfig
    config: FCNLLMConfig
    base_model_prefix = "model"
    input_modalities = ("graph", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, (InstructionConditioning, GraphAttributeHeads)):
            module.reset_parameters()
        if getattr(module, "starts_at_zero", False):
            # transformers initialises a remote-code module without parameters of its own through its children
            # only, and weights missing from a checkpoint the same way: a Linear that must start silent says so
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save weights (safetensors), config and code; `auto_map` names both model classes, so a saved
        `FCNLLMForCausalLM` also loads with `AutoModel` (and the reverse) under `trust_remote_code`."""
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        for auto_class, cls in (("AutoModel", FCNLLMModel), ("AutoModelForCausalLM", FCNLLMForCausalLM)):
            auto_map.setdefault(auto_class, f"{cls.__module__.split('.')[-1]}.{cls.__name__}")
        self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)


class FCNLLMModel(FCNLLMPreTrainedModel):
    """FCN encoder + projector + a causal LM's decoder (no LM head)."""

    def __init__(self, config: FCNLLMConfig):
        super().__init__(config)
        # as remote code the config and the model code are separate modules, each with its own
        # FCNEncoderConfig class: the encoder is registered for the class this config has
        AutoModel.register(type(config.encoder_config), FCNEncoderModel, exist_ok=True)
        self.graph_encoder = AutoModel.from_config(config.encoder_config)
        self.graph_projector = FCNProjector(config)
        self.instruction_conditioning = InstructionConditioning(config) if config.instruction_conditioning else None
        self.graph_attribute_heads = GraphAttributeHeads.from_config(config) if config.auxiliary_heads else None
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_graph_features(self, graph_values: torch.Tensor) -> tuple[torch.Tensor, FCNEncoderOutput]:
        """Projected graph tokens `(num_graphs, G, D)` of FCNs `(num_graphs, N, N)`, and the encoder output."""
        check_graph_values(graph_values, self.config.encoder_config.num_rois)
        encoder_dtype = self.graph_projector.linear_1.weight.dtype
        encoded = self.graph_encoder(graph_values.to(encoder_dtype))
        return self.graph_projector(encoded.graph_tokens), encoded

    def get_attribute_outputs(self, encoded: FCNEncoderOutput) -> torch.Tensor | None:
        """`(num_graphs, A)` the attribute heads' outputs on the encoder's tokens; None without heads."""
        return None if self.graph_attribute_heads is None else self.graph_attribute_heads(encoded)

    def get_placeholder_mask(self, input_ids: torch.Tensor, num_graphs: int) -> torch.Tensor:
        """Boolean `(B, L)` mask of `<graph>` tokens; raises if their count is not `num_graphs * G`."""
        mask = input_ids == self.config.graph_token_id
        num_placeholders = int(mask.sum())
        graph_len = self.config.graph_seq_length
        if num_placeholders != num_graphs * graph_len:
            raise ValueError(
                f"Graph features and <graph> tokens do not match: input_ids hold {num_placeholders} <graph> tokens "
                f"({num_placeholders / graph_len:g} graphs of G={graph_len} tokens) but {num_graphs} graph(s) were "
                f"given ({num_graphs * graph_len} tokens). Use FCNProcessor to expand each <graph> to G tokens."
            )
        return mask

    def condition_on_instruction(
        self,
        graph_features: torch.Tensor,
        inputs_embeds: torch.Tensor,
        placeholder_mask: torch.Tensor,
        attention_mask: torch.Tensor | None,
        instruction_mask: torch.Tensor | None,
        attribute_outputs: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """What instruction conditioning makes of a batch: `graph_features` `(num_graphs, G, D)` with each graph's
        question-aware evidence added; with `instruction_evidence="attributes"` (else None) how it read the
        questions: `instruction_routing_logits` `(B, num_heads)`, `paradigm_logits` `(B, P)` (None with one
        readout), `turn_logits` `(B,)` and `class_signs` `(B, A)`; `answer_evidence` `(B, D)` for the answer
        position (None unless `evidence_position="answer"`); and `number_plan` `(B, P')`, `number_gate` `(B,)`, the
        estimates the answers would write (`InstructionConditioning.plan_numbers`; at inference with
        `config.number_writing_bias` > 0 only, else None); `word_plan` `(B, C, T)`, `word_gate` `(B,)` likewise, the
        answer words of each row's routed head (`InstructionConditioning.plan_words`; with `config.class_answer_ids`);
        `answer_basis` `(B, D, r)` (with
        `config.evidence_decides_answer`, `InstructionConditioning.answer_basis`, else None).

        `attribute_outputs` `(num_graphs, A)`: the attribute heads' outputs on these graphs' encoder tokens
        (needed when the evidence reads them). `input_ids` `(B, L)`: where the evidence reads the numbers
        questions name (`config.numeral_tokens`).
        """
        instruction = self.instruction_tokens(placeholder_mask, attention_mask, instruction_mask)
        graph_rows = placeholder_mask.nonzero()[:, 0].view(graph_features.shape[0], -1)[:, 0]
        conditioning = self.instruction_conditioning
        numbers = None
        if conditioning.reads_attributes and conditioning.numerals and input_ids is not None:
            numbers = conditioning.question_numbers(input_ids, instruction, placeholder_mask)
        features = None
        if conditioning.reads_attributes:  # read once, by the evidence and by the question maps' outputs below
            features = conditioning.routing_features(inputs_embeds.to(graph_features.dtype), instruction)
        graph_features, routing_logits, answer_evidence = conditioning(
            graph_features, inputs_embeds, instruction, graph_rows, attribute_outputs, numbers, features)
        out = dict(graph_features=graph_features, instruction_routing_logits=routing_logits, answer_evidence=answer_evidence,
                   answer_basis=None, paradigm_logits=None, turn_logits=None, class_signs=None, number_plan=None,
                   number_gate=None, word_plan=None, word_gate=None, word_start_gate=None)
        if conditioning.reads_attributes:
            out.update(paradigm_logits=conditioning.paradigm_logits(features), turn_logits=conditioning.turn_logits(features),
                       class_signs=conditioning.class_signs(features))
            if answer_evidence is not None and self.config.evidence_decides_answer:
                out["answer_basis"] = conditioning.answer_basis(routing_logits, features, graph_rows)
            if not self.training and self.config.number_writing_bias > 0 and conditioning.writes_numbers():
                out["number_plan"], out["number_gate"] = conditioning.plan_numbers(
                    attribute_outputs, routing_logits, features, graph_rows)
            if (not self.training and self.config.number_writing_bias > 0 and answer_evidence is not None
                    and conditioning.word_ids is not None):
                out["word_plan"], out["word_gate"], out["word_start_gate"] = conditioning.plan_words(
                    routing_logits, features, graph_rows)
        return out

    @staticmethod
    def instruction_tokens(placeholder_mask: torch.Tensor, attention_mask: torch.Tensor | None,
                           instruction_mask: torch.Tensor | None) -> torch.Tensor:
        """`(B, L)` True on the tokens instruction conditioning reads: not a graph token, attended (2-D
        `attention_mask`), and in `instruction_mask` when given (needed with a 4-D attention mask)."""
        instruction = ~placeholder_mask
        if attention_mask is not None and attention_mask.dim() == 2:
            instruction &= attention_mask.bool()
        elif attention_mask is not None and instruction_mask is None:
            raise ValueError("A 4-D attention_mask needs an instruction_mask `(B, L)` for instruction conditioning.")
        if instruction_mask is not None:
            instruction &= instruction_mask.bool()
        return instruction

    @torch.no_grad()
    def routing_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                         instruction_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, D)` what the evidence token's router reads from a batch of prompts `(B, L)` (masks as in `forward`)."""
        if self.instruction_conditioning is None or not self.instruction_conditioning.reads_attributes:
            raise ValueError("routing_features needs instruction_evidence='attributes' (a router over the attribute heads).")
        tokens = self.instruction_tokens(input_ids == self.config.graph_token_id, attention_mask, instruction_mask)
        return self.instruction_conditioning.routing_features(self.get_input_embeddings()(input_ids), tokens)

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        graph_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        instruction_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> FCNLLMModelOutputWithPast:
        """Args:
        input_ids: `(B, L)` token ids with G `<graph>` tokens per FCN.
        graph_values: `(num_graphs, N, N)` FCNs, in order of their placeholders across the batch.
        instruction_mask: `(B, L)` True on the tokens instruction conditioning may read (never the
            answer), on top of the non-graph tokens a 2-D `attention_mask` attends; required with a
            4-D mask (`FCNLLMForCausalLM` leaves labelled tokens out).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Specify exactly one of input_ids or inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        graph_features = attribute_outputs = None
        conditioned = {}
        if graph_values is not None:
            if input_ids is None:
                raise ValueError("graph_values need input_ids to locate the <graph> placeholders.")
            graph_features, encoded = self.get_graph_features(graph_values)
            mask = self.get_placeholder_mask(input_ids, graph_values.shape[0])
            attribute_outputs = self.get_attribute_outputs(encoded)
            if self.instruction_conditioning is not None:
                conditioned = self.condition_on_instruction(
                    graph_features, inputs_embeds, mask, attention_mask, instruction_mask, attribute_outputs, input_ids
                )
                graph_features = conditioned.pop("graph_features")
            flat_features = graph_features.reshape(-1, graph_features.shape[-1]).to(inputs_embeds)
            inputs_embeds = inputs_embeds.masked_scatter(mask.unsqueeze(-1), flat_features)
        elif input_ids is not None and (num := int((input_ids == self.config.graph_token_id).sum())):
            raise ValueError(f"input_ids hold {num} <graph> tokens but no graph_values were given.")

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        return FCNLLMModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            graph_hidden_states=graph_features,
            graph_attribute_outputs=attribute_outputs,
            **conditioned,
        )


class FCNLLMForCausalLM(FCNLLMPreTrainedModel, GenerationMixin):
    """FCN-LLM with a language-modelling head: answers questions about FCNs."""

    # Its loss is a mean per batch (answer tokens, attribute heads, router), never a sum over the
    # `num_items_in_batch` the Trainer counts: so the Trainer divides it by the gradient-accumulation steps.
    accepts_loss_kwargs = False

    def __init__(self, config: FCNLLMConfig):
        super().__init__(config)
        self.model = FCNLLMModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        # The word-embedding parameter's name depends on the backbone (embed_tokens, wte, ...).
        embeddings = self.model.get_input_embeddings()
        name = next(n for n, m in self.model.language_model.named_modules() if m is embeddings)
        self._tied_weights_keys = {"lm_head.weight": f"model.language_model.{name}.weight"}
        self.post_init()

    def init_parallel_plans(self) -> None:
        """The tensor-parallel plan: the language model's, plus `lm_head` sharded over the vocabulary when that
        plan shards the word embeddings (as the backbones' own causal-LM heads are); a tied head and its
        embeddings are sharded both or neither."""
        super().init_parallel_plans()
        embeddings = self.get_input_embeddings()
        name = next(n for n, m in self.named_modules() if m is embeddings)
        if name in self._tp_plan:
            self._tp_plan.setdefault("lm_head", "colwise_gather_output")

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    @property
    def graph_encoder(self) -> FCNEncoderModel:
        return self.model.graph_encoder

    @property
    def graph_projector(self) -> FCNProjector:
        return self.model.graph_projector

    @property
    def language_model(self) -> nn.Module:
        return self.model.language_model

    @property
    def graph_attribute_heads(self) -> GraphAttributeHeads | None:
        return self.model.graph_attribute_heads

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        graph_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        graph_attribute_labels: torch.Tensor | None = None,
        routing_labels: torch.LongTensor | None = None,
        paradigm_labels: torch.LongTensor | None = None,
        turn_labels: torch.LongTensor | None = None,
        sign_labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        instruction_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> FCNLLMCausalLMOutputWithPast:
        """Args:
        labels: `(B, L)` target ids, -100 where no loss is wanted; `<graph>` positions never get loss.
            (`shift_labels` `(B, L)` in kwargs: targets already shifted, position i predicting token i + 1, as
            sequence-parallel training passes them.)
        graph_attribute_labels: `(num_graphs, A)` targets of the auxiliary heads (NaN = unknown); their
            loss, times `config.auxiliary_loss_weight`, is added to the LM loss.
        routing_labels: `(B,)` the index (in `config.auxiliary_heads`) of the attribute each instruction
            asks about, -100 if none; the router's cross-entropy, times `config.auxiliary_loss_weight`, is
            added to the loss (needs `instruction_evidence="attributes"`).
        paradigm_labels: `(B,)` the index (in `config.evidence_paradigms`) of each instruction's paradigm, -100 if
            unknown: the paradigm classifier's cross-entropy.
        turn_labels: `(B,)` 1 where a judgment or comparison asks the other way round ("Can ADHD be ruled out?",
            "which is younger?"), 0 where it asks the plain way, -100 for other rows: the turn classifier's
            binary cross-entropy.
        sign_labels: `(B, A)` per head output +1 for the class a question asks about, -1 for its head's other
            classes, +1 where it asks no class, NaN where unknown: the class signs' squared error.
            Each question loss, times `config.auxiliary_loss_weight`, is added to the loss (needs
            `instruction_evidence="attributes"`).
        logits_to_keep: compute logits for the last `logits_to_keep` positions only (0: all; in training
            mode with `labels`, 0 computes them only where a label is predicted: `logits` is then
            `(num_labelled, V)`).
        instruction_mask: `(B, L)` tokens instruction conditioning may read (see `FCNLLMModel`);
            labelled tokens are always left out.
        """
        shift_labels = kwargs.pop("shift_labels", None)
        # generation's state after the prefill: the estimates being written and where the answer is (see
        # `_update_model_kwargs_for_generation`)
        number_plan, number_gate = kwargs.pop("number_plan", None), kwargs.pop("number_gate", None)
        answer_offset = kwargs.pop("answer_offset", None)
        word_plan, word_gate = kwargs.pop("word_plan", None), kwargs.pop("word_gate", None)
        answer_tokens = kwargs.pop("answer_tokens", None)
        if labels is not None or shift_labels is not None:  # instruction conditioning never reads the answer
            prompt = labels == -100 if labels is not None else F.pad(shift_labels[:, :-1] == -100, (1, 0), value=True)
            instruction_mask = prompt if instruction_mask is None else prompt & instruction_mask.bool()
        outputs = self.model(
            input_ids=input_ids,
            graph_values=graph_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            instruction_mask=instruction_mask,
            **kwargs,
        )
        loss = None
        if labels is not None and input_ids is not None:
            labels = labels.masked_fill(input_ids == self.config.graph_token_id, -100)
        if shift_labels is not None and input_ids is not None:  # pre-shifted targets: position i predicts token i + 1
            shift_labels = shift_labels.masked_fill(F.pad(input_ids[:, 1:] == self.config.graph_token_id, (0, 1)), -100)
        hidden_states, starts = outputs.last_hidden_state, None
        if outputs.answer_evidence is not None:
            targets = shift_labels if shift_labels is not None else (
                None if labels is None else F.pad(labels, (0, 1), value=-100)[:, 1:])
            starts = self.answer_positions(input_ids, attention_mask, targets)
            added = outputs.answer_evidence[:, None, :].float()  # (B, 1, D)
            if outputs.answer_basis is not None:  # along the answer's directions, the evidence alone decides
                basis = outputs.answer_basis.float()  # (B, D, r)
                shifted = hidden_states.float() + self.model.instruction_conditioning.out.bias.float()
                added = added - torch.einsum("bdr,blr->bld", basis, torch.einsum("bdr,bld->blr", basis, shifted))
            hidden_states = hidden_states + (starts[..., None] * added).to(hidden_states.dtype)
        if (labels is not None or shift_labels is not None) and self.training and not logits_to_keep:
            # training: logits only at the positions that predict a label `(num_labelled, V)`, not at every
            # prompt position (the same loss, without the largest tensors of a step)
            if shift_labels is None:
                shift_labels = F.pad(labels, (0, 1), value=-100)[:, 1:]
            labelled = shift_labels != -100
            logits = self.lm_head(hidden_states[labelled])
            loss = self.loss_function(logits=logits, labels=None, vocab_size=self.config.text_config.vocab_size,
                                      shift_labels=shift_labels[labelled])
        else:
            logits = self.lm_head(slice_logits_to_keep(hidden_states, logits_to_keep))
            if labels is not None or shift_labels is not None:
                loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size,
                                          shift_labels=shift_labels)
        offsets = None  # (B, L) each position's place in the answer
        if starts is not None and (outputs.number_plan is not None or outputs.word_plan is not None):
            offsets = self.answer_offsets(starts)  # this pass read the question
        if outputs.number_plan is not None and starts is not None:
            number_plan, number_gate = outputs.number_plan, outputs.number_gate
        elif number_plan is not None and answer_offset is not None and input_ids is not None:
            offsets = answer_offset[:, None] + torch.arange(input_ids.shape[1], device=input_ids.device)
        kept = None if offsets is None else (offsets if not logits_to_keep else (  # the offsets of the logits kept
            offsets[:, -logits_to_keep:] if isinstance(logits_to_keep, int) else offsets[:, logits_to_keep]))
        if number_plan is not None and kept is not None and labels is None and shift_labels is None:
            logits = self.write_numbers(logits, number_plan, number_gate, kept)
        if labels is None and shift_labels is None:
            if outputs.word_plan is not None and starts is not None:  # this pass read the question
                word_plan, word_gate = outputs.word_plan, outputs.word_gate
                answer_tokens = input_ids.new_zeros(input_ids.shape[0], 0)  # the prompt ends where the answer starts
                # contiguous rows, the last positions kept: the answer so far is in them
                if (attention_mask is None or attention_mask.dim() == 2) and isinstance(logits_to_keep, int):
                    logits = self.start_words(logits, word_plan, outputs.word_start_gate, kept)
                    written, columns = self.written_answers(input_ids, kept)
                    logits = self.write_words(logits, word_plan, word_gate, written, columns)
                    if columns and columns[-1] == logits.shape[-2] - 1:  # an uncached pass within the answer
                        answer_tokens = written[-1]
            elif word_plan is not None and answer_tokens is not None and input_ids is not None:  # a cached step
                answer_tokens = torch.cat([answer_tokens, input_ids], 1)
                step = input_ids.shape[1]
                written = [answer_tokens[:, : answer_tokens.shape[1] - step + j + 1] for j in range(step)]
                logits = self.write_words(logits, word_plan, word_gate, written[-logits.shape[-2]:],
                                          list(range(logits.shape[-2])))
        if graph_attribute_labels is not None and outputs.graph_hidden_states is not None:
            if self.graph_attribute_heads is None:
                raise ValueError("graph_attribute_labels were given but the config has no auxiliary_heads.")
            aux = self.graph_attribute_heads.loss(outputs.graph_attribute_outputs, graph_attribute_labels.to(logits.device))
            aux = self.config.auxiliary_loss_weight * aux
            loss = aux if loss is None else loss + aux
        if routing_labels is not None:
            routing_logits = outputs.instruction_routing_logits
            if routing_logits is None:
                raise ValueError("routing_labels need instruction_conditioning with instruction_evidence='attributes', "
                                 "and graph_values.")
            if routing_labels.shape != routing_logits.shape[:1]:
                raise ValueError(
                    f"routing_labels must have shape (batch_size,) = ({routing_logits.shape[0]},), got {tuple(routing_labels.shape)}."
                )
            known = routing_labels.to(routing_logits.device) != -100
            if known.any():  # a batch without a known attribute adds nothing
                routing = F.cross_entropy(routing_logits[known].float(), routing_labels.to(routing_logits.device)[known])
                routing = self.config.auxiliary_loss_weight * routing
                loss = routing if loss is None else loss + routing
        for reading in self.question_losses(outputs, paradigm_labels, turn_labels, sign_labels):
            reading = self.config.auxiliary_loss_weight * reading
            loss = reading if loss is None else loss + reading
        return FCNLLMCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            graph_hidden_states=outputs.graph_hidden_states,
            graph_attribute_outputs=outputs.graph_attribute_outputs,
            instruction_routing_logits=outputs.instruction_routing_logits,
            paradigm_logits=outputs.paradigm_logits,
            turn_logits=outputs.turn_logits,
            class_signs=outputs.class_signs,
            answer_evidence=outputs.answer_evidence,
            number_plan=number_plan,
            number_gate=number_gate,
            answer_offset=None if offsets is None else offsets[:, -1],
            word_plan=word_plan,
            word_gate=word_gate,
            answer_tokens=answer_tokens,
        )

    def question_losses(self, outputs, paradigm_labels: torch.Tensor | None, turn_labels: torch.Tensor | None,
                        sign_labels: torch.Tensor | None) -> list[torch.Tensor]:
        """The losses of the question maps the labels given supervise (see `forward`); rows with unknown labels
        (-100, NaN) add nothing; a label without the map it supervises, or of the wrong shape, is a ValueError."""
        losses = []
        for name, labels, logits in (("paradigm_labels", paradigm_labels, outputs.paradigm_logits),
                                     ("turn_labels", turn_labels, outputs.turn_logits),
                                     ("sign_labels", sign_labels, outputs.class_signs)):
            if labels is None:
                continue
            if logits is None:
                needs = "evidence_paradigms with several paradigms" if name == "paradigm_labels" else "instruction_evidence='attributes'"
                raise ValueError(f"{name} need instruction conditioning with {needs}, and graph_values.")
            expected = logits.shape[:2] if name == "sign_labels" else logits.shape[:1]
            if tuple(labels.shape) != tuple(expected):
                raise ValueError(f"{name} must have shape {tuple(expected)}, got {tuple(labels.shape)}.")
            labels = labels.to(logits.device)
            if name == "sign_labels":
                known = ~torch.isnan(labels)
                if known.any():
                    losses.append(F.mse_loss(logits[known].float(), labels[known].float()))
                continue
            known = labels != -100
            if not known.any():
                continue
            if name == "paradigm_labels":
                losses.append(F.cross_entropy(logits[known].float(), labels[known].long()))
            else:
                losses.append(F.binary_cross_entropy_with_logits(logits[known].float(), labels[known].float()))
        return losses

    def write_numbers(self, logits: torch.Tensor, plan: torch.Tensor, gate: torch.Tensor,
                      offsets: torch.Tensor) -> torch.Tensor:
        """`logits` `(B, L, V)` with `config.number_writing_bias * gate` `(B,)` added, at each position, to the
        token `plan` `(B, P)` holds at its place in the answer (`offsets` `(B, L)`: 0 gives the answer's first token;
        positions before the answer or past the plan get nothing)."""
        width = plan.shape[1]
        inside = (offsets >= 0) & (offsets < width)
        tokens = plan.gather(1, offsets.clamp(0, width - 1))
        inside &= tokens >= 0
        bias = self.config.number_writing_bias * gate.to(logits.dtype)[:, None] * inside.to(logits.dtype)
        return logits.scatter_add(-1, tokens.clamp(min=0)[..., None], bias[..., None])

    @staticmethod
    def answer_offsets(starts: torch.Tensor) -> torch.Tensor:
        """`(B, L)` each position's place in the answer, from `starts` `(B, L)` (True where a row's answer starts): 0
        at the position whose logits give the answer's first token, k at the one that gives its token k, -1 before."""
        index = torch.arange(starts.shape[1], device=starts.device)
        start = torch.where(starts, index, -1).amax(1)
        return torch.where((start >= 0)[:, None] & (index >= start[:, None]), index - start[:, None], -1)

    @staticmethod
    def written_answers(input_ids: torch.Tensor, kept_offsets: torch.Tensor) -> tuple[list[torch.Tensor], list[int]]:
        """What each row's answer has written so far at the last positions of `input_ids` `(B, L)`, whose places in
        the answer are `kept_offsets` `(B, L')` (`answer_offsets`, the logits kept): a list of `(B, k)` tokens (k >= 1;
        -1 in the rows whose answer holds another number of tokens there) and, for each, its column among the kept
        logits."""
        length, kept = input_ids.shape[1], kept_offsets.shape[1]
        written, columns = [], []
        for column in (kept_offsets >= 1).any(0).nonzero()[:, 0].tolist():  # the columns inside some row's answer
            so_far = kept_offsets[:, column]  # (B,) tokens each row's answer holds here
            position = length - kept + column
            for k in sorted(set(so_far[so_far >= 1].tolist())):
                places = position - k + 1 + torch.arange(k, device=input_ids.device)
                written.append(torch.where((so_far == k)[:, None], input_ids[:, places], -1))
                columns.append(column)
        return written, columns

    def start_words(self, logits: torch.Tensor, plan: torch.Tensor, gate: torch.Tensor,
                    kept_offsets: torch.Tensor) -> torch.Tensor:
        """`logits` `(B, L', V)` with `config.number_writing_bias * gate` `(B,)` added, where an answer starts
        (`kept_offsets` `(B, L')` 0), to the first token of each of the routed head's words (`plan` `(B, C, T)`), each
        once: a predictive answer starts with one of them ("Healthy" is not a group label), and their margins, the
        evidence's, stay as they were."""
        first = plan[:, :, 0]  # (B, C)
        bias = torch.zeros(logits.shape[0], logits.shape[-1] + 1, dtype=logits.dtype, device=logits.device)
        bias.scatter_(1, torch.where(first >= 0, first, logits.shape[-1]), 1.0)  # -1 padding lands past the vocabulary
        bias = self.config.number_writing_bias * gate.to(logits.dtype)[:, None] * bias[:, :-1]  # (B, V)
        return logits + (kept_offsets == 0).to(logits.dtype)[..., None] * bias[:, None, :]

    def write_words(self, logits: torch.Tensor, plan: torch.Tensor, gate: torch.Tensor, written: list[torch.Tensor],
                    columns: list[int]) -> torch.Tensor:
        """`logits` `(B, L', V)` with `config.number_writing_bias * gate` `(B,)` added, at each kept position `columns`,
        to the next token of the answer word that what its row has `written` `(B, k)` so far begins (`plan` `(B, C, T)`
        the routed head's words, -1 padded): once an answer has begun a word, the rest of it and the answer's end
        follow. Where no word, or words that go on differently, begin that way: nothing."""
        logits = logits.clone() if written else logits
        for tokens, column in zip(written, columns):
            k = tokens.shape[1]
            if k >= plan.shape[2]:
                continue
            begun = (plan[:, :, :k] == tokens[:, None, :]).all(-1) & (plan[:, :, k] >= 0)  # (B, C)
            following = torch.where(begun, plan[:, :, k], -1).amax(-1)  # (B,)
            agree = torch.where(begun, plan[:, :, k], following[:, None]).eq(following[:, None]).all(-1)
            chosen = begun.any(-1) & agree & (tokens[:, 0] >= 0)
            bias = self.config.number_writing_bias * gate.to(logits.dtype) * chosen.to(logits.dtype)
            logits[:, column] = logits[:, column].scatter_add(-1, following.clamp(min=0)[:, None], bias[:, None])
        return logits

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs: dict, is_encoder_decoder: bool = False,
                                            num_new_tokens: int = 1) -> dict:
        """GenerationMixin's update, plus the estimates being written: after a pass that read the question its
        `number_plan`, `number_gate` and the next token's place in the answer; after later passes that place moves on."""
        model_kwargs = super()._update_model_kwargs_for_generation(outputs, model_kwargs, is_encoder_decoder, num_new_tokens)
        if getattr(outputs, "answer_offset", None) is not None:
            model_kwargs["number_plan"], model_kwargs["number_gate"] = outputs.number_plan, outputs.number_gate
            model_kwargs["answer_offset"] = outputs.answer_offset + num_new_tokens
        if getattr(outputs, "answer_tokens", None) is not None:
            model_kwargs["word_plan"], model_kwargs["word_gate"] = outputs.word_plan, outputs.word_gate
            model_kwargs["answer_tokens"] = outputs.answer_tokens
        return model_kwargs

    def answer_positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                         shift_labels: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, L)` True at the positions whose logits give an answer's first token: where
        `config.answer_prefix_ids` end (the chat template's assistant prefix). A row without them: the position
        before its first labelled token (`shift_labels` `(B, L)`, position i predicting token i + 1, -100 for
        none), else its last attended position (2-D `attention_mask`, or the last position without one); with a
        4-D mask, none."""
        batch_size, length = input_ids.shape
        starts = torch.zeros_like(input_ids, dtype=torch.bool)
        prefix = list(self.config.answer_prefix_ids or [])
        if prefix and length >= len(prefix):
            windows = input_ids.unfold(1, len(prefix), 1)  # (B, L - n + 1, n)
            starts[:, len(prefix) - 1:] = (windows == torch.tensor(prefix, device=input_ids.device)).all(-1)
        missing = ~starts.any(1)
        if not missing.any():
            return starts
        if shift_labels is not None:
            labelled = shift_labels != -100
            first = labelled & ~F.pad(labelled[:, :-1], (1, 0), value=False)
            return torch.where(missing[:, None], first, starts)
        if attention_mask is not None and attention_mask.dim() != 2:
            return starts
        attended = torch.ones_like(starts) if attention_mask is None else attention_mask.bool()
        index = torch.arange(length, device=input_ids.device).expand(batch_size, length)
        last = torch.where(attended, index, -1).amax(1)
        rows = (missing & (last >= 0)).nonzero().squeeze(1)
        starts[rows, last[rows]] = True
        return starts

    def prepare_inputs_for_generation(self, *args, graph_values=None, is_first_iteration=False, **kwargs):
        """Pass `graph_values` on the prefill step only; with a KV cache later steps never see placeholders."""
        model_inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if is_first_iteration or not kwargs.get("use_cache", True):
            model_inputs["graph_values"] = graph_values
        return model_inputs

    @classmethod
    def from_text_model(
        cls,
        text_model: PreTrainedModel | str,
        encoder_config: FCNEncoderConfig,
        tokenizer=None,
        graph_token: str = "<graph>",
        **config_kwargs,
    ) -> "FCNLLMForCausalLM":
        """Wrap a pretrained causal LM (weights kept) with a fresh FCN encoder and projector.

        Adds `graph_token` to `tokenizer` as a special token (if given) and grows the vocabulary by one
        row for it when needed; `graph_token_id` is set to match.

        Args:
            text_model: a causal LM instance, or a local folder / Hub id for `AutoModelForCausalLM`.
            encoder_config: the FCN encoder's configuration.
            tokenizer: the LM's tokenizer; `<graph>` is added to it in place. With `instruction_evidence=
                "attributes"`, its number tokens become `numeral_tokens` unless given (None: not read).
        """
        if isinstance(text_model, str):
            text_model = AutoModelForCausalLM.from_pretrained(text_model)
        text_config = text_model.config
        vocab_size = text_model.get_input_embeddings().weight.shape[0]
        if tokenizer is not None:
            tokenizer.add_special_tokens({"additional_special_tokens": [graph_token]})
            graph_token_id = tokenizer.convert_tokens_to_ids(graph_token)
        else:
            graph_token_id = config_kwargs.pop("graph_token_id", vocab_size)
        if graph_token_id >= vocab_size:
            text_model.resize_token_embeddings(graph_token_id + 1, mean_resizing=True)
        if tokenizer is not None and config_kwargs.get("instruction_evidence") == "attributes":
            config_kwargs.setdefault("numeral_tokens", numeral_tokens_of(tokenizer))
        config = FCNLLMConfig(
            text_config=text_model.config.to_dict(),
            encoder_config=encoder_config,
            graph_token_id=graph_token_id,
            tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
            **config_kwargs,
        )
        model = cls(config).to(text_model.dtype)
        model.model.language_model.load_state_dict(text_model.base_model.state_dict())
        model.lm_head.load_state_dict(text_model.get_output_embeddings().state_dict())
        model.tie_weights()
        model.model.graph_projector.match_embedding_scale(model.get_input_embeddings().weight)
        if getattr(text_model, "generation_config", None) is not None:
            model.generation_config = text_model.generation_config
        return model.eval()  # as from_pretrained: dropout off, BatchNorm on its running statistics


__all__ = [
    "FCNAttributePredictionOutput",
    "FCNEncoderForAttributePrediction",
    "FCNEncoderModel",
    "FCNEncoderPreTrainedModel",
    "GraphAttributeHeads",
    "FCNEncoderOutput",
    "FCNProjector",
    "FCNLLMPreTrainedModel",
    "FCNLLMModel",
    "FCNLLMForCausalLM",
    "FCNLLMCausalLMOutputWithPast",
    "FCNLLMModelOutputWithPast",
]
