"""Reliability, round 3 (issue #41): every attack of the red team, run against the real commands, printed as a
table of attack, expected, observed and held, and kill trials that land during the work.

    uv run python -m benchmarks.reliability                  # every attack and the kill trials (~5 min, 2 cores)
    uv run python -m benchmarks.reliability --parts attacks  # the attacks only

Attacks that can block (two writers, kills, Ctrl-C, the app) run as real `sd-bridge` processes; the others call
`bridge.cli.main` in this process, which prints and exits as the console script does. The hostile inputs are
built here (tests/ imports the builders), never committed. Models: tiny-t5 with a random LoRA (its rewrites
differ from the base model's), toy-clip for the index.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from benchmarks.results import recorded

HINT = "for every option"  # the usage hint a flag error adds under its one line
_TMP: str | None = None  # the run's temp folder, left out of what the table shows


# ------------------------------------------------------------------------------------------- hostile inputs

def tiny_adapter(root: Path, seed: int = 0) -> Path:
    """A LoRA on tiny-t5 with random (not identity) weights: its rewrites differ from the base model's."""
    import torch
    from peft import LoraConfig, get_peft_model

    from bridge.models import presets
    from bridge.models.loading import load_rewriter
    from bridge.models.rewriter import AdapterMeta

    model, _ = load_rewriter(presets.rewriter("tiny-t5"))
    torch.manual_seed(seed)
    get_peft_model(model, LoraConfig(r=4, lora_alpha=32, target_modules=["q", "v", "o", "wo"],
                                     task_type="SEQ_2_SEQ_LM", init_lora_weights=False)).save_pretrained(root)
    AdapterMeta("tiny-t5", "tiny-v1", "tiny-sd15", "tiny-sd2", max_new_tokens=12).save(root)
    return root


def hostile_adapters(adapter: Path, root: Path):
    """(name, directory, what its one-line refusal says) for each adapter the red team handed `export`: a copy
    of a good adapter with one thing wrong."""
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(adapter / "adapter_model.safetensors")
    blob = (adapter / "adapter_model.safetensors").read_bytes()
    config = json.loads((adapter / "adapter_config.json").read_text())
    meta = json.loads((adapter / "sd_bridge_adapter.json").read_text())
    lora = next(iter(weights))
    cases = {
        "truncated safetensors": ("adapter_model.safetensors", blob[: len(blob) // 2], "not a valid safetensors file"),
        "safetensors header bomb": ("adapter_model.safetensors", (2**40).to_bytes(8, "little") + b"{}",
                                    "header length"),
        "pickle as safetensors": ("adapter_model.safetensors", "pickle", "not a valid safetensors file"),
        "link to /etc/passwd": ("adapter_model.safetensors", "link", "not a valid safetensors file"),
        "PREFIX_TUNING config": ("adapter_config.json", config | {"peft_type": "PREFIX_TUNING"}, "not a LoRA adapter"),
        "nested metadata JSON": ("sd_bridge_adapter.json", "[" * 100_000 + "]" * 100_000, "bad JSON"),
        "target ../../etc/passwd": ("sd_bridge_adapter.json", meta | {"target": "../../etc/passwd"},
                                    "pipeline directory"),
        "metadata of the wrong type": ("sd_bridge_adapter.json", meta | {"max_new_tokens": "lots"},
                                       "max_new_tokens must be int"),
        "NaN weights": ("adapter_model.safetensors", weights | {lora: weights[lora] * float("nan")}, "not finite"),
        "an extra tensor": ("adapter_model.safetensors", weights | {"evil": torch.zeros(3)}, "not a LoRA weight"),
        "a LoRA tensor for no module": ("adapter_model.safetensors",
                                        weights | {"base_model.model.nowhere.lora_A.weight": torch.zeros(4, 4)},
                                        "no place for"),
    }
    for name, (file, value, message) in cases.items():
        bad = root / name.replace(" ", "-").replace("/", "_")
        shutil.copytree(adapter, bad)
        path = bad / file
        path.unlink()
        if value == "pickle":
            torch.save(weights, path)
        elif value == "link":
            path.symlink_to("/etc/passwd")
        elif isinstance(value, bytes):
            path.write_bytes(value)
        elif isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values()):
            save_file(value, path)
        else:
            path.write_text(value if isinstance(value, str) else json.dumps(value))
        yield name, bad, message


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height: what a decompression bomb looks like before it is decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def hostile_collection(ref: Path) -> tuple[list[str], dict[str, str]]:
    """A folder of two good drawings and every file the red team put beside them: (good names, {bad name: what
    its row error says})."""
    from toyworld import world as w

    ref.mkdir(parents=True)
    for i, scene in enumerate([w.Scene(shape="circle", colour="red", background="white"),
                               w.Scene(shape="square", colour="blue", background="black")]):
        w.draw(scene, 100 + i).save(ref / f"good{i}.png")
    png = (ref / "good0.png").read_bytes()
    bad = {"empty.png": (lambda p: p.write_bytes(b""), "not a readable image"),
           "fake.jpg": (lambda p: p.write_text("this is not a picture"), "not a readable image"),
           "truncated.png": (lambda p: p.write_bytes(png[: len(png) // 2]), "not a readable image"),
           "bomb.png": (lambda p: png_header_only(p, 11_000, 11_000), "121 Mpx, over the limit"),
           "passwd.png": (lambda p: p.symlink_to("/etc/passwd"), "not a readable image"),
           "zero.png": (lambda p: p.symlink_to("/dev/zero"), "a device"),
           "fifo.png": (lambda p: os.mkfifo(p), "a FIFO"),
           "dangling.png": (lambda p: p.symlink_to(ref / "nowhere.png"), "cannot open")}
    for name, (make, _) in bad.items():
        make(ref / name)
    os.close(os.open(os.fsencode(ref) + b"/caf\xe9.png", os.O_CREAT | os.O_WRONLY))  # a Latin-1 file name
    return ["good0.png", "good1.png"], {n: m for n, (_, m) in bad.items()} | {"caf\ufffd.png": "not UTF-8"}


def hostile_arguments(tmp: Path) -> list[tuple[list[str], str]]:
    """Every command with an --out of the wrong kind, a missing input or a directory for a file: (argv, what its
    one error line says). `tmp` holds `afile`, an empty `adir` and `good.txt`."""
    afile, adir, good, missing = tmp / "afile", tmp / "adir", tmp / "good.txt", tmp / "missing.txt"
    writes_dir = "is a file; this command writes a directory"
    return [
        (["demo", "--out", str(afile)], writes_dir),
        (["gather", "--prompts", str(missing), "--out", str(tmp / "g")], "not found"),
        (["gather", "--prompts", str(good), "--out", str(afile)], writes_dir),
        (["translate", "--adapter", str(missing), "a cat"], "adapter directory not found"),
        (["translate", "--network-map", str(missing), "a cat"], "network map not found"),
        (["translate", "--network-map", str(adir), "a cat"], "Is a directory"),
        (["migrate", str(missing), "--out", str(tmp / "m.txt")], "input not found"),
        (["migrate", str(good), "--out", str(adir)], "is a directory; a txt library is migrated into a file"),
        (["serve", "--adapter", str(missing)], "adapter directory not found"),
        (["serve", "--reference", str(missing)], "is not a reference index"),
        (["train", "--data", str(missing), "--out", str(tmp / "t")], "is not a gathered dataset"),
        (["train", "--data", str(adir), "--out", str(afile)], writes_dir),
        (["eval", "--prompts", str(missing), "--out", str(tmp / "e")], "prompt source not found"),
        (["eval", "--prompts", str(good), "--out", str(afile)], writes_dir),
        (["toyworld", "build", "--out", str(afile)], writes_dir),
        (["toyworld", "prompts", "--out", str(adir)], "is a directory; this command writes a file"),
        (["toyworld", "sheet", "--out", str(afile)], "must name an image file"),
        (["toyworld", "sheet", "--out", str(adir / "x.png"), "--prompts", "a dragon in the snow"], "not a word"),
        (["sweep", "--prompts", str(missing), "--out", str(tmp / "s")], "prompt source not found"),
        (["sweep", "a cat", "--out", str(afile)], writes_dir),
        (["index", str(missing), "--out", str(tmp / "i")], "does not exist"),
        (["index", str(adir), "--out", str(afile)], writes_dir),
        (["export", str(missing), "--out", str(tmp / "x")], "not an sd-bridge adapter directory"),
        (["export", str(adir), "--out", str(tmp / "x")], "not an sd-bridge adapter directory"),
        (["inspect", "--network-map", str(missing), "a cat"], "network map not found"),
        (["learn", str(missing), "--out", str(tmp / "l")], "library not found"),
        (["learn", str(good), "--out", str(afile), "--source", "tiny-sd15", "--target", "tiny-sd2"], writes_dir),
    ]


def damage(kind: str, path: Path) -> None:
    """A translation cache file broken the ways the red team broke it."""
    if kind == "garbage":
        path.write_bytes(b"this is not a database\n" * 64)
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    elif kind == "bit flips":
        data = bytearray(path.read_bytes())
        for i in range(100, len(data), 97):
            data[i] ^= 0xFF
        path.write_bytes(bytes(data))
    elif kind == "foreign schema":
        path.unlink()
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE rewrites (id INTEGER, payload BLOB)")
    elif kind == "read-only":
        path.chmod(0o444)
        path.parent.chmod(0o555)
    elif kind == "directory":
        path.unlink()
        path.mkdir()
    elif kind == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif kind == "a cached <lora:evil:1>":
        with sqlite3.connect(path) as db:
            db.execute("UPDATE rewrites SET value = ?", (json.dumps(["(evil:1.5) <lora:evil:1> a fox", False, False]),))
    else:
        raise ValueError(kind)


# ------------------------------------------------------------------------------------------- running commands

def cli(argv: list[str]) -> tuple[int, list[str]]:
    """`sd-bridge ARGV` in this process: (exit status, the lines of stderr that are not a progress bar or the
    usage hint), and whether a traceback appeared is in the lines."""
    from bridge.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as stop:
            code = stop.code
        except BaseException as raised:  # noqa: BLE001 - a traceback is an observation here, not a crash
            code, err = 99, io.StringIO(f"Traceback: {type(raised).__name__}: {raised}")
    text = err.getvalue().replace(_TMP, "") if _TMP else err.getvalue()
    return code, [x for x in text.splitlines() if x.strip() and HINT not in x and "%|" not in x]


def proc(argv: list[str], timeout: float = 300, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bridge.cli", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def one_line(code: int, lines: list[str], message: str, expect_code=None) -> tuple[str, bool]:
    observed = f"exit {code}: {lines[0][:90] if lines else '(nothing)'}" + (f" (+{len(lines) - 1} lines)"
                                                                               if len(lines) > 1 else "")
    ok = (code not in (0, None) if expect_code is None else code == expect_code)
    return observed, ok and len(lines) == 1 and message in lines[0] and "Traceback" not in lines[0]


# ------------------------------------------------------------------------------------------- the attacks

def attacks(tmp: Path) -> list[dict]:
    rows: list[dict] = []
    tmp.mkdir(parents=True)

    def row(group: str, attack: str, expected: str, observed: str, held: bool) -> None:
        observed = observed.replace(_TMP, "") if _TMP else observed
        rows.append({"group": group, "attack": attack, "expected": expected, "observed": observed, "held": bool(held)})
        print(f"{'held' if held else 'BROKEN':6} {group}: {attack}: {observed}", flush=True)

    adapter = tiny_adapter(tmp / "adapter")
    lib = tmp / "lib.txt"  # long enough that the second run starts while the first writes
    lib.write_text("".join(f"(masterpiece:1.2), a cat number {k} in the snow, <lora:x:1>\n" for k in range(100_000)))

    # 1. Two migrates into one --out.
    out = tmp / "two.txt"
    a, b = proc(["migrate", str(lib), "--out", str(out), "--no-progress"]), None
    while not (tmp / "two.txt.lock").exists() and a.poll() is None:
        time.sleep(0.01)
    b = proc(["migrate", str(lib), "--out", str(out), "--no-progress"])
    (_, err_a), (_, err_b) = a.communicate(timeout=300), b.communicate(timeout=300)
    assert cli(["migrate", str(lib), "--out", str(tmp / "ref.txt"), "--no-progress"])[0] == 0
    same = out.read_bytes() == (tmp / "ref.txt").read_bytes()
    row("concurrency", "two migrates into one --out", "one refused naming the other's pid; output = one run's",
        f"exits {a.returncode} and {b.returncode}; "
        f"{(err_a + err_b).replace(_TMP or '', '').strip().splitlines()[-1][:80] if (err_a + err_b).strip() else ''}; "
        f"output {'identical' if same else 'DIFFERENT'}",
        sorted([a.returncode, b.returncode]) == [0, 1] and "pid" in (err_a + err_b) and same)

    # 2. export: someone's X.partial, --out a file, two at once.
    theirs = tmp / "x.partial"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    code, lines = cli(["export", str(adapter), "--out", str(tmp / "x"), "--overwrite", "--backend", "torch"])
    observed, ok = one_line(code, lines, "holds files an export does not write")
    row("export", "--out X beside someone's X.partial/, with --overwrite", "refused; their files kept", observed,
        ok and (theirs / "notes.txt").read_text() == "mine")
    (tmp / "afile").write_text("mine\n")
    code, lines = cli(["export", str(adapter), "--out", str(tmp / "afile")])
    row("export", "--out naming a file", "one line, the file kept", *one_line(code, lines, "is a file"))
    first = proc(["export", str(adapter), "--out", str(tmp / "e1"), "--backend", "torch"])
    while not (tmp / "e1.lock").exists() and first.poll() is None:
        time.sleep(0.01)
    second = proc(["export", str(adapter), "--out", str(tmp / "e1"), "--backend", "torch"])
    (_, e1), (_, e2) = first.communicate(timeout=300), second.communicate(timeout=300)
    row("export", "two exports into one --out", "one refused naming the other's pid",
        f"exits {first.returncode} and {second.returncode}",
        sorted([first.returncode, second.returncode]) == [0, 1] and "pid" in (e1 + e2))
    for name, bad, message in hostile_adapters(adapter, tmp / "hostile-adapters"):
        started = time.perf_counter()
        code, lines = cli(["export", str(bad), "--out", str(tmp / "hx"), "--backend", "torch"])
        observed, ok = one_line(code, lines, message)
        row("export", f"hostile adapter: {name}", "one line before any work, nothing written",
            f"{observed} in {time.perf_counter() - started:.1f} s", ok and not (tmp / "hx").exists())

    # 3. The translation cache.
    prompts = tmp / "cache-lib.txt"
    prompts.write_text("".join(f"a red fox number {k} <lora:x:1>\n" for k in range(30)))
    want = tmp / "cache-want.txt"
    assert cli(["migrate", str(prompts), "--out", str(want), "--adapter", str(adapter), "--translation-cache",
                "off", "--no-progress"])[0] == 0
    for kind in ("garbage", "truncated", "bit flips", "foreign schema", "read-only", "directory", "fifo",
                 "a cached <lora:evil:1>"):
        folder = tmp / f"cache-{kind.replace(' ', '-')}"
        folder.mkdir()
        cache = folder / "t.sqlite"
        first_out = folder / "first.txt"
        assert cli(["migrate", str(prompts), "--out", str(first_out), "--adapter", str(adapter),
                    "--translation-cache", str(cache), "--no-progress"])[0] == 0
        if kind != "a cached <lora:evil:1>":  # the damage is to the database file itself, not its WAL
            for extra in folder.glob("t.sqlite-*"):
                extra.unlink()
        damage(kind, cache)
        p = proc(["migrate", str(prompts), "--out", str(folder / "out.txt"), "--adapter", str(adapter),
                  "--translation-cache", str(cache), "--no-progress"])
        try:
            _, err = p.communicate(timeout=120)
        finally:
            folder.chmod(0o755)
        same = (folder / "out.txt").is_file() and (folder / "out.txt").read_bytes() == want.read_bytes()
        row("cache", f"{kind} cache", "cache-unusable or misses; exit 0; output = no cache's",
            f"exit {p.returncode}, {'warned' if 'cache-unusable' in err else 'no warning'}, output "
            f"{'identical' if same else 'DIFFERENT'}{', Traceback' if 'Traceback' in err else ''}",
            p.returncode == 0 and same and "Traceback" not in err and "evil" not in
            (folder / "out.txt").read_text())

    # 4. index on a hostile collection, and a hand-edited index.
    from bridge.sweep.reference import ReferenceIndex

    good, bad = hostile_collection(tmp / "collection")
    p = proc(["index", str(tmp / "collection"), "--out", str(tmp / "idx"), "--scorer", "toy-clip"])
    try:
        _, err = p.communicate(timeout=120)
        listed = (tmp / "idx" / "errors.jsonl").read_text().splitlines()
        errors = {e["path"]: e["error"] for e in map(json.loads, listed)}
        indexed = sorted(ReferenceIndex.open(tmp / "idx").paths)
        observed = f"exit {p.returncode}, {len(errors)} row errors, {len(indexed)} indexed"
        held = (p.returncode == 3 and indexed == good and set(errors) == set(bad)
                and all(bad[n] in errors[n] for n in bad) and "Traceback" not in err)
    except (subprocess.TimeoutExpired, OSError, ValueError) as failure:
        p.kill()
        observed, held = f"{type(failure).__name__}: {failure}"[:90], False
    row("index", f"{len(bad)} hostile files beside {len(good)} images (bomb, FIFO, /dev/zero, links, bad names)",
        "each a listed row error, the rest indexed, exit 3", observed, held)
    meta_path = tmp / "idx" / "index.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(meta | {"rows": 1_000_000_000}))
    index = ReferenceIndex.open(tmp / "idx")
    row("index", "index.json says rows: 1e9", "sizes from the shards", f"{len(index.embeddings)} rows allocated",
        len(index.embeddings) == len(good))
    index.paths[0] = "../../../../etc/passwd"
    try:
        index.image(0)
        observed, held = "read it", False
    except ValueError as refused:
        said = "leaves the collection" if "leaves the collection" in str(refused) else str(refused)
        observed, held = f"refused: {said}", True
    row("index", "a reference path edited to ../../etc/passwd", "refused", observed, held)

    # 5. sweep bounds.
    for argv, message in ((["--seeds", "1000000"], "over the limit of 256"), (["--cell", "60000"], "cell must be"),
                          (["--seeds", "256", "--cell", "1024"], "over the limit of 64 Mpx")):
        code, lines = cli(["sweep", "a cat", "--out", str(tmp / "sw"), *argv])
        row("sweep", " ".join(argv), "one line naming the limit", *one_line(code, lines, message))
    code, lines = cli(["sweep", "x" * 180_000, "--out", str(tmp / "sw")])
    row("sweep", "a 180 KB prompt", "one line naming the limit", *one_line(code, lines, "--max-chars"))

    # 6. No traceback from any command: hostile arguments, and a real Ctrl-C mid-migrate.
    args = tmp / "args"
    (args / "adir").mkdir(parents=True)
    (args / "afile").write_text("mine\n")
    (args / "good.txt").write_text("a crimson circle\na big azure square\n")
    for argv, message in hostile_arguments(args):
        code, lines = cli(argv)
        row("commands", " ".join(a.replace(str(args) + "/", "") for a in argv), "one line, non-zero exit",
            *one_line(code, lines, message))
    big = tmp / "big.txt"
    big.write_text("".join(f"(masterpiece:1.2), a cat number {k}, <lora:x:1>\n" for k in range(100_000)))
    p = proc(["migrate", str(big), "--out", str(tmp / "big-out.txt"), "--no-progress"])
    while not list(tmp.glob("big-out.txt.*")) and p.poll() is None:
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    lines = err.strip().splitlines()
    row("commands", "Ctrl-C during migrate", "one line, exit 130", f"exit {p.returncode}, {len(lines)} lines: "
        f"{lines[-1][:70] if lines else ''}", p.returncode == 130 and len(lines) == 1 and "interrupted" in lines[0])

    # 7. The app.
    rows += app_attacks(tmp / "serve")
    return rows


def app_attacks(root: Path) -> list[dict]:
    from benchmarks.app_load import ROOT, Server

    root.mkdir()
    server, rows = Server(root), []
    try:
        url = {"path": "https://example.com/lib.csv", "meta": {"_type": "gradio.FileData"}}
        status, text = server.call_api("batch", [url, "prompt", ""])
        rows.append({"group": "app", "attack": "a URL as an API file input", "expected": "403 before Gradio fetches it",
                     "observed": f"{status}: {text[:60]}", "held": status == 403})
        local = {"path": str(ROOT / "pyproject.toml"), "meta": {"_type": "gradio.FileData"}}
        status, text = server.call_api("batch", [local, "prompt", ""])
        leaks = [x for x in (str(ROOT), "[project]") if x in text]
        rows.append({"group": "app", "attack": "a server path as an API file input", "expected": "an error naming no "
                     "server path", "observed": f"{status}, {'leaks ' + ', '.join(leaks) if leaks else 'no path'}",
                     "held": status == 200 and "event: error" in text and not leaks})
        statuses = [server.upload(f"big{k}.txt", 9 << 20) for k in range(20)]
        kept = sum(p.stat().st_size for p in Path(server.gradio_tmp).rglob("big*.txt"))
        ok = statuses.count(200)
        rows.append({"group": "app", "attack": "twenty 9 MB uploads from one client", "expected":
                     "429 past --upload-budget (100mb); at most that kept", "observed":
                     f"{ok} accepted, {statuses.count(429)} refused (429), {kept / 2**20:.0f} MiB kept",
                     "held": set(statuses[ok:]) == {429} and ok <= 11 and kept <= 100 << 20})
    finally:
        server.stop()
    for r in rows:
        print(f"{'held' if r['held'] else 'BROKEN':6} app: {r['attack']}: {r['observed']}", flush=True)
    return rows


# ------------------------------------------------------------------------------------------- kill trials

def _kill_at_random(argv: list[str], progress, rng: random.Random, kills: int, timeout: float = 300) -> list[float]:
    """Run `argv` and SIGKILL it `kills` times, each after `progress()` has moved on since the run started and
    a random further moment; returns when each kill landed (seconds after its start)."""
    landed = []
    for _ in range(kills):
        p = proc(argv)
        start, began = progress(), time.time()
        while p.poll() is None and progress() <= start and time.time() - began < timeout:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))
        if p.poll() is not None:
            raise RuntimeError(f"{' '.join(argv[:2])} finished before it was killed; give it more work")
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        landed.append(round(time.time() - began, 2))
    return landed


def kill_trials(tmp: Path, seed: int = 0) -> list[dict]:
    rng, rows = random.Random(seed), []
    tmp.mkdir(parents=True)

    # migrate with an adapter and its translation cache, killed 5 times while it generates.
    adapter = tiny_adapter(tmp / "adapter")
    lib = tmp / "lib.txt"
    words = ["fox", "cat", "castle", "harbour", "lighthouse", "forest", "city", "dragon", "portrait", "ship"]
    lib.write_text("".join(f"(masterpiece:1.2), a {words[k % 10]} number {k} at dusk, <lora:x:1>\n"
                           for k in range(1500)))
    ref = tmp / "ref.txt"
    assert cli(["migrate", str(lib), "--out", str(ref), "--adapter", str(adapter), "--translation-cache", "off",
                "--chunk-rows", "25", "--no-progress"])[0] == 0
    out, journal = tmp / "out.txt", tmp / "out.txt.journal"
    argv = ["migrate", str(lib), "--out", str(out), "--adapter", str(adapter), "--translation-cache",
            str(tmp / "cache.sqlite"), "--chunk-rows", "25", "--no-progress"]

    def rows_done() -> int:
        try:
            return json.loads(journal.read_text())["rows"]
        except (OSError, ValueError, KeyError):
            return 0

    landed = _kill_at_random(argv, rows_done, rng, 5)
    done_before = rows_done()
    final = proc(argv)
    final.communicate(timeout=600)
    same = out.read_bytes() == ref.read_bytes()
    rows.append({"group": "kills", "attack": "migrate with an adapter and its cache, killed 5 times mid-generation",
                 "expected": "byte-identical to an uninterrupted run", "observed":
                 f"kills at {landed} s; {done_before} of 1,500 rows done before the last rerun; output "
                 f"{'identical' if same else 'DIFFERENT'}", "held": final.returncode == 0 and same and
                 0 < done_before < 1500})

    # index, killed 3 times.
    from toyworld import world as w

    from bridge.sweep.reference import SHARD_ROWS, ReferenceIndex

    folder = tmp / "images"
    folder.mkdir()
    n = 3 * SHARD_ROWS + 700
    scenes = [w.Scene(shape=s, colour=c, background=b) for s in ("circle", "square", "triangle")
              for c in ("red", "blue", "yellow", "green") for b in ("white", "black", "beige")]
    for i in range(n):
        w.draw(scenes[i % len(scenes)], i).save(folder / f"{i:05d}.png")

    def run_from_lock(out: Path) -> tuple[subprocess.Popen, float]:
        """An index run started, once it holds its lock (taken when the flags are parsed: its work starts)."""
        p = proc(["index", str(folder), "--out", str(out), "--scorer", "toy-clip"])
        while not out.with_name(out.name + ".lock").exists() and p.poll() is None:
            time.sleep(0.01)
        return p, time.perf_counter()

    p, started = run_from_lock(tmp / "idx-ref")
    p.communicate(timeout=600)
    whole = time.perf_counter() - started  # the uninterrupted run's work, as a process (its imports included)
    shards = tmp / "idx" / "shards"
    argv = ["index", str(folder), "--out", str(tmp / "idx"), "--scorer", "toy-clip"]
    kept = []
    for _ in range(3):  # each kill at a random moment of what an uninterrupted run's work takes
        p, _ = run_from_lock(tmp / "idx")
        time.sleep(rng.uniform(0.2, 0.95) * whole)
        if p.poll() is not None:
            raise RuntimeError("index finished before it was killed; give it more work")
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        kept.append(len(list(shards.glob("*.parquet"))) if shards.is_dir() else 0)
    code, _ = cli(argv)
    a, b = ReferenceIndex.open(tmp / "idx-ref"), ReferenceIndex.open(tmp / "idx")
    same = a.paths == b.paths and bool((a.embeddings == b.embeddings).all())
    rows.append({"group": "kills", "attack": f"index of {n:,} images, killed 3 times", "expected":
                 "the same index as an uninterrupted run", "observed": f"an uninterrupted run takes {whole:.1f} s; "
                 f"shards kept after each kill {kept} of {len(a.meta['shards'])}; index "
                 f"{'identical' if same else 'DIFFERENT'}",
                 "held": code == 0 and same and 0 < max(kept) < len(a.meta["shards"])})  # a kill landed mid-build
    for r in rows:
        print(f"{'held' if r['held'] else 'BROKEN':6} kills: {r['attack']}: {r['observed']}", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| attack | expected | observed | held |", "|---|---|---|---|"]
    lines += [f"| {r['group']}: {r['attack']} | {r['expected']} | {r['observed']} | {'yes' if r['held'] else 'NO'} |"
              for r in rows]
    return "\n".join(lines)


@recorded("reliability")
def main(argv: list[str] | None = None) -> dict:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=["attacks", "kills"], default=["attacks", "kills"])
    parser.add_argument("--seed", type=int, default=0, help="moments of the kills")
    args = parser.parse_args(argv)
    rows: list[dict] = []
    global _TMP
    with tempfile.TemporaryDirectory(prefix="sd-bridge-reliability-") as tmp:
        _TMP = tmp + "/"  # the temp folder's name says nothing: paths are shown from the attack's own folder
        if "attacks" in args.parts:
            rows += attacks(Path(tmp) / "attacks")
        if "kills" in args.parts:
            rows += kill_trials(Path(tmp) / "kills", args.seed)
    print()
    print(table(rows))
    held = sum(r["held"] for r in rows)
    print(f"\n{held} of {len(rows)} attacks held")
    groups = {g: {"attacks": sum(r["group"] == g for r in rows),
                  "held": sum(r["held"] for r in rows if r["group"] == g)}
              for g in dict.fromkeys(r["group"] for r in rows)}
    return {"attacks": len(rows), "held": held, "all_held": held == len(rows), "by_group": groups,
            "not_held": [f"{r['group']}: {r['attack']}" for r in rows if not r["held"]],
            "kills": {r["attack"]: r["observed"] for r in rows if r["group"] == "kills"}}


if __name__ == "__main__":
    main()
