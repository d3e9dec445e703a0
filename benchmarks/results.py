"""Results files: every benchmark writes `benchmarks/results/NAME.json` (the command, the machine, the date, the
commit and its figures), and `docs/results.md` is generated from those files. The README and docs quote
figures only from there, each as a link that names the file and the figure (tests/docs/test_figures.py
checks every one), so a number that moves is rerun, never edited by hand.

    @recorded("toyworld_drift")
    def main(argv=None) -> dict: ...          # the figures it returns are the results file's `figures`

    uv run python -m benchmarks.results       # rewrite docs/results.md from the results files

Outside the repository's own runs (the tests call benchmark functions), SD_BRIDGE_RESULTS names another
folder, so a test never overwrites a measured file.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "results.md"
# CPU features that decide how fast int8/bf16 kernels run (ctranslate2, oneDNN): issue #44's ceiling depends on them.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def results_dir() -> Path:
    return Path(os.environ.get("SD_BRIDGE_RESULTS", ROOT / "benchmarks" / "results"))


def machine() -> dict:
    """The CPU model, cores and the kernels' instruction sets, memory, and the GPU when torch sees one."""
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        pages = 0
    gpu = None
    torch = sys.modules.get("torch")  # never imported here just to ask: a syntax benchmark stays torch-free
    if torch is not None and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
    return {"cpu": info.get("model name") or platform.processor() or platform.machine(),
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "isa": [f for f in ISA_FLAGS if f in flags], "memory_gb": round(pages / 2**30, 1), "gpu": gpu,
            "python": platform.python_version()}


def commit() -> str:
    """HEAD, with `+changes` when tracked files differ from it (the figures then come from uncommitted code)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def _plain(value):
    """Figures as JSON: NaN and infinities as null, paths and other objects as text, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def write(name: str, figures: dict, argv: list[str] | None = None, seconds: float | None = None,
          module: str | None = None) -> Path:
    import shlex

    from toyworld.presets import WEIGHTS_ENV

    # A toy world other than the committed one is part of what was measured (said once: `--weights` sets it).
    other = os.environ.get(WEIGHTS_ENV)
    env = [f"{WEIGHTS_ENV}={shlex.quote(other)}"] if other and not weights_variant(argv or []) else []
    record = {"name": name,
              "command": " ".join([*env, "uv run python -m", f"benchmarks.{module or name}",
                                   *map(shlex.quote, argv or [])]),
              "machine": machine(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "commit": commit(), "seconds": None if seconds is None else round(seconds, 1),
              "figures": _plain(figures)}
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    print(f"results: {path}")
    return path


def weights_variant(argv: list[str]) -> str:
    """`weights-NAME` for a run of a toy benchmark on another toy build (`--weights DIR/NAME`), else ""."""
    for i, arg in enumerate(argv):
        if arg.startswith("--weights="):
            return f"weights-{Path(arg.split('=', 1)[1]).name}"
        if arg == "--weights" and i + 1 < len(argv):
            return f"weights-{Path(argv[i + 1]).name}"
    return ""


def add_weights_flag(ap) -> None:
    """`--weights DIR` on a toy benchmark's parser: measure another toy build (`use_weights` after parsing)."""
    ap.add_argument("--weights", default=None, help="measure the toy build in DIR (`sd-bridge toyworld build --out "
                    "DIR`) instead of the committed one; the results file's name then ends in weights-DIRNAME")


def use_weights(directory: str | None) -> None:
    """Serve every toy preset from `directory` (a `toyworld build --out DIR`) for the rest of this process and
    the commands it starts; None keeps the committed build."""
    from toyworld.presets import WEIGHTS_ENV

    if directory:
        os.environ[WEIGHTS_ENV] = str(Path(directory).resolve())


def recorded(module: str, variant=lambda argv: ""):
    """A benchmark's `main(argv)` that writes its results file from the figures it returns: `MODULE.json`, or
    `MODULE-VARIANT.json` where `variant(argv)` names a run that measures something else (another algorithm)."""
    def wrap(main):
        @functools.wraps(main)
        def run(argv: list[str] | None = None, *args, **kwargs):
            import time

            argv = list(sys.argv[1:] if argv is None else argv)
            started = time.perf_counter()
            figures = main(argv, *args, **kwargs)
            name = "-".join(filter(None, [module, variant(argv)]))
            write(name, figures if isinstance(figures, dict) else {"result": figures}, argv,
                  time.perf_counter() - started, module)
            return figures
        return run
    return wrap


def load(folder: Path | None = None) -> dict[str, dict]:
    """Every results file by name."""
    folder = folder or ROOT / "benchmarks" / "results"
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))}


def lookup(record: dict, key: str):
    """A figure by its dotted path in `figures` (`drift.delta`; list items by index). A name that holds dots
    itself (`by_guidance.2.0`) is matched whole: the longest name that exists wins."""
    value, parts, i = record["figures"], key.split("."), 0
    while i < len(parts):
        if isinstance(value, list):
            value, i = value[int(parts[i])], i + 1
            continue
        j = next((j for j in range(len(parts), i, -1) if ".".join(parts[i:j]) in value), None)
        if j is None:
            raise KeyError(f"{key!r}: no {parts[i]!r} in {sorted(value)}")
        value, i = value[".".join(parts[i:j])], j
    return value


def _flat(value, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(value, dict):
        return [row for k, v in value.items() for row in _flat(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, list) and value and all(isinstance(v, (dict, list)) for v in value):
        return [row for i, v in enumerate(value) for row in _flat(v, f"{prefix}.{i}")]
    return [(prefix, value)]


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value) if len(value) <= 12 else f"{len(value)} values"
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def render(records: dict[str, dict]) -> str:
    """docs/results.md: one section per results file, its figures flattened to dotted keys (the keys the docs
    link to)."""
    lines = ["# Results", "",
             "Generated by `uv run python -m benchmarks.results` from `benchmarks/results/*.json`; do not edit. Each",
             "benchmark writes its file when it runs (`uv run python -m benchmarks.NAME`); the README and the docs",
             "quote these figures by their keys.", "",
             "| benchmark | machine | date | commit |", "|---|---|---|---|"]
    for name, r in records.items():
        m = r["machine"]
        lines.append(f"| [{name}](#{name}) | {m['cpu']}, {m['cores']} cores{', ' + m['gpu'] if m.get('gpu') else ''} "
                     f"| {r['date'][:10]} | `{r['commit']}` |")
    for name, r in records.items():
        m = r["machine"]
        lines += ["", f"## {name}", "", f"`{r['command']}`", "",
                  f"{m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, ISA {' '.join(m['isa']) or 'baseline'}"
                  f"{', GPU ' + m['gpu'] if m.get('gpu') else ', no GPU'}; {r['date']}, commit `{r['commit']}`"
                  + (f", {r['seconds']} s" if r.get("seconds") is not None else ""), "",
                  "| figure | value |", "|---|---|"]
        lines += [f"| `{key}` | {_cell(value)} |" for key, value in _flat(r["figures"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="rewrite docs/results.md from benchmarks/results/*.json")
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/results.md is out of date")
    args = parser.parse_args(argv)
    text = render(load())
    if args.check:
        return 0 if DOC.is_file() and DOC.read_text(encoding="utf-8") == text else 1
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC.relative_to(ROOT)} from {len(load())} results files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
