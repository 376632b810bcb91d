"""The question bank: every instruction is a question frame x an attribute term x an answer instruction.

Data, never code: `question_bank.json` (beside this module) holds the question frames per family and
paradigm and the answer instructions per answer type; each attribute's ``bank`` entry in
`attributes.json` names its family (``age``, ``education``, ``score``, ``condition``, ``trait``,
``eyes``) and its terms: names, synonyms, abbreviations and clinical terms (``"ADHD"``,
``"attention-deficit/hyperactivity disorder"``, ...), for categorical attributes also the terms per
class (``{phrase}``: ``"left-handed"``, ``"a left-hander"``, ...). An attribute without a ``bank``
entry gets its kind's family (continuous ``score``, binary ``condition``, categorical ``trait``) with
its name as the one term; a paradigm the family has no frames for uses the attribute's registry
templates as frames.

A `Form` is one frame with one term (or class-term variant) and one answer instruction; its
`template_id` names the three (``"adhd/judgment/ruled_out/term1/answer"``). A frame says what it asks:
``direction`` +1 for the higher value / having the condition, -1 for the lower value / not having it
("Is this subject younger than 40 years?", "Which of the two subjects is less likely to have ADHD?"),
and ``negated`` when its yes/no answer is flipped relative to the plain question ("Can ADHD be ruled
out for this participant?"). Answers stay in the registry's answer vocabulary: "Yes"/"No", the class
names and binary labels, numbers formatted by `Attribute.format_value`, "The first"/"The second".

Held out: a form is held out when its frame, its term (``held_out_terms``), its class-term variant
(``held_out_class_terms``) or its answer instruction is marked held out. The `train` split draws only
training forms, `validation` only held-out forms, `zero_shot` both (`SPLIT_POOLS`). Continuous
judgments name a threshold drawn uniformly between the cohort's 10th and 90th percentiles (rounded to
the attribute's ``decimals``), never equal to the subject's value; `train` never names a held-out threshold
(a fixed fifth of each attribute's values, `threshold_held_out`), the other splits name any.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from datasets_scripts.attributes import Attribute

DEFAULT_BANK_PATH = Path(__file__).with_name("question_bank.json")
PARADIGMS = ("predictive", "judgment", "comparative")
POOLS = ("train", "held_out")
SPLIT_POOLS = {"train": ("train",), "validation": ("held_out",), "zero_shot": ("train", "held_out")}
DEFAULT_FAMILIES = {"continuous": "score", "binary": "condition", "categorical": "trait"}
THRESHOLD_QUANTILES = (0.1, 0.9)
HELD_OUT_THRESHOLD_EVERY = 5  # `train` never names one threshold value in five (`threshold_held_out`)
YES, NO = "Yes", "No"
LEGACY_PREFIX = "template"  # frame ids of registry templates used as frames (families without the paradigm)
_FIELDS = {"term", "phrase", "threshold", "units", "positive", "negative", "classes", "choices"}


def answer_type(kind: str, paradigm: str) -> str:
    """The answer instructions a question of `paradigm` about a `kind` attribute takes."""
    if paradigm == "judgment":
        return "yes_no"
    if paradigm == "comparative":
        return "first_second"
    return {"continuous": "number", "binary": "label", "categorical": "class"}[kind]


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def _or_list(words: Sequence[str]) -> str:
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


@dataclass(frozen=True)
class Frame:
    """A question with slots; `direction` / `negated` / `held_out` as in the module docstring."""

    id: str
    text: str
    direction: int = 1
    negated: bool = False
    held_out: bool = False


@dataclass(frozen=True)
class AnswerInstruction:
    """What to answer with ("Answer yes or no."; empty: none), appended to the frame."""

    id: str
    text: str
    held_out: bool = False


@dataclass(frozen=True)
class Form:
    """One surface form: a frame, its term / class-term variant (if it has those slots), an answer instruction."""

    attribute: str
    paradigm: str
    frame: Frame
    instruction: AnswerInstruction
    term: str | None = None  # the {term} filler
    term_index: int | None = None  # into the training terms, or the held-out terms when term_held_out
    term_held_out: bool = False
    variant: int | None = None  # the {phrase} variant: into each class's training (or held-out) terms
    variant_held_out: bool = False

    @property
    def template_id(self) -> str:
        slots = []
        if self.term_index is not None:
            slots.append(f"{'held_term' if self.term_held_out else 'term'}{self.term_index}")
        if self.variant is not None:
            slots.append(f"{'held_class' if self.variant_held_out else 'class'}{self.variant}")
        return "/".join([self.attribute, self.paradigm, self.frame.id, "+".join(slots) or "-", self.instruction.id])

    @property
    def held_out(self) -> bool:
        return self.frame.held_out or self.instruction.held_out or self.term_held_out or self.variant_held_out

    @property
    def direction(self) -> int:
        return self.frame.direction

    @property
    def negated(self) -> bool:
        return self.frame.negated

    def text(self, attribute: Attribute, *, threshold: float | None = None, asked_class: str | None = None) -> str:
        """The question: the frame with its slots filled, then the answer instruction."""
        values: dict[str, Any] = {"term": self.term if self.term is not None else attribute.name,
                                  "units": attribute.units}
        if threshold is not None:
            values["threshold"] = attribute.format_threshold(threshold)
        if attribute.kind == "binary":
            values.update(positive=attribute.labels["1"], negative=attribute.labels["0"])
        if attribute.kind == "categorical":
            values.update(classes=_or_list(attribute.classes),
                          choices=_or_list([attribute.class_phrases[c] for c in attribute.classes]))
            if asked_class is not None:
                values["phrase"] = class_term(attribute, asked_class, self.variant or 0, self.variant_held_out)
        missing = (_fields(self.frame.text) | _fields(self.instruction.text)) - set(values)
        if missing:
            raise ValueError(f"Form {self.template_id!r} needs {sorted(missing)} (a threshold or an asked class).")
        question = self.frame.text.format(**values)
        said = self.instruction.text.format(**values)
        return f"{question} {said}" if said else question


def _bank_spec(attribute: Attribute) -> dict:
    return dict(attribute.bank or {})


def terms(attribute: Attribute, held_out: bool = False) -> tuple[str, ...]:
    """The attribute's training terms (default: its name) or its held-out terms."""
    spec = _bank_spec(attribute)
    if held_out:
        return tuple(spec.get("held_out_terms", ()))
    return tuple(spec.get("terms") or (attribute.name,))


def class_terms(attribute: Attribute, held_out: bool = False) -> dict[str, tuple[str, ...]]:
    """Per class, its training terms (default: its registry phrase) or its held-out terms."""
    spec = _bank_spec(attribute)
    if held_out:
        given = spec.get("held_out_class_terms", {})
        return {c: tuple(given.get(c, ())) for c in attribute.classes}
    given = spec.get("class_terms", {})
    return {c: tuple(given.get(c) or (attribute.class_phrases[c],)) for c in attribute.classes}


def class_term(attribute: Attribute, asked_class: str, variant: int, held_out: bool = False) -> str:
    """The phrase for `asked_class` in class-term variant `variant` (classes with fewer terms cycle)."""
    if asked_class not in attribute.classes:
        raise ValueError(f"Attribute {attribute.key!r}: asked class {asked_class!r} is not one of "
                         f"{list(attribute.classes)}.")
    options = class_terms(attribute, held_out)[asked_class]
    return options[variant % len(options)]


class QuestionBank:
    """The frames per family and paradigm and the answer instructions per answer type (`load_bank`)."""

    def __init__(self, families: Mapping[str, Mapping[str, list[Frame]]],
                 instructions: Mapping[str, list[AnswerInstruction]], source: str = "a question bank"):
        self.families = {name: dict(paradigms) for name, paradigms in families.items()}
        self.instructions = dict(instructions)
        self.source = source

    def family(self, attribute: Attribute) -> str:
        name = _bank_spec(attribute).get("family") or DEFAULT_FAMILIES[attribute.kind]
        if name not in self.families:
            raise ValueError(f"Attribute {attribute.key!r}: question-bank family {name!r} is not in {self.source} "
                             f"(families: {', '.join(self.families)}).")
        return name

    def frames(self, attribute: Attribute, paradigm: str) -> list[Frame]:
        """The frames of `attribute`'s family for `paradigm` (the registry templates if the family has none)."""
        if paradigm not in attribute.paradigms():
            return []
        frames = self.families[self.family(attribute)].get(paradigm)
        if frames:
            return list(frames)
        # the registry's templates (they carry their own answer instructions); the last one listed is held out
        legacy = [Frame(f"{LEGACY_PREFIX}{i}", t) for i, t in enumerate(attribute.templates.get(paradigm, []))]
        if paradigm == "comparative":
            legacy += [Frame(f"{LEGACY_PREFIX}lower{i}", t, direction=-1)
                       for i, t in enumerate(attribute.templates.get("comparative_lower", []))]
        if len(legacy) > 1:
            last = legacy[-1]
            legacy[-1] = Frame(last.id, last.text, last.direction, last.negated, held_out=True)
        return legacy

    def forms(self, attribute: Attribute, paradigm: str, pool: str | None = None) -> list[Form]:
        """Every form of `attribute` and `paradigm` (listing order), or those of `pool` ("train" / "held_out")."""
        if pool not in (None, *POOLS):
            raise ValueError(f"Unknown form pool {pool!r}; expected one of {POOLS}.")
        frames = self.frames(attribute, paradigm)
        if not frames:
            return []
        kind = attribute.kind
        instructions = self.instructions.get(answer_type(kind, paradigm))
        if not instructions:
            raise ValueError(f"{self.source} has no answer instructions of type {answer_type(kind, paradigm)!r}.")
        term_options = [(i, t, False) for i, t in enumerate(terms(attribute))]
        term_options += [(i, t, True) for i, t in enumerate(terms(attribute, held_out=True))]
        variants = []
        if kind == "categorical":
            trained, held = class_terms(attribute), class_terms(attribute, held_out=True)
            variants = [(i, False) for i in range(max(len(v) for v in trained.values()))]
            if all(held.values()):
                variants += [(i, True) for i in range(max(len(v) for v in held.values()))]
        out = []
        for frame in frames:
            self._check(attribute, paradigm, frame)
            said = instructions
            if frame.id.startswith(LEGACY_PREFIX):  # a registry template: no answer instruction appended
                said = [i for i in instructions if not i.text] or [AnswerInstruction("none", "")]
            slots = _fields(frame.text)
            term_choices = term_options if "term" in slots else [(None, None, False)]
            variant_choices = variants if "phrase" in slots else [(None, False)]
            for t_index, term, t_held in term_choices:
                for v_index, v_held in variant_choices:
                    for instruction in said:
                        form = Form(attribute.key, paradigm, frame, instruction, term, t_index, t_held, v_index, v_held)
                        if pool is None or form.held_out == (pool == "held_out"):
                            out.append(form)
        return out

    def _check(self, attribute: Attribute, paradigm: str, frame: Frame) -> None:
        where = f"{self.source}: frame {frame.id!r} ({self.family(attribute)}, {paradigm}) for attribute {attribute.key!r}"
        slots = _fields(frame.text)
        allowed = {"term", "units"}
        if paradigm == "judgment" and attribute.kind == "continuous":
            allowed.add("threshold")
            if "threshold" not in slots:
                raise ValueError(f"{where}: continuous judgments need a {{threshold}} slot: {frame.text!r}.")
        if attribute.kind == "binary":
            allowed |= {"positive", "negative"}
        if attribute.kind == "categorical":
            allowed |= {"classes", "choices"}
            if paradigm == "judgment":
                allowed.add("phrase")
                if "phrase" not in slots:
                    raise ValueError(f"{where}: categorical judgments need a {{phrase}} slot: {frame.text!r}.")
        if slots - allowed:
            raise ValueError(f"{where}: slot(s) {sorted(slots - allowed)} cannot be filled for a {attribute.kind} "
                             f"{paradigm} question: {frame.text!r}.")

    def pool(self, attribute: Attribute, paradigm: str, pool: str) -> "FormPool":
        """The forms of `pool`, grouped by frame for `FormPool.draw` (a held-out pool the family has no forms
        for falls back to the training forms, recorded as not held out)."""
        forms = self.forms(attribute, paradigm, pool) or self.forms(attribute, paradigm, "train")
        return FormPool(forms)


class FormPool:
    """Forms to draw from: a frame uniformly (among those with forms here), then one of its forms uniformly."""

    def __init__(self, forms: Sequence[Form]):
        by_frame: dict[str, list[Form]] = {}
        for form in forms:
            by_frame.setdefault(form.frame.id, []).append(form)
        self.groups = list(by_frame.values())

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups)

    def draw(self, rng: np.random.Generator) -> Form:
        group = self.groups[int(rng.integers(len(self.groups)))]
        return group[int(rng.integers(len(group)))]


def _frame(spec: Mapping[str, Any], where: str) -> Frame:
    unknown = set(spec) - {"id", "text", "direction", "negated", "held_out"}
    if unknown or "id" not in spec or "text" not in spec:
        raise ValueError(f"{where}: a frame needs 'id' and 'text' (optional: direction, negated, held_out); "
                         f"got {sorted(spec)}.")
    if _fields(spec["text"]) - _FIELDS:
        raise ValueError(f"{where}: frame {spec['id']!r} uses unknown slot(s) {sorted(_fields(spec['text']) - _FIELDS)}.")
    if str(spec["id"]).startswith(LEGACY_PREFIX):
        raise ValueError(f"{where}: frame id {spec['id']!r}: ids starting with {LEGACY_PREFIX!r} are reserved for "
                         "the registry's templates.")
    if "<graph>" in spec["text"]:
        raise ValueError(f"{where}: frame {spec['id']!r} must not contain <graph> (the builder places it).")
    direction = int(spec.get("direction", 1))
    if direction not in (1, -1):
        raise ValueError(f"{where}: frame {spec['id']!r} has direction {direction}; expected +1 or -1.")
    return Frame(str(spec["id"]), str(spec["text"]), direction, bool(spec.get("negated", False)),
                 bool(spec.get("held_out", False)))


def load_bank(path: str | Path | None = None) -> QuestionBank:
    """Read a question-bank file (default: the bundled `question_bank.json`)."""
    if path is None:
        return _default_bank()
    return _read_bank(Path(path))


@functools.lru_cache(maxsize=1)
def _default_bank() -> QuestionBank:
    return _read_bank(DEFAULT_BANK_PATH)


def _read_bank(path: Path) -> QuestionBank:
    data = json.loads(path.read_text())
    families, instructions = {}, {}
    for name, paradigms in data.get("families", {}).items():
        families[name] = {}
        for paradigm, frames in paradigms.items():
            if paradigm not in PARADIGMS:
                raise ValueError(f"{path}: family {name!r} has unknown paradigm {paradigm!r}; allowed: {list(PARADIGMS)}.")
            parsed = [_frame(f, f"{path}: family {name!r}, {paradigm}") for f in frames]
            ids = [f.id for f in parsed]
            if len(set(ids)) != len(ids):
                raise ValueError(f"{path}: family {name!r}, {paradigm}: frame ids must be unique; got {ids}.")
            families[name][paradigm] = parsed
    for kind, items in data.get("answer_instructions", {}).items():
        instructions[kind] = [AnswerInstruction(str(i["id"]), str(i.get("text", "")), bool(i.get("held_out", False)))
                              for i in items]
        if len({i.id for i in instructions[kind]}) != len(instructions[kind]):
            raise ValueError(f"{path}: answer instructions {kind!r}: ids must be unique.")
    if not families:
        raise ValueError(f"{path}: expected a JSON object with a non-empty 'families' mapping.")
    return QuestionBank(families, instructions, source=str(path.name))


# --------------------------------------------------------------------------------------------------
# Composing a question with its answer
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Composed:
    """A question, its answer and what it means (the instruction row's columns)."""

    question: str
    answer: str
    form: Form
    threshold: float | None = None
    asked_class: str | None = None


def threshold_span(attribute: Attribute, values: np.ndarray) -> tuple[float, float]:
    """Where judgment thresholds are drawn: the cohort's 10th-90th percentiles (its range if they coincide)."""
    values = np.asarray(values, dtype=float)
    lo, hi = (float(q) for q in np.quantile(values, THRESHOLD_QUANTILES))
    if hi - lo < 10.0 ** -attribute.decimals:
        lo, hi = float(values.min()), float(values.max())
    return lo, hi


def threshold_held_out(attribute: Attribute, threshold: float) -> bool:
    """Whether the `train` split never names `threshold` in a judgment about `attribute`: a fixed fifth of
    each attribute's values, scattered by a stable hash of the attribute and the value as the question
    writes it, so that every evaluation asks about thresholds the model was never trained on."""
    digest = hashlib.sha256(f"{attribute.key}:{attribute.format_threshold(threshold)}".encode()).digest()
    return digest[0] % HELD_OUT_THRESHOLD_EVERY == 0


def draw_threshold(attribute: Attribute, span: tuple[float, float], value: float, rng: np.random.Generator,
                   named_in_train: bool = False) -> float:
    """A threshold uniform in `span`, rounded to the attribute's decimals, inside its valid range, != `value`;
    with `named_in_train`, never a held-out threshold (`threshold_held_out`). When the span has no such
    value, the nearest one to `value`."""
    unit = 10.0 ** -attribute.decimals
    lo, hi = span
    valid_lo, valid_hi = attribute.valid_range or (-math.inf, math.inf)
    clip = lambda t: float(min(max(round(t, attribute.decimals), valid_lo), valid_hi))  # noqa: E731
    allowed = lambda t: t != float(value) and not (named_in_train and threshold_held_out(attribute, t))  # noqa: E731
    for _ in range(64):
        threshold = clip(rng.uniform(lo, hi))
        if allowed(threshold):
            return threshold
    for step in range(1, 10_000):
        for sign in rng.permutation([1, -1]):
            threshold = clip(float(value) + sign * step * unit)
            if allowed(threshold):
                return threshold
    raise ValueError(f"Attribute {attribute.key!r}: no threshold to ask about near {value} inside its valid range.")


def judgment_answer(attribute: Attribute, form: Form, value: Any, threshold: float | None = None,
                    asked_class: str | None = None) -> str:
    """"Yes"/"No": the plain question's truth, in the form's direction, flipped when it is negated."""
    if attribute.kind == "continuous":
        yes = form.direction * (float(value) - float(threshold)) > 0
    elif attribute.kind == "categorical":
        yes = asked_class == value
    else:
        yes = float(value) == 1.0
    return YES if yes != form.negated else NO


def compose(attribute: Attribute, form: Form, value: Any, rng: np.random.Generator,
            span: tuple[float, float] | None = None, named_in_train: bool = False) -> Composed:
    """The single-subject question of `form` about a subject with `value`, and its answer.

    Args:
        span: continuous judgments: where thresholds are drawn (`threshold_span` of the cohort).
        named_in_train: continuous judgments: the question is for the `train` split, so its threshold is
            never a held-out one (`threshold_held_out`).
    """
    if form.paradigm == "predictive":
        return Composed(form.text(attribute), attribute.format_value(value), form)
    if form.paradigm != "judgment":
        raise ValueError(f"compose makes single-subject questions; form {form.template_id!r} is {form.paradigm}.")
    threshold = asked = None
    if attribute.kind == "continuous":
        if span is None:
            raise ValueError(f"Attribute {attribute.key!r}: a continuous judgment needs the cohort's threshold span.")
        threshold = draw_threshold(attribute, span, float(value), rng, named_in_train)
    elif attribute.kind == "categorical":
        others = [c for c in attribute.classes if c != value]
        asked = value if rng.random() < 0.5 else str(others[int(rng.integers(len(others)))])
    question = form.text(attribute, threshold=threshold, asked_class=asked)
    return Composed(question, judgment_answer(attribute, form, value, threshold, asked), form, threshold, asked)
