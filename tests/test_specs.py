"""The torch-free specs (igat.specs) and the PyTorch implementations describe the same defenses, attacks and
combiners, and checking, planning and estimating a config never loads PyTorch (issue 16: the dashboard's Launch
page imported it for config validation, +465 MB and a slow first visit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from igat.attacks import ATTACKS
from igat.config import ConfigError, ExperimentConfig
from igat.defenses import DEFENSES
from igat.models.combiners import COMBINERS
from igat.specs.attacks import ATTACK_SPECS
from igat.specs.combiners import combiner_names
from igat.specs.defenses import DEFENSE_SPECS

ROOT = Path(__file__).resolve().parents[1]


def test_every_implementation_has_its_spec_and_inherits_it():
    assert DEFENSES.names() == DEFENSE_SPECS.names()
    assert ATTACKS.names() == ATTACK_SPECS.names()
    for name in DEFENSES:
        impl, spec = DEFENSES.get(name), DEFENSE_SPECS.get(name)
        assert issubclass(impl, spec) and impl.name == spec.name == name
        assert impl.Params is spec.Params and impl.recommended is spec.recommended
    for name in ATTACKS:
        impl, spec = ATTACKS.get(name), ATTACK_SPECS.get(name)
        assert issubclass(impl, spec) and impl.name == spec.name == name and impl.Params is spec.Params
        assert spec.summary, f"attack {name!r} has no summary for `igat list`"


def test_combiner_names_match_the_registered_functions():
    import igat.defenses  # noqa: F401  (SoE registers its combiner on import)

    assert combiner_names() == COMBINERS.names()


def test_config_checks_still_name_the_field():
    with pytest.raises(ConfigError) as exc:
        ExperimentConfig.from_dict({"defense": {"name": "adp", "params": {"alpha": -1}}})
    assert "defense.params.alpha" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        ExperimentConfig.from_dict({"defense": {"name": "dverge", "params": {"layer": 30}}, "model": {"depth": 20}})
    assert "defense.params.layer" in str(exc.value) and "1..20" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        ExperimentConfig.from_dict({"eval": {"combiners": ["median"]}})
    assert "eval.combiners.0" in str(exc.value) and "soe" in str(exc.value)


def test_planned_rows_keep_their_keys_whichever_module_plans_them():
    """The planner validates parameters through the specs; the keys stored results are found by must not move."""
    from igat.attacks import build_attack
    from igat.config import AttackSpec
    from igat.eval_plan import plan_rows, row_key

    specs = [AttackSpec(name="pgd", params={"steps": 7}), AttackSpec(name="cw")]
    rows = plan_rows(specs, ["average"], 2, 5000, per_member=False, settings="s")
    assert [r.num_examples for r in rows] == [5000, 1000]  # CW's own cap
    for row in rows:
        attack = build_attack(row.spec.name, row.spec.params)
        assert row.eval_key == row_key("s", "ensemble", "average", attack.params, row.spec, row.num_examples)
    with pytest.raises(Exception, match="restarts > 1 needs random_start"):
        plan_rows([AttackSpec(name="pgd", params={"restarts": 2, "random_start": False})], ["average"], 2, 10)


CHECK_WITHOUT_TORCH = textwrap.dedent("""
    import json, sys
    from igat.config import ExperimentConfig, deep_merge
    from igat.eval_plan import plan_rows
    from igat.presets import apply_preset, igat_defaults
    from igat.protocols import PROTOCOLS, apply_protocol, estimate_seconds
    from igat.specs.defenses import DEFENSE_SPECS

    checked = 0
    for name in DEFENSE_SPECS.names():
        spec = DEFENSE_SPECS.get(name)
        data = deep_merge(ExperimentConfig().to_dict(), spec.recommended)
        data["defense"] = {"name": name, "params": spec.Params().model_dump(mode="json")}
        cfg = ExperimentConfig.from_dict(data)
        cfg = ExperimentConfig.from_dict(deep_merge(cfg.to_dict(), igat_defaults(name, "cifar10")))
        cfg = apply_preset(cfg, "reference-code")
        for protocol in PROTOCOLS:
            planned = apply_protocol(cfg, protocol)
            assert estimate_seconds(planned).member_passes > 0
            assert plan_rows(list(planned.eval.attacks), planned.eval.combiners, 8, 10000)
        ExperimentConfig.from_text(cfg.to_yaml())
        checked += 1
    print(json.dumps({"torch": "torch" in sys.modules, "checked": checked}))
""")


def test_configs_are_checked_planned_and_estimated_without_torch():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", CHECK_WITHOUT_TORCH], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["checked"] == len(DEFENSE_SPECS.names())
    assert result["torch"] is False, "checking or estimating a config imported torch"
