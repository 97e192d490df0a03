import pytest

from core.config import ConfigError, load_config


def test_profiles_load():
    tiny = load_config("tiny")
    paper = load_config("svd-vipseg")
    assert tiny.profile == "tiny" and paper.labels.frames.count == 25
    assert tiny.digest() != paper.digest()


def test_bad_choice_names_key_and_allowed_values():
    with pytest.raises(ConfigError) as e:
        load_config("tiny", ["labels.trajectory_source=optical-flow"])
    msg = str(e.value)
    assert "labels.trajectory_source" in msg and "'mask-center'" in msg and "'tracker'" in msg and "optical-flow" in msg


def test_out_of_range_and_unknown_keys():
    with pytest.raises(ConfigError, match=r"labels\.frames\.count"):
        load_config("tiny", {"labels.frames.count": 1})
    with pytest.raises(ConfigError, match=r"config key 'labels\.colour' is unknown"):
        load_config("tiny", ["labels.colour=red"])


def test_overrides_parse_yaml_values():
    cfg = load_config("tiny", ["labels.resolution=[128, 96]", "labels.include_void=true"])
    assert cfg.labels.resolution == (128, 96) and cfg.labels.include_void is True


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError, match="allowed: .*tiny"):
        load_config("huge")


def test_a_key_given_twice_is_an_error(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("runtime:\n  num_cpus: 2\nruntime:\n  num_cpus: 4\n")
    with pytest.raises(ConfigError, match="'runtime' appears twice"):
        load_config(str(p))
