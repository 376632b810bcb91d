"""The README's quickstart runs as written: its code block, with the demo model's folder swapped for a
tiny FCN-LLM saved here with its remote code, loads through the Auto classes and prints an answer."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from processing import FCNProcessor, load_atlas
from tests.conftest import make_tiny_model, make_tokenizer

README = Path(__file__).resolve().parents[1] / "README.md"
DEMO_FOLDER = "outputs/demo/model"  # what the quickstart loads (`make demo` writes it)
ATLAS = "schaefer100-7"  # the quickstart feeds a real HCP Schaefer-100 FCN from brainspace


def quickstart_code() -> str:
    """The first ```python block under the README's "## Quickstart" heading."""
    section = re.search(r"^## Quickstart\n(.*?)(?=^## |\Z)", README.read_text(), re.S | re.M)
    assert section, "README.md has no '## Quickstart' section"
    block = re.search(r"^```python\n(.*?)^```", section.group(1), re.S | re.M)
    assert block, "the README's Quickstart section has no ```python block"
    return block.group(1)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A random tiny FCN-LLM + processor for the atlas the quickstart's FCN uses, saved with remote code."""
    atlas = load_atlas(ATLAS)
    processor = FCNProcessor(make_tokenizer())  # adds <graph>
    # Qwen2: untied embeddings (a random tiny model with tied ones repeats the prompt's last token, a
    # newline, so its answer would be whitespace only).
    model = make_tiny_model(processor.tokenizer, family="qwen2", num_rois=atlas.num_rois,
                            network_assignment=atlas.network_assignment)
    processor = FCNProcessor.from_model_config(processor.tokenizer, model.config)
    folder = tmp_path_factory.mktemp("readme") / "fcn-llm"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_quickstart_block_loads_the_demo_folder():
    code = quickstart_code()
    assert code.count(f'"{DEMO_FOLDER}"') == 1, f"the quickstart should load {DEMO_FOLDER!r} exactly once"
    assert "trust_remote_code=True" in code and "<graph>" in code and "fcns=" in code


def test_quickstart_runs_and_prints_an_answer(tiny_folder):
    code = quickstart_code().replace(DEMO_FOLDER, tiny_folder.as_posix())
    namespace = {"__name__": "__readme_quickstart__"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, f"{README}:Quickstart", "exec"), namespace)
    answer = printed.getvalue().strip()
    assert answer, "the quickstart printed no answer"
    # (in this process the Auto classes may resolve to the project's registered classes; loading from the
    # saved remote code alone is tests/modeling_fcnllm/test_remote_code.py's job)
    assert type(namespace["model"]).__name__ == "FCNLLMForCausalLM"
    assert type(namespace["processor"]).__name__ == "FCNProcessor"
    num_rois = load_atlas(ATLAS).num_rois
    assert namespace["inputs"]["graph_values"].shape == (1, num_rois, num_rois)
