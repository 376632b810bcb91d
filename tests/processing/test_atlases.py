"""Atlas tables and their subnetworks: own labels, derived from coordinates, or a mapping file."""

import json

import numpy as np
import pytest

from modeling_fcnllm import FCNEncoderConfig
from processing.atlases import load_atlas, read_atlas_table
from processing.network_assignment import agreement, agreement_table, nearest_networks


def _network_of(atlas, region):
    return atlas.network_names[atlas.network_assignment[atlas.labels.index(region)]]


def test_aal116_gets_yeo7_networks_with_subcortex_and_cerebellum_of_their_own():
    atlas = load_atlas("aal116")
    assert atlas.num_rois == 116 and atlas.network_names[-2:] == ["Subcortical", "Cerebellum"]
    assert _network_of(atlas, "Calcarine_L") == "Vis" and _network_of(atlas, "Postcentral_R") == "SomMot"
    assert _network_of(atlas, "Cingulum_Post_L") == "Default"
    assert _network_of(atlas, "Thalamus_R") == "Subcortical" and _network_of(atlas, "Vermis_6") == "Cerebellum"
    assert sum(atlas.network_names[i] == "Cerebellum" for i in atlas.network_assignment) == 26
    assert atlas.network_source.startswith("derived")
    # the encoder accepts it: indices 0..K-1, no gaps
    config = FCNEncoderConfig(num_rois=116, network_assignment=atlas.network_assignment,
                              network_names=atlas.network_names)
    assert config.num_networks == len(atlas.network_names) == 9


@pytest.mark.parametrize("name", ["power264", "dosenbach160", "seitzman300"])
def test_every_coordinate_atlas_gets_a_derived_assignment(name):
    atlas = load_atlas(name, networks="yeo7")
    assert len(atlas.network_assignment) == atlas.num_rois
    assert sorted(set(atlas.network_assignment)) == list(range(atlas.num_networks))
    assert set(atlas.network_names) <= {"Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default",
                                        "Subcortical", "Cerebellum"}


def test_labelled_atlases_keep_their_own_labels_by_default():
    assert "fronto-parietal" in load_atlas("dosenbach160").network_names
    assert load_atlas("schaefer100-17").num_networks == 17


def test_derivation_recovers_a_schaefer_atlas_own_labels():
    # the method checked on an atlas whose true Yeo-7 labels are known (other resolution than the reference)
    own = load_atlas("schaefer200-7")
    derived = load_atlas("schaefer200-7", networks="yeo7")
    names = lambda a: [a.network_names[i] for i in a.network_assignment]
    assert agreement(names(own), names(derived), {n: n for n in own.network_names})["accuracy"] > 0.85


def test_agreement_with_dosenbach_and_seitzman_is_far_above_chance():
    rows = {r["atlas"]: r for r in agreement_table()}
    assert rows["dosenbach160"]["accuracy"] > 0.6 and rows["seitzman300"]["accuracy_cortical"] > 0.6
    assert all(0.2 < r["ari"] < 1.0 for r in rows.values())


def test_user_table_with_coordinates_and_structures(tmp_path):
    path = tmp_path / "cc3.csv"
    path.write_text("region,x,y,z,structure\nocc,10,-95,5,cortical\nthal,-10,-18,8,subcortical\ncb,20,-60,-40,"
                    "cerebellum\n")
    atlas = read_atlas_table(path, name="cc3")
    assert [atlas.network_names[i] for i in atlas.network_assignment] == ["Vis", "Subcortical", "Cerebellum"]
    assert atlas.name == "cc3" and atlas.coords.shape == (3, 3)


def test_mapping_file_overrides_and_must_cover_every_region(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("region,x,y,z\na,10,-95,5\nb,-40,20,30\n")
    mapping = tmp_path / "m.json"
    mapping.write_text(json.dumps({"a": "N1", "b": "N2"}))
    atlas = read_atlas_table(table, networks=mapping)
    assert atlas.network_names == ["N1", "N2"] and atlas.network_source == "mapping file m.json"
    mapping.write_text(json.dumps({"a": "N1", "zz": "N2"}))
    with pytest.raises(ValueError, match=r"1 region\(s\) without a network \(e.g. \['b'\]\).*not in the atlas \(e.g. \['zz'\]\)"):
        read_atlas_table(table, networks=mapping)


def test_table_without_coordinates_and_no_mapping_says_what_is_needed(tmp_path):
    path = tmp_path / "names.csv"
    path.write_text("region\na\nb\n")
    with pytest.raises(ValueError, match="no network labels and no x, y, z coordinates.*mapping file.*network"):
        read_atlas_table(path)
    mapping = tmp_path / "m.csv"
    mapping.write_text("region,network\na,X\nb,Y\n")
    assert read_atlas_table(path, networks=mapping).network_names == ["X", "Y"]


def test_nearest_networks_picks_the_closest_centroid():
    ref = np.array([[0.0, 0, 0], [10, 0, 0]])
    assert nearest_networks(np.array([[1.0, 0, 0], [9, 1, 0]]), ref, ["A", "B"]) == ["A", "B"]
