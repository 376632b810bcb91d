"""`python -m fcn_llm.interpret explain|ground-truth` end to end on tiny saved models and folders."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fcn_llm.interpret.__main__ import main
from fcn_llm.interpret.attribution import AtlasMismatchError
from fcn_llm.interpret.questions import AttributeNotAllowedError
from tests.fcn_llm.evaluation.conftest import write_instruction_folder

from .conftest import save_pair, schaefer_folder, schaefer_model, tiny_pair

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    model, processor = tiny_pair()
    model_dir = save_pair(model, processor, tmp_path_factory.mktemp("model12"))
    data_dir = write_instruction_folder(tmp_path_factory.mktemp("data12"), n_train=20, n_zero_shot=16)
    return model_dir, data_dir


@pytest.fixture(scope="module")
def schaefer_dirs(tmp_path_factory):
    model, processor = schaefer_model()
    model_dir = save_pair(model, processor, tmp_path_factory.mktemp("model100"))
    return model_dir, schaefer_folder(tmp_path_factory.mktemp("data100"))


def test_explain_writes_report_and_maps(tiny_dirs, tmp_path):
    model_dir, data_dir = tiny_dirs
    payload = main(["explain", "--model", str(model_dir), "--data", str(data_dir), "--attribute", "adhd",
                    "--out", str(tmp_path), "--subjects", "4", "--pattern-subjects", "10", "--permutations", "20"])
    folder = tmp_path / "adhd"
    assert payload["subjects"] == 4 and payload["question"].startswith("Does this subject have ADHD")
    for name in ("report.html", "matrix.png", "networks.png", "network_effects.png", "rois.png", "maps.npz",
                 "pattern.png", "pattern_networks.png"):
        assert (folder / name).is_file(), name
    assert payload["pattern"]["subjects"] == 10 and payload["pattern"]["permutations"] == 20
    assert 0 < payload["pattern"]["top_pair_p_fwe"] <= 1 and len(payload["pattern"]["top_pair"]) == 2
    maps = np.load(folder / "maps.npz")
    assert maps["pattern_correlation"].shape == (12, 12) and maps["pattern_network_z"].shape == (3, 3)
    assert maps["pattern_margins"].shape == (10,)
    html = (folder / "report.html").read_text()
    assert "data:image/png;base64," in html and "<script" not in html  # self-contained
    assert json.loads((folder / "summary.json").read_text())["ground_truth"] is None  # "tiny" atlas: no truth


def test_explain_comparative_writes_a_map_per_graph(tiny_dirs, tmp_path):
    model_dir, data_dir = tiny_dirs
    main(["explain", "--model", str(model_dir), "--data", str(data_dir), "--attribute", "age", "--out", str(tmp_path),
          "--subjects", "2", "--paradigm", "comparative", "--pattern-subjects", "4", "--permutations", "5"])
    assert (tmp_path / "age" / "matrix_graph1.png").is_file() and (tmp_path / "age" / "matrix_graph2.png").is_file()
    assert (tmp_path / "age" / "pattern_graph1.png").is_file() and (tmp_path / "age" / "pattern_graph2.png").is_file()


def test_explain_without_a_pattern(tiny_dirs, tmp_path):
    model_dir, data_dir = tiny_dirs
    payload = main(["explain", "--model", str(model_dir), "--data", str(data_dir), "--attribute", "adhd",
                    "--out", str(tmp_path), "--subjects", "2", "--pattern-subjects", "0"])
    assert payload["pattern"] is None and not (tmp_path / "adhd" / "pattern.png").exists()


def test_explain_rejects_an_untrained_attribute_naming_the_allowed_ones(tiny_dirs, tmp_path):
    model_dir, data_dir = tiny_dirs  # the folder has adhd, sex and age only
    with pytest.raises(AttributeNotAllowedError, match=r"'autism' is not an attribute this model was trained on; "
                                                       r"allowed attributes: age, sex, adhd"):
        main(["explain", "--model", str(model_dir), "--data", str(data_dir), "--attribute", "autism",
              "--out", str(tmp_path)])


def test_explain_rejects_data_of_another_atlas(schaefer_dirs, tiny_dirs, tmp_path):
    with pytest.raises(AtlasMismatchError, match=r"N=100 ROIs .* expects N=12 ROIs"):
        main(["explain", "--model", str(tiny_dirs[0]), "--data", str(schaefer_dirs[1]), "--attribute", "adhd",
              "--out", str(tmp_path)])


def test_ground_truth_on_a_simulator_atlas(schaefer_dirs, tmp_path):
    model_dir, data_dir = schaefer_dirs
    payload = main(["ground-truth", "--model", str(model_dir), "--data", str(data_dir), "--out", str(tmp_path),
                    "--subjects", "4", "--attributes", "adhd,sex", "--pattern-subjects", "16", "--permutations", "20"])
    saved = json.loads((tmp_path / "ground_truth.json").read_text())
    adhd, sex = saved["attributes"]["adhd"], saved["attributes"]["sex"]
    assert adhd["map"] == "activation pattern" and adhd["pattern_subjects"] == 16
    assert 0.0 <= adhd["planted_edge_auc"] <= 1.0 and 1 <= adhd["planted_pair_rank"] <= 28
    assert 1 <= adhd["pair_rank_by_block_mean"] <= 28 and 0 < adhd["top_pair_p_fwe"] <= 1
    gradient = adhd["gradient"]  # the per-subject attribution maps' numbers, kept
    assert 0.0 <= gradient["planted_edge_auc"] <= 1.0 and 1 <= gradient["planted_pair_rank"] <= 28
    assert "contrast" in gradient and gradient["subjects"] == 4 and "planted_edge_auc" in adhd["data_ceiling"]
    assert sex["has_effect"] and "top_pair_z" in sex and "top_pair_p_fwe" in sex
    assert (tmp_path / "adhd" / "glass_brain.png").is_file()  # nilearn's plot_connectome on the atlas coords
    assert (tmp_path / "adhd" / "pattern.png").is_file()
    table = (tmp_path / "ground_truth.md").read_text()
    assert "| adhd |" in table and "pattern" in table and "gradient" in table
    assert payload["attributes"].keys() == {"adhd", "sex"}


def test_cli_error_is_one_line(tiny_dirs, tmp_path):
    model_dir, data_dir = tiny_dirs
    proc = subprocess.run([sys.executable, "-m", "fcn_llm.interpret", "explain", "--model", str(model_dir), "--data",
                           str(data_dir), "--attribute", "nope", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "error: Attribute 'nope' is not a known attribute" in proc.stderr


def test_ground_truth_on_a_folder_without_recorded_effects_is_a_clear_error(tiny_dirs, tmp_path):
    from fcn_llm.interpret.ground_truth import MissingTruthError

    model_dir, data_dir = tiny_dirs
    with pytest.raises(MissingTruthError, match=r"has no recorded planted effects"):
        main(["ground-truth", "--model", str(model_dir), "--data", str(data_dir), "--out", str(tmp_path),
              "--subjects", "2", "--attributes", "adhd"])
