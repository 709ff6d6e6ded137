import json

import pytest

from igat.config import ConfigError, ExperimentConfig, with_overrides


def _fields(exc: ConfigError) -> set[str]:
    return {f for f, _ in exc.errors}


def test_defaults_validate_and_round_trip_yaml_json(tmp_path):
    cfg = ExperimentConfig(name="rt", tags=["a"], seed=3)
    assert ExperimentConfig.from_text(cfg.to_yaml()) == cfg
    assert ExperimentConfig.from_text(cfg.to_json()) == cfg
    cfg.save(tmp_path / "c.yaml")
    cfg.save(tmp_path / "c.json")
    assert ExperimentConfig.load(tmp_path / "c.yaml") == cfg
    assert json.loads((tmp_path / "c.json").read_text())["seed"] == 3


@pytest.mark.parametrize(
    "data,field,words",
    [
        ({"igat": {"attack": {"eps": -0.1}}}, "igat.attack.eps", "greater than or equal to 0"),
        ({"model": {"num_members": 0}}, "model.num_members", "greater than or equal to 1"),
        ({"defense": {"name": "nope"}}, "defense.name", "unknown defense 'nope'"),
        ({"defense": {"name": "pgd_at", "params": {"eps": -1}}}, "defense.params.eps", "greater than or equal to 0"),
        ({"defense": {"name": "pgd_at", "params": {"bogus": 1}}}, "defense.params.bogus", "Extra inputs"),
        ({"eval": {"attacks": [{"name": "pgd", "params": {"steps": 0}}]}}, "eval.attacks.0.params.steps", "greater than or equal to 1"),
        ({"eval": {"combiners": ["median"]}}, "eval.combiners.0", "unknown combiner"),
        ({"optim": {"milestones": [5, 3]}}, "optim.milestones", "strictly increasing"),
        ({"optim": {"lr": 0}}, "optim.lr", "greater than 0"),
        ({"unknown_section": 1}, "unknown_section", "Extra inputs"),
    ],
)
def test_validation_names_the_field(data, field, words):
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_dict(data)
    assert field in _fields(info.value), info.value.errors
    assert words in str(info.value)


def test_several_errors_reported_together():
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_dict({"model": {"num_members": 0}, "train": {"epochs": 0}})
    assert {"model.num_members", "train.epochs"} <= _fields(info.value)


def test_bad_text_is_a_config_error():
    with pytest.raises(ConfigError, match="mapping"):
        ExperimentConfig.from_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        ExperimentConfig.from_text("a: [unclosed")


def test_overrides():
    cfg = with_overrides(ExperimentConfig(), ["train.epochs=3", "defense.params.steps=7", "eval.combiners=[average]"])
    assert cfg.train.epochs == 3 and cfg.defense.params["steps"] == 7 and cfg.eval.combiners == ["average"]
    with pytest.raises(ConfigError) as info:
        with_overrides(cfg, ["model.num_members=-2"])
    assert "model.num_members" in _fields(info.value)
