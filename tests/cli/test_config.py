"""The one config parser: flags from dataclass fields, YAML files, errors that name the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.config import load_saved_config, parse_config, save_config


@dataclass
class Example:
    """An example config."""

    steps: int = field(default=10, metadata={"help": "optimiser steps"})
    lr: float = field(default=1e-4, metadata={"help": "learning rate"})
    algo: Literal["grpo", "raft"] = field(default="grpo", metadata={"help": "algorithm"})
    name: str | None = field(default=None, metadata={"help": "run name"})
    tags: list[str] = field(default_factory=list, metadata={"help": "tags"})
    verbose: bool = field(default=False, metadata={"help": "chatty"})
    out: Path = field(default=Path("out"), metadata={"help": "output dir"})
    prompt: str | None = field(default=None, metadata={"help": "prompt", "positional": "?"})

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


def test_defaults_and_flags():
    assert parse_config(Example, []) == Example()
    cfg = parse_config(Example, ["--steps", "3", "--algo", "raft", "--tags", "a", "b", "--verbose", "hello"])
    assert (cfg.steps, cfg.algo, cfg.tags, cfg.verbose, cfg.prompt) == (3, "raft", ["a", "b"], True, "hello")
    assert parse_config(Example, ["--prompt", "p"]).prompt == "p"


def test_one_flag_per_bool_and_one_default_per_help(capsys):
    """`--flag` turns an off-by-default bool on, `--no-flag` an on-by-default one off; nothing else exists
    (no `--no-verbose`, no `--no-no-syntax`), and a help text that states its default is not given a second."""
    assert parse_config(Switches, ["--no-syntax", "--no-progress"]) == Switches(no_syntax=True, progress=False)
    for wrong in (["--no-no-syntax"], ["--progress"]):
        with pytest.raises(SystemExit):
            parse_config(Switches, wrong)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        parse_config(Switches, ["--help"])
    help_text = capsys.readouterr().out
    assert "--no-no-syntax" not in help_text and help_text.count("(default") == 1  # `out` states its own


@dataclass
class Switches:
    no_syntax: bool = field(default=False, metadata={"help": "leave out the syntax baseline"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar", "off_help": "no progress bar"})
    out: str | None = field(default=None, metadata={"help": "where (default: beside the input)"})


def test_yaml_bools_map_onto_the_one_flag(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("no_syntax: true\nprogress: false\n")
    assert parse_config(Switches, ["--config", str(f)]) == Switches(no_syntax=True, progress=False)
    f.write_text("no_syntax: false\nprogress: true\n")
    assert parse_config(Switches, ["--config", str(f)]) == Switches()


@pytest.mark.parametrize("argv, hint", [(["--stpes", "3"], "did you mean --steps?"),
                                        (["--algo", "grp"], "did you mean grpo?")])
def test_usage_errors_are_two_lines_with_a_suggestion(capsys, argv, hint):
    with pytest.raises(SystemExit) as exc:
        parse_config(Example, argv, prog="sd-bridge x")
    err = capsys.readouterr().err
    assert exc.value.code == 2 and hint in err and len(err.strip().splitlines()) == 2, err


def test_yaml_then_flags_override(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("steps: 7\nlr: 0.5\ntags: [x, y]\nverbose: true\nout: somewhere\n")
    cfg = parse_config(Example, ["--config", str(f), "--steps", "8"])
    assert (cfg.steps, cfg.lr, cfg.tags, cfg.verbose, cfg.out) == (8, 0.5, ["x", "y"], True, Path("somewhere"))


@pytest.mark.parametrize("yaml_text, needle", [
    ("stepz: 3\n", "'stepz'"),
    ("steps: many\n", "--steps"),
    ("algo: ppo\n", "--algo"),
    ("steps: 0\n", "steps must be >= 1"),
    ("tags: {a: 1}\n", "'tags'"),
    ("verbose: maybe\n", "'verbose'"),
])
def test_yaml_errors_name_the_key(tmp_path, capsys, yaml_text, needle):
    f = tmp_path / "run.yaml"
    f.write_text(yaml_text)
    with pytest.raises(SystemExit) as exc:
        parse_config(Example, ["--config", str(f)])
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_flag_errors_name_the_flag(capsys):
    with pytest.raises(SystemExit):
        parse_config(Example, ["--steps", "x"])
    assert "--steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(Example, ["--no-such-flag", "1"])
    assert "--no-such-flag" in capsys.readouterr().err


def test_missing_config_file_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_config(Example, ["--config", str(tmp_path / "nope.yaml")])
    assert "not found" in capsys.readouterr().err


@given(steps=st.integers(1, 10**6), lr=st.floats(1e-9, 1e3, allow_nan=False),
       tags=st.lists(st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=8), max_size=4))
def test_saved_config_round_trips(tmp_path_factory, steps, lr, tags):
    cfg = Example(steps=steps, lr=lr, tags=tags)
    path = save_config(cfg, tmp_path_factory.mktemp("cfg"))
    back = load_saved_config(Example, path)
    assert back.steps == steps and back.lr == lr and back.tags == tags and str(back.out) == str(cfg.out)
