"""The `sd-bridge` command: one subcommand per job, each parsed from its config dataclass.

Every command lives in `bridge.commands`, imported only when it runs, so `sd-bridge --help` is instant; the
library and the stages never import a command.
"""

from __future__ import annotations

import errno
import importlib
import sys
from pathlib import Path

from bridge.config import ConfigError, did_you_mean, parse_config
from bridge.files import OutputBusyError

# name -> (module, config class, run function, one-line help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "demo": ("bridge.commands.demo", "DemoConfig", "run_demo", "run the bridge end to end on the toy world, offline"),
    "doctor": ("bridge.commands.doctor", "DoctorConfig", "run_doctor",
               "print versions, device, caches and local presets"),
    "gather": ("bridge.commands.gather", "GatherConfig", "run_gather",
               "render prompts with the source model into a resumable image+embedding dataset"),
    "translate": ("bridge.commands.translate", "TranslateConfig", "run_translate",
                  "translate prompts for the target model (argument or stdin)"),
    "migrate": ("bridge.commands.migrate", "MigrateConfig", "run_migrate",
                "translate a prompt library (txt/csv/tsv/jsonl/infotext/PNG folder), resumable"),
    "serve": ("bridge.commands.serve", "ServeConfig", "run_serve", "serve the Gradio app (Translate, Compare, Batch) on 127.0.0.1"),
    "train": ("bridge.commands.train", "TrainConfig", "run_train",
              "train a LoRA rewriter so target renders agree with the gathered source images"),
    "learn": ("bridge.commands.learn", "LearnConfig", "run_learn",
              "train a bridge on your own prompt library in one resumable run: plan, gather, train, eval, export"),
    "eval": ("bridge.commands.eval", "EvalConfig", "run_eval",
             "compare identity, syntax and adapters on held-out prompts; writes a report"),
    "toyworld build": ("bridge.commands.toyworld_build", "BuildConfig", "run_build",
                       "train the toy world's models (toy-sd15, toy-sd2, toy-clip, toy-t5) from its grammar"),
    "toyworld prompts": ("bridge.commands.toyworld_prompts", "PromptsConfig", "run_prompts",
                         "draw fresh toy-world prompts with their drifts and oracle translations (JSONL)"),
    "toyworld sheet": ("bridge.commands.toyworld_sheet", "SheetConfig", "run_sheet",
                       "render a contact sheet: ground truth | toy-sd15 | toy-sd2 | toy-sd2 with the oracle"),
    "sweep": ("bridge.commands.sweep", "SweepConfig", "run_sweep",
              "render a prompt over many seeds per model: a grid, breadth per row, nearest references"),
    "index": ("bridge.commands.index", "IndexConfig", "run_index",
              "embed a reference collection (image folder, gathered or HF dataset) into a search index"),
    "export": ("bridge.commands.export", "ExportConfig", "run_export",
               "merge a trained adapter into its base and convert it for a fast inference engine (ctranslate2)"),
    "inspect": ("bridge.commands.inspect", "InspectConfig", "run_inspect",
                "show a prompt's syntax tree, weights, tags, token counts, warnings and syntax migration"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: sd-bridge COMMAND [options]   (sd-bridge COMMAND --help for its options; --version)", "",
             "commands:"]
    lines += [f"  {name:{width}s}  {info[3]}" for name, info in COMMANDS.items()]
    return "\n".join(lines)


def split_command(argv: list[str]) -> tuple[str, list[str]]:
    """(command name, its arguments); two-word commands too: `sd-bridge toyworld build`."""
    name, rest = argv[0], argv[1:]
    if rest and f"{name} {rest[0]}" in COMMANDS:
        name, rest = f"{name} {rest[0]}", rest[1:]
    return name, rest


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:  # Ctrl-C while a command's modules load, before it runs: nothing was written
        print("sd-bridge: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from bridge import __version__

        print(f"sd-bridge {__version__}")
        return 0
    name, rest = split_command(argv)
    subs = [c.split()[1] for c in COMMANDS if c.startswith(name + " ")]
    if name not in COMMANDS and subs:
        print(f"sd-bridge {name}: choose one of {', '.join(subs)} (sd-bridge {name} SUBCOMMAND --help)",
              file=sys.stderr)
        return 2
    if name not in COMMANDS:
        print(f"sd-bridge: unknown command {name!r}{did_you_mean(name, COMMANDS)}; `sd-bridge --help` lists them",
              file=sys.stderr)
        return 2
    module_name, cfg_name, fn_name, _ = COMMANDS[name]
    module = importlib.import_module(module_name)
    cfg = parse_config(getattr(module, cfg_name), rest, prog=f"sd-bridge {name}")
    _quiet_libraries()
    out = getattr(cfg, "out", None)
    existed = out is not None and Path(out).exists()
    if existed and name in WRITES_A_DIRECTORY | WRITES_A_FILE and (name in WRITES_A_DIRECTORY) != Path(out).is_dir():
        kind = ("a directory", "a file") if name in WRITES_A_DIRECTORY else ("a file", "a directory")
        print(f"sd-bridge {name}: error: --out {out} is {kind[1]}; this command writes {kind[0]}: choose another "
              "--out", file=sys.stderr)
        return 2
    try:
        with _one_run_at_a_time(out):
            result = getattr(module, fn_name)(cfg)
    except BaseException as err:
        _say_partial(name, out, existed, err)
        return _failure(name, err, out)
    return result if isinstance(result, int) else 0


def _one_run_at_a_time(out):
    """Every command that writes an output holds its lock while it runs (bridge.files.OutputLock): a second run on
    the same output is refused, naming the first one's pid. Under `accelerate launch` the main process (rank 0)
    holds it for the whole run; the other ranks write into the same output as its helpers."""
    import contextlib
    import os

    if out is None or int(os.environ.get("RANK", "0") or 0) != 0:
        return contextlib.nullcontext()
    from bridge.files import OutputLock

    return OutputLock(out)


def _say_partial(name: str, out, existed: bool, err: BaseException) -> None:
    """After a failure, a run that left output says where and how to go on: every command that writes a
    directory is resumable or writes atomically, so what it did is kept, never half-trusted silently."""
    if isinstance(err, (SystemExit, OutputBusyError, KeyboardInterrupt, OSError)):
        return  # their own line says how to go on; a busy output is the other run's
    left = [] if out is None else [p for p in (Path(out), Path(f"{out}.partial")) if p.exists()]
    if name in RESUME and left and not existed:
        print(f"sd-bridge {name}: partial output kept in {left[0]}; {RESUME[name]}", file=sys.stderr)


def _failure(name: str, err: BaseException, out=None) -> int:
    """The exit status of a failed command, after its one-line error; anything unforeseen is raised again."""
    if isinstance(err, (ConfigError, FileNotFoundError, ValueError)):
        print(f"sd-bridge {name}: error: {err}", file=sys.stderr)
        return 2
    if isinstance(err, _known_errors()):
        print(f"sd-bridge {name}: error: {err}", file=sys.stderr)
        return 1
    if isinstance(err, OSError) and err.errno in _DISK_ERRORS:
        print(f"sd-bridge {name}: error: {err.strerror}: {err.filename or '?'}; {_DISK_ERRORS[err.errno]}, then "
              f"{RESUME.get(name, 'rerun the same command')}", file=sys.stderr)
        return 1
    if isinstance(err, KeyboardInterrupt):  # Ctrl-C or SIGTERM (serve): what was done is kept, as after a kill
        how = RESUME.get(name)
        print(f"sd-bridge {name}: interrupted" + (f"; {how}" if how and out is not None else ""), file=sys.stderr)
        return 130
    if isinstance(err, OSError):  # the system refused something: its reason and the file, not a traceback
        where = f": {err.filename}" if err.filename else ""
        print(f"sd-bridge {name}: error: {err.strerror or err}{where}", file=sys.stderr)
        return 1
    raise err


# What --out names, checked before a command runs (migrate writes a file or a folder, by its input: it checks).
WRITES_A_DIRECTORY = {"demo", "gather", "train", "eval", "toyworld build", "sweep", "index", "export", "learn"}
WRITES_A_FILE = {"toyworld prompts", "toyworld sheet"}
# OS-level failures end in one line that says how to go on, not a traceback; what was done is kept.
_DISK_ERRORS = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space (disk quota)",
                errno.EROFS: "write somewhere writable", errno.EACCES: "fix the permissions",
                errno.EPERM: "fix the permissions"}
RESUME = {"migrate": "rerun the same command: it resumes where it stopped",
          "gather": "rerun the same command: finished shards are kept",
          "train": "rerun it with --resume latest: checkpoints are kept",
          "eval": "rerun the same command: cached renders are kept",
          "demo": "rerun the same command: the gathered renders are kept",
          "sweep": "rerun the same command: cached renders are kept",
          "index": "rerun the same command: finished shards are kept",
          "export": "rerun the same command: an unfinished export is started over",
          "learn": "rerun the same command: finished stages are kept and training resumes from its checkpoint"}


def _known_errors() -> tuple[type[Exception], ...]:
    from bridge.models.loading import ModelNotAvailableError

    return (ModelNotAvailableError, OutputBusyError)


def _quiet_libraries() -> None:
    """Silence per-component progress bars and load chatter; our own progress output is what users read.

    Through environment variables that the libraries read when they are imported, so a command that never
    needs them (inspect, translate without an adapter) never pays their import time (issue #13).
    """
    import os

    for key, value in (("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"),
                       ("TRANSFORMERS_VERBOSITY", "error"), ("DIFFUSERS_VERBOSITY", "error")):
        os.environ.setdefault(key, value)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
