"""Typed run configs and the one parser that turns them into CLI flags and reads `--config run.yaml`.

Every command's settings are a dataclass (peft `LoraConfig`, trl `GRPOConfig` style): each field is
documented once in `metadata={"help": ...}`, defaults reproduce the reference run, and `__post_init__`
validates. `build_parser(cls)` turns the fields into flags; `parse_config(cls, argv)` returns an instance.
A YAML file given with `--config` supplies values first and flags on the command line override them;
YAML values go through the same argparse conversion as flags, so a bad type is reported the same way,
naming the key. `save_config` writes the resolved config beside every artifact.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from bridge.files import atomic_write

C = TypeVar("C")

CONFIG_FILENAME = "config.json"


class ConfigError(ValueError):
    """A config value or key is wrong; the message names it."""


def json_summary_field():
    """The `--json` flag of a long-running command (gather, migrate, train, eval): its summary as one JSON
    object on stdout, with the counts its text summary shows, and every log line on stderr."""
    return dataclasses.field(default=False, metadata={
        "help": "print the summary as one JSON object on stdout; log lines go to stderr"})


def summary_log(cfg: Any, log):
    """The log to use under `cfg.json`: stderr, so that stdout carries the JSON summary alone."""
    return functools.partial(print, file=sys.stderr) if getattr(cfg, "json", False) else log


def print_json_summary(cfg: Any, summary: dict[str, Any]) -> None:
    if getattr(cfg, "json", False):
        print(json.dumps(summary, default=str, ensure_ascii=False), flush=True)


def log_plan(cfg: Any, log, plan: dict[str, Any]) -> None:
    """A `--dry-run` plan: the JSON summary under `--json`, else a line per figure through the log."""
    if getattr(cfg, "json", False):
        print_json_summary(cfg, plan)
    else:
        for line in plan_lines(plan):
            log(line)


def plan_lines(plan: dict[str, Any], indent: str = "") -> list[str]:
    """`name: value` lines for a person; a nested mapping indented under its name, a list comma-joined, a
    float to 3 significant figures, an int with thousands separators."""
    lines = []
    for key, value in plan.items():
        name = str(key).replace("_", " ")
        if isinstance(value, dict):
            lines += [f"{indent}{name}:", *plan_lines(value, indent + "  ")]
        else:
            lines.append(f"{indent}{name}: {_plan_value(value)}")
    return lines


def _plan_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "none"}[value]
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_plan_value(v) for v in value) or "none"
    return str(value)


def did_you_mean(word: str, choices) -> str:
    """' (did you mean X?)' for the closest of `choices` to a mistyped `word`, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors in two lines, a suggestion for a mistyped flag or choice, and no usage dump.

    argparse prints the whole usage (16 lines for `train`) before a one-line error; the error is what a
    user needs, with the nearest flag or choice, and where the full list is.
    """

    def error(self, message: str):
        unknown = re.match(r"unrecognized arguments: (\S+)", message)
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if unknown and unknown.group(1).startswith("-"):
            flags = [o for a in self._actions for o in a.option_strings]
            message += did_you_mean(unknown.group(1).split("=")[0], flags)
        elif choice:
            message += did_you_mean(choice.group(1), re.findall(r"'([^']*)'", choice.group(2)))
        self.exit(2, f"{self.prog}: error: {message}\nsee `{self.prog} --help` for every option\n")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _scalar_converter(tp: Any):
    if tp in (int, float, str):
        return tp
    if tp is Path:
        return Path
    raise TypeError(f"unsupported config field type {tp!r}")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    return "none" if value is None else str(value).replace("%", "%%")


def _add_field(parser: argparse.ArgumentParser, f: dataclasses.Field, hints: dict[str, Any]) -> None:
    tp, optional = _unwrap_optional(hints[f.name])
    meta = dict(f.metadata)
    kwargs: dict[str, Any] = {"help": meta.get("help", ""), "dest": f.name}
    origin = get_origin(tp)
    if origin is Literal:
        choices = list(get_args(tp))
        kwargs.update(type=type(choices[0]), choices=choices)
    elif origin in (list, tuple):
        (inner,) = {a for a in get_args(tp) if a is not Ellipsis}
        kwargs.update(type=_scalar_converter(inner), nargs="*")
    elif tp is bool:
        # One flag that changes the default: `--flag` when off by default, `--no-flag` when on (never
        # `--no-no-syntax`); a bool flag never swallows the next word (a positional prompt). `--no-flag`
        # says what it does, from the field's `off_help`: its `help` describes the field being on.
        if f.default and "off_help" not in meta:
            raise TypeError(f"{f.name}: a bool field on by default needs metadata 'off_help' for its --no- flag")
        parser.add_argument(_bool_flag(f), action="store_const", const=not f.default, default=argparse.SUPPRESS,
                            dest=f.name, help=meta["off_help"] if f.default else kwargs["help"])
        return
    else:
        kwargs["type"] = _scalar_converter(tp)
    if "default:" not in kwargs["help"] and "(default" not in kwargs["help"]:  # the help states its own
        kwargs["help"] += f" (default: {_default_text(f)})"
    positional = meta.get("positional")
    if positional:
        kwargs.pop("dest")
        # A positional may also be given as a flag, so YAML files can set it.
        parser.add_argument(f.name, nargs=positional, default=argparse.SUPPRESS,
                            **{k: v for k, v in kwargs.items() if k not in ("nargs",)})
        kwargs["dest"] = f.name
        kwargs["help"] = argparse.SUPPRESS
    parser.add_argument(_flag(f.name), default=argparse.SUPPRESS, **kwargs)


def _bool_flag(f: dataclasses.Field) -> str:
    return _flag(f.name) if not f.default else "--no-" + f.name.replace("_", "-")


def build_parser(cls: type, prog: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one flag per dataclass field, plus `--config FILE.yaml`."""
    parser = _Parser(prog=prog, description=description or (cls.__doc__ or "").strip().split("\n")[0])
    parser.add_argument("--config", type=Path, default=None, help="YAML (or JSON) file of field values; flags override it")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli", True):
            _add_field(parser, f, hints)
    return parser


def _yaml_to_argv(cls: type, data: dict[str, Any], source: str) -> list[str]:
    """Turn a YAML mapping into flags, so it is converted and checked exactly as the command line is."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of field names to values, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)}
    hints = typing.get_type_hints(cls)
    argv: list[str] = []
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise ConfigError(f"{source}: unknown key {key!r} for {cls.__name__}{did_you_mean(name, known)} "
                              f"(known keys: {', '.join(sorted(known))})")
        if value is None:
            continue
        if _unwrap_optional(hints[name])[0] is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{source}: key {key!r} must be true or false, got {value!r}")
            if value != known[name].default:
                argv.append(_bool_flag(known[name]))
            continue
        argv.append(_flag(name))
        if isinstance(value, (list, tuple)):
            argv.extend(str(v) for v in value)
        elif isinstance(value, dict):
            raise ConfigError(f"{source}: key {key!r} must be a scalar or a list, got a mapping")
        else:
            argv.append(str(value))
    return argv


def load_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    return data or {}


def parse_config(cls: type[C], argv: list[str] | None = None, prog: str | None = None) -> C:
    """Parse `argv` (flags and an optional `--config` file) into a validated `cls` instance.

    Errors exit through argparse (status 2) with a message that names the bad key or flag.
    """
    parser = build_parser(cls, prog=prog)
    args = parser.parse_args(argv)
    if args.config is not None:
        try:
            file_argv = _yaml_to_argv(cls, load_config_file(args.config), str(args.config))
        except (ConfigError, yaml.YAMLError, json.JSONDecodeError) as err:
            parser.error(str(err))
        # File values first, then the command line: argparse keeps the last value of a flag.
        args = parser.parse_args(file_argv + list(argv or []))
    values = {k: v for k, v in vars(args).items() if k != "config"}
    try:
        return cls(**values)
    except (ConfigError, ValueError, TypeError) as err:
        parser.error(str(err))
        raise  # unreachable: parser.error exits


def config_to_dict(cfg: Any) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if dataclasses.is_dataclass(v):
            return config_to_dict(v)
        return v

    return {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def save_config(cfg: Any, directory: Path | str, filename: str = CONFIG_FILENAME, **extra: Any) -> Path:
    """Write the resolved config (plus `extra` facts such as resolved revisions) beside an artifact."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / filename
    payload = {"type": type(cfg).__name__, "config": config_to_dict(cfg), **extra}
    return atomic_write(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def first_difference(saved: dict[str, Any], now: dict[str, Any], keys: list[str] | None = None
                     ) -> tuple[str, Any, Any] | None:
    """(key, value saved, value now) for the first of `keys` (default: the keys of `now`) whose value differs;
    None when all agree. `now` is JSON-normalised (tuples become lists, paths strings) as `saved` was when
    written. Every resume or rerun check names the setting it refuses on through this."""
    now = json.loads(json.dumps(now, default=str))
    for key in now if keys is None else keys:
        if saved.get(key) != now.get(key):
            return key, saved.get(key), now.get(key)
    return None


def load_saved_config(cls: type[C], path: Path | str) -> C:
    """Read a config written by `save_config` back into `cls` (unknown keys are errors)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    values = data.get("config", data)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown} for {cls.__name__}")
    return cls(**values)
