from datasets_scripts import build_instructions
from datasets_scripts.loading import load_config


def test_two_folders_with_the_same_name_are_not_confused(tmp_path):
    """datasets 5 keys its cache on the folder's basename: both folders below are called `data`."""
    small, large = tmp_path / "a" / "data", tmp_path / "b" / "data"
    build_instructions.main(["--out", str(small), "--subjects", "60", "--check-train", "30"])
    assert len(load_config(small, "subjects")["train"]) < 60
    build_instructions.main(["--out", str(large), "--subjects", "120", "--check-train", "30", "--seed", "1"])
    n_large = sum(len(split) for split in load_config(large, "subjects").values())
    n_small = sum(len(split) for split in load_config(small, "subjects").values())
    assert (n_small, n_large) == (60, 120)
