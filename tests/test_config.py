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


def test_ordinary_yaml_still_loads():
    """The guards refuse ambiguity, not YAML: merges may override merged keys, ``1e-4`` (a string in
    YAML 1.1) is still read as a number, plain names may have spaces and dots, ``{}`` means defaults."""
    text = (
        "name: ADP v1.2 run_3\ntags: [paper, 'ablation:opposite']\n"
        "optim: {weight_decay: 1e-4, lr: 1}\nmodel: {channels_last: true}\n"
        "eval:\n  attacks:\n  - &pgd {name: pgd, params: {steps: 5, eps: 0.03}}\n  - {<<: *pgd, name: cw}\n"
    )
    cfg = ExperimentConfig.from_text(text)
    assert cfg.name == "ADP v1.2 run_3" and cfg.optim.weight_decay == 1e-4 and cfg.optim.lr == 1.0
    assert cfg.model.channels_last is True
    assert [(a.name, a.params["steps"]) for a in cfg.eval.attacks] == [("pgd", 5), ("cw", 5)]
    assert ExperimentConfig.from_text("{}") == ExperimentConfig()


@pytest.mark.parametrize(
    "text,field,words",
    [
        ("train:\n  epochs: 3\ntrain:\n  batch_size: 8\n", "train", "duplicate key at line 3 (first given at line 1)"),
        ("", "config", "the config is empty"),
        ("model: {num_members: true}", "model.num_members", "not a boolean"),
        ("train: {grad_clip: .inf}", "train.grad_clip", "finite"),
        ("name: a/b", "name", "not a plain name"),
        ('name: "x\\0"', "name", "printable"),
        ("a: &a [x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n" + "".join(
            f"c{i}: &c{i} [{', '.join([f'*{p}'] * 10)}]\n" for i, p in enumerate(["b", "c0", "c1", "c2"])),
         "config", "through aliases"),
    ],
)
def test_ambiguous_or_oversized_text_is_refused(text, field, words):
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_text(text)
    assert field in _fields(info.value) and words in str(info.value), info.value.errors


def test_assignment_is_checked_too():
    cfg = ExperimentConfig()
    with pytest.raises(ValueError, match="not a boolean"):
        cfg.model.num_members = True
    with pytest.raises(ValueError, match="not a plain name"):
        cfg.name = "../x"
