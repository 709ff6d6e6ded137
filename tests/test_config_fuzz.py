"""Malformed configs through the loader, `igat train` and `igat submit` (issue 17, items 4-6).

Every case is generated deterministically (no random module): the numeric cases come from the config
models themselves, so a field added later is covered without touching this file. Each config must be
refused by all three with exactly one line on stderr that names the field, exit code 2, no traceback,
and nothing written (no run folder, no database, no broker needed).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from igat.cli import main
from igat.config import ConfigError, ExperimentConfig
from igat.config_input import MAX_CONFIG_BYTES, MAX_YAML_DEPTH, _admits_bool, _numeric

ROOT = Path(__file__).resolve().parents[1]


def _leaf_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted path, annotation) of every scalar field of the config, nested sections included."""
    out: list[tuple[str, Any]] = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _leaf_fields(ann, f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", ann))
    return out


def _at(path: str, raw: str) -> str:
    """YAML text setting the dotted ``path`` to the raw YAML scalar ``raw``."""
    parts = path.split(".")
    return "".join(f"{'  ' * i}{p}:\n" for i, p in enumerate(parts[:-1])) + f"{'  ' * (len(parts) - 1)}{parts[-1]}: {raw}\n"


def _numeric_cases() -> list[tuple[str, bytes, str]]:
    cases = []
    leaves = _leaf_fields(ExperimentConfig)
    floats = [(p, a) for p, a in leaves if _numeric(a) and not _admits_bool(a) and float in _flat(a)]
    ints = [(p, a) for p, a in leaves if _numeric(a) and not _admits_bool(a) and float not in _flat(a)]
    assert len(floats) >= 10 and len(ints) >= 10  # the generator found the config's numbers
    for i, (path, _) in enumerate(floats):
        raw = (".inf", "-.inf", ".nan")[i % 3]
        cases.append((f"nonfinite-{path}", _at(path, raw).encode(), path))
    for i, (path, _) in enumerate(ints):
        raw = ("true", "false")[i % 2]
        cases.append((f"bool-{path}", _at(path, raw).encode(), path))
    return cases


def _flat(annotation: Any) -> tuple[Any, ...]:
    return getattr(annotation, "__args__", (annotation,))


def _alias_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


HAND_CASES: list[tuple[str, bytes | str, str]] = [
    # wrong types
    ("type-members-word", "model:\n  num_members: eight\n", "model.num_members"),
    ("type-epochs-list", "train:\n  epochs: [1, 2]\n", "train.epochs"),
    ("type-lr-mapping", "optim:\n  lr: {a: 1}\n", "optim.lr"),
    ("type-seed-float", "seed: 1.5\n", "seed"),
    ("type-device", "device: 5\n", "device"),
    ("type-preset", "preset: best\n", "preset"),
    ("type-dataset", "data:\n  dataset: mnist\n", "data.dataset"),
    ("type-section-scalar", "train: 5\n", "train"),
    ("type-tags-scalar", "tags: 5\n", "tags"),
    ("type-milestones-bool", "optim:\n  milestones: [true, 3]\n", "optim.milestones"),
    ("type-date-name", "name: 2024-01-01\n", "name"),
    ("type-binary-name", "name: !!binary AAEC\n", "name"),
    # registry parameter models get the same checks
    ("param-bool", "defense:\n  name: pgd_at\n  params:\n    steps: true\n", "defense.params.steps"),
    ("param-inf", "defense:\n  name: pgd_at\n  params:\n    eps: .inf\n", "defense.params.eps"),
    ("attack-param-nan", "eval:\n  attacks:\n  - name: pgd\n    params: {eps: .nan}\n", "eval.attacks.0.params.eps"),
    ("param-unknown", "defense:\n  name: pgd_at\n  params: {bogus: 1}\n", "defense.params.bogus"),
    # negative and zero sizes
    ("neg-batch", "train:\n  batch_size: -1\n", "train.batch_size"),
    ("neg-members", "model:\n  num_members: -3\n", "model.num_members"),
    ("zero-epochs", "train:\n  epochs: 0\n", "train.epochs"),
    ("neg-synthetic", "data:\n  synthetic_train_size: -5\n", "data.synthetic_train_size"),
    ("neg-seed", "seed: -1\n", "seed"),
    ("huge-members", "model:\n  num_members: 100000\n", "model.num_members"),
    # duplicate keys at any level
    ("dup-top", "train:\n  epochs: 3\nseed: 1\ntrain:\n  batch_size: 8\n", "train"),
    ("dup-nested", "train:\n  epochs: 3\n  epochs: 200\n", "train.epochs"),
    ("dup-flow", "{seed: 1, seed: 2}\n", "seed"),
    ("dup-params", "defense:\n  name: pgd_at\n  params:\n    eps: 0.1\n    eps: 0.2\n", "defense.params.eps"),
    # empty documents
    ("empty", "", "config"),
    ("blank", "   \n\n", "config"),
    ("comments-only", "# nothing here\n", "config"),
    ("null", "null\n", "config"),
    # size, depth, aliases
    ("huge", "tags: [" + ", ".join(["x"] * (MAX_CONFIG_BYTES // 3 + 1)) + "]\n", "config"),
    ("deep", "a: " + "[" * (MAX_YAML_DEPTH + 5) + "]" * (MAX_YAML_DEPTH + 5) + "\n", "config"),
    ("very-deep", "a: " + "[" * 5000 + "]" * 5000 + "\n", "config"),
    ("alias-bomb", _alias_bomb(), "config"),
    ("alias-self", "a: &a [*a]\n", "config"),
    ("alias-undefined", "name: *nope\n", "config"),
    ("many-values", "tags: [" + ", ".join(f"t{i}" for i in range(20000)) + "]\n", "config"),
    # unknown fields
    ("unknown-top", "epochz: 3\n", "epochz"),
    ("unknown-nested", "train:\n  epochz: 3\n", "train.epochz"),
    ("unknown-int-key", "1: 2\n", "1"),
    # names and tags
    ("name-dotdot", "name: ../../x\n", "name"),
    ("name-slash", "name: a/b/c\n", "name"),
    ("name-backslash", "name: 'a\\b'\n", "name"),
    ("name-hidden", "name: .hidden\n", "name"),
    ("name-nul", 'name: "a\\0b"\n', "name"),
    ("name-escape", 'name: "\\e[31mred"\n', "name"),
    ("name-newline", 'name: "a\\nb"\n', "name"),
    ("name-empty", "name: ''\n", "name"),
    ("name-long", f"name: {'n' * 201}\n", "name"),
    ("tag-comma", "tags: [a, 'b,c']\n", "tags"),
    ("tag-control", 'tags: ["a\\tb"]\n', "tags"),
    ("tag-too-many", "tags: [" + ", ".join(f"t{i}" for i in range(40)) + "]\n", "tags"),
    ("tag-long", f"tags: [{'t' * 65}]\n", "tags"),
    ("output-dir-nul", 'output_dir: "runs/a\\0b"\n', "output_dir"),
    ("data-root-nul", 'data:\n  root: "/x\\0"\n', "data.root"),
    # not a YAML mapping, not text, not safe YAML
    ("top-list", "- a\n- b\n", "config"),
    ("top-scalar", "hello\n", "config"),
    ("top-number", "42\n", "config"),
    ("syntax", "a: [unclosed\n", "config"),
    ("two-documents", "seed: 1\n---\nseed: 2\n", "config"),
    ("python-tag", "name: !!python/object/apply:os.system ['touch pwned']\n", "config"),
    ("bad-timestamp", "name: 2024-13-45\n", "config"),
    ("binary-nul", bytes(range(256)) * 4, "config"),
    ("binary-latin1", "name: caf\xe9\n".encode("latin-1"), "config"),
    ("binary-elf", b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 64, "config"),
]

CASES = [(cid, text if isinstance(text, bytes) else text.encode(), field) for cid, text, field in HAND_CASES]
CASES += _numeric_cases()
assert len(CASES) >= 50 and len({c[0] for c in CASES}) == len(CASES)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _assert_one_line(rc: int, out: str, err: str, field: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, (rc, err)
    assert "Traceback" not in out + err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and field in lines[0], lines[0]
    assert len(lines[0]) < 1000, lines[0]


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cwd, runs folder and IGAT_HOME in tmp; no broker configured (a refused config must not need one)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IGAT_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("IGAT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IGAT_DATABASE_URL", f"sqlite:///{tmp_path / 'home' / 'igat.db'}")
    monkeypatch.delenv("IGAT_BROKER_URL", raising=False)
    return tmp_path


@pytest.mark.parametrize("cid,data,field", CASES, ids=[c[0] for c in CASES])
def test_malformed_config_is_refused_by_loader_train_and_submit(cid, data, field, sandbox, capsys):
    path = sandbox / "c.yaml"
    path.write_bytes(data)
    before = _files(sandbox)

    with pytest.raises(ConfigError) as info:
        ExperimentConfig.load(path)
    assert any(field in f for f, _ in info.value.errors), info.value.errors
    assert "\n" not in info.value.one_line()

    for argv in (["train", str(path)], ["submit", str(path)]):
        rc = main(argv)
        captured = capsys.readouterr()
        _assert_one_line(rc, captured.out, captured.err, field)
    assert _files(sandbox) == before  # no run folder, no database, no home


@pytest.mark.parametrize(
    "cid,config,argv_extra,field",
    [
        ("output-dir-up", "output_dir: ../x\n", [], "output_dir"),
        ("output-dir-absolute", "output_dir: /tmp/igat-fuzz-elsewhere\n", [], "output_dir"),
        ("output-dir-is-runs-root", "output_dir: runs\n", [], "output_dir"),
        ("output-dir-symlink-out", "output_dir: runs/link/x\n", [], "output_dir"),
        ("output-dir-under-file", "output_dir: runs/afile/x\n", [], "output_dir"),
        ("cli-output-dir-under-file", "name: ok\n", ["--output-dir", "runs/afile/x"], "--output-dir"),
        ("init-checkpoint-missing", "train:\n  init_checkpoint: nowhere/last.pt\n", [], "train.init_checkpoint"),
        ("override-bool", "name: ok\n", ["--set", "model.num_members=true"], "model.num_members"),
        ("override-inf", "name: ok\n", ["--set", "train.grad_clip=.inf"], "train.grad_clip"),
        ("override-dup", "name: ok\n", ["--set", "train={epochs: 1, epochs: 2}"], "train.epochs"),
        ("override-into-list", "name: ok\n", ["--set", "eval.attacks.0.name=x"], "eval.attacks.0.name"),
        ("override-malformed", "name: ok\n", ["--set", "=3"], "=3"),
    ],
)
def test_train_refuses_paths_and_overrides_before_any_work(cid, config, argv_extra, field, sandbox, capsys):
    (sandbox / "runs").mkdir()
    (sandbox / "runs" / "afile").write_text("a file where a folder would go")
    outside = sandbox / "outside"
    outside.mkdir()
    (sandbox / "runs" / "link").symlink_to(outside)
    path = sandbox / "c.yaml"
    path.write_text(config)
    before = _files(sandbox)
    rc = main(["train", str(path), *argv_extra])
    captured = capsys.readouterr()
    _assert_one_line(rc, captured.out, captured.err, field)
    assert _files(sandbox) == before
    assert not Path("/tmp/igat-fuzz-elsewhere").exists()


@pytest.mark.parametrize("kind", ["directory", "missing", "fifo"])
def test_train_and_submit_refuse_a_config_path_that_is_not_a_file(kind, sandbox, capsys):
    path = sandbox / "cfg"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)  # reading it would block forever
    before = _files(sandbox)
    for cmd in ("train", "submit"):
        rc = main([cmd, str(path)])
        captured = capsys.readouterr()
        _assert_one_line(rc, captured.out, captured.err, "config")
    assert _files(sandbox) == before


def test_submit_refuses_a_bad_name_argument_and_derived_names(sandbox, capsys):
    path = sandbox / "c.yaml"
    path.write_text(f"name: {'n' * 195}\nigat:\n  enabled: true\n")
    before = _files(sandbox)
    assert main(["submit", str(path), "--name", "../etc"]) == 2
    _assert_one_line(2, "", capsys.readouterr().err, "--name")
    # The ablation derives <name>-<variant>, longer than a name may be: refused before the broker.
    assert main(["submit", str(path), "--ablation"]) == 2
    _assert_one_line(2, "", capsys.readouterr().err, "name")
    assert _files(sandbox) == before


def test_config_output_dir_inside_the_runs_folder_is_used(sandbox, capsys):
    """The rule is a confinement, not a ban: a config's output_dir inside the runs folder still works."""
    from tests.helpers import synthetic_config

    cfg = synthetic_config(name="inside", output_dir="runs/sub/inside", train={"eval_examples": 0})
    cfg.save(sandbox / "c.yaml")
    assert main(["train", str(sandbox / "c.yaml")]) == 0
    assert (sandbox / "runs" / "sub" / "inside" / "last.pt").is_file()
    assert "checkpoint:" in capsys.readouterr().out


def _run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IGAT_RUNS_DIR": str(cwd / "runs"), "IGAT_HOME": str(cwd / "home"),
           "IGAT_DATABASE_URL": f"sqlite:///{cwd / 'home' / 'igat.db'}", "PYTHONPATH": str(ROOT)}
    env.pop("IGAT_BROKER_URL", None)
    return subprocess.run([sys.executable, "-m", "igat", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_processes_print_one_line_and_no_traceback(tmp_path):
    """A few cases as real processes: what a user sees on the terminal, interpreter and all."""
    (tmp_path / "nul.yaml").write_text('name: "run\\0x"\n')
    (tmp_path / "junk.yaml").write_bytes(bytes(range(256)))
    (tmp_path / "dup.yaml").write_text("train:\n  epochs: 3\ntrain:\n  epochs: 200\n")
    for args, field in ((["train", "nul.yaml"], "name"), (["submit", "junk.yaml"], "config"),
                        (["submit", "dup.yaml"], "train")):
        proc = _run_cli(args, tmp_path)
        _assert_one_line(proc.returncode, proc.stdout, proc.stderr, field)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dup.yaml", "junk.yaml", "nul.yaml"]
