"""Which question an attribution explains: the prompt, its allowed answers, and the answer explained.

An attribution explains the *margin* of one answer against the others,
``log P(target) - logsumexp_{c != target} log P(c)`` (for two answers, ``log P("Yes") - log P("No")``),
scored as `evaluation/scoring.py` scores answers: the sum of log-probabilities of
``answer<|im_end|>`` after the chat-template prompt with the assistant prefix.

Defaults per attribute kind (``paradigm="judgment"``, the question every kind has):
- binary: "Does this subject have ADHD? Answer yes or no." -> "Yes" vs "No";
- categorical: "Is this subject {phrase}?" for `target_class` (default: the last class) -> "Yes" vs "No";
- continuous: "Is this subject older than {threshold} years?" (default threshold: the middle registry
  threshold) -> "Yes" vs "No".
``paradigm="predictive"`` asks for the label (binary: "ADHD" vs "Control"; categorical: the target class
vs the others); ``paradigm="comparative"`` asks about two subjects ("First" vs "Second") and
gives one map per graph.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from datasets_scripts.attributes import Attribute, AttributeRegistry, load_registry
from datasets_scripts.instructions import FIRST, SECOND

GRAPH = "<graph>"
YES, NO = "Yes", "No"
PARADIGMS = ("judgment", "predictive", "comparative")


class AttributeNotAllowedError(ValueError):
    """An attribute the registry does not define, or one the model was not trained on."""


@dataclass(frozen=True)
class AttributionQuestion:
    """One question to explain.

    Attributes:
        attribute: registry key.
        paradigm: ``"judgment"``, ``"predictive"`` or ``"comparative"``.
        messages: chat messages up to the user turn, with one `<graph>` per FCN.
        choices: the allowed answers, scored by likelihood.
        target: index into `choices` of the answer whose margin is explained.
        num_graphs: FCNs the question takes (2 for comparative).
        text: the user turn, for reports.
        target_class: for categorical attributes, the class the question is about.
    """

    attribute: str
    paradigm: str
    messages: tuple
    choices: tuple[str, ...]
    target: int
    num_graphs: int
    text: str
    target_class: str | None = None

    @property
    def target_answer(self) -> str:
        return self.choices[self.target]


def check_attribute(key: str, allowed: Iterable[str] | None = None,
                    registry: AttributeRegistry | None = None) -> Attribute:
    """The registry `Attribute` of `key`; AttributeNotAllowedError naming the allowed keys otherwise.

    Args:
        allowed: the attributes the model was trained on (None: any registry attribute).
    """
    registry = registry or load_registry()
    allowed = list(allowed) if allowed is not None else list(registry)
    if key not in registry or key not in allowed:
        why = "is not a known attribute" if key not in registry else "is not an attribute this model was trained on"
        raise AttributeNotAllowedError(f"Attribute {key!r} {why}; allowed attributes: {', '.join(allowed)}.")
    return registry[key]


def _message(question: str, num_graphs: int) -> tuple:
    # Same layout as datasets_scripts/instructions.py, so the model sees the prompts it was trained on.
    if num_graphs == 1:
        prompt = f"{GRAPH}\n{question}"
    else:
        prompt = "".join(f"Subject {i + 1}: {GRAPH}\n" for i in range(num_graphs)) + question
    return ({"role": "user", "content": prompt},)


def default_threshold(attr: Attribute) -> float:
    """The middle registry threshold of a continuous attribute (or the middle of its valid range)."""
    if attr.thresholds:
        return float(sorted(attr.thresholds)[len(attr.thresholds) // 2])
    lo, hi = attr.valid_range or (0.0, 1.0)
    return float(round((lo + hi) / 2, attr.decimals))


def make_question(attr: Attribute, paradigm: str = "judgment", *, threshold: float | None = None,
                  target_class: str | None = None, template: int = 0) -> AttributionQuestion:
    """The `AttributionQuestion` for `attr` (see the module docstring for the defaults).

    Args:
        threshold: continuous judgment cut-off ("older than {threshold}").
        target_class: categorical class explained (default: the last class).
        template: which of the registry's templates of the paradigm to use.
    """
    if paradigm not in PARADIGMS:
        raise ValueError(f"Unknown paradigm {paradigm!r}; choose one of {PARADIGMS}.")
    templates = attr.templates.get(paradigm) or []
    if not templates:
        raise ValueError(f"Attribute {attr.key!r} has no {paradigm} questions; it has {attr.paradigms()}.")
    text = templates[template % len(templates)]
    common = dict(attribute=attr.key, paradigm=paradigm)
    if paradigm == "comparative":
        return AttributionQuestion(**common, messages=_message(text, 2), choices=(FIRST, SECOND), target=0,
                                   num_graphs=2, text=text)
    if attr.kind == "categorical":
        cls = target_class if target_class is not None else attr.classes[-1]
        if cls not in attr.classes:
            raise ValueError(f"Attribute {attr.key!r} has classes {list(attr.classes)}; got target_class {cls!r}.")
        if paradigm == "predictive":
            return AttributionQuestion(**common, messages=_message(text, 1), choices=tuple(attr.classes),
                                       target=list(attr.classes).index(cls), num_graphs=1, text=text)
        text = text.format(phrase=attr.class_phrases[cls])
        return AttributionQuestion(**common, messages=_message(text, 1), choices=(YES, NO), target=0, num_graphs=1,
                                   text=text, target_class=cls)
    elif attr.kind == "continuous":
        if paradigm == "predictive":
            raise ValueError(f"Attribute {attr.key!r} is continuous: its predictive answer is a generated number with "
                             "no fixed choices to attribute; use paradigm 'judgment' (with a threshold) or 'comparative'.")
        value = default_threshold(attr) if threshold is None else float(threshold)
        text = text.format(threshold=attr.format_threshold(value), units=attr.units)
    elif paradigm == "predictive":  # binary
        return AttributionQuestion(**common, messages=_message(text, 1), choices=(attr.labels["1"], attr.labels["0"]),
                                   target=0, num_graphs=1, text=text)
    return AttributionQuestion(**common, messages=_message(text, 1), choices=(YES, NO), target=0, num_graphs=1,
                               text=text)


__all__ = ["AttributionQuestion", "AttributeNotAllowedError", "check_attribute", "default_threshold", "make_question"]
