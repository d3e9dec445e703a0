"""`sd-bridge index` on a collection a red team filled (issue #41): every file that is not an image it can read
is a listed row error and the rest is indexed; nothing blocks, nothing decodes a bomb, and an index edited by
hand can neither read outside its collection nor ask for memory its shards do not hold."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import pytest


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height: what a decompression bomb looks like before it is decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@pytest.fixture
def hostile(tmp_path):
    from toyworld import world as w

    ref = tmp_path / "ref"
    ref.mkdir()
    good = [w.Scene(shape="circle", colour="red", background="white"), w.Scene(shape="square", colour="blue",
                                                                                background="black")]
    for i, scene in enumerate(good):
        w.draw(scene, 100 + i).save(ref / f"good{i}.png")
    png = (ref / "good0.png").read_bytes()
    bad = {
        "empty.png": lambda p: p.write_bytes(b""),
        "fake.jpg": lambda p: p.write_text("this is not a picture"),
        "truncated.png": lambda p: p.write_bytes(png[: len(png) // 2]),
        "bomb.png": lambda p: _png_header_only(p, 11_000, 11_000),  # 121 Mpx
        "passwd.png": lambda p: p.symlink_to("/etc/passwd"),
        "zero.png": lambda p: p.symlink_to("/dev/zero"),
        "fifo.png": lambda p: os.mkfifo(p),
        "dangling.png": lambda p: p.symlink_to(tmp_path / "nowhere.png"),
        "folder.png": lambda p: p.mkdir(),
    }
    for name, make in bad.items():
        make(ref / name)
    os.close(os.open(os.fsencode(ref) + b"/caf\xe9.png", os.O_CREAT | os.O_WRONLY))  # a Latin-1 file name
    return ref, len(good), len(bad)  # folder.png is a directory: os.walk does not list it as a file


def test_bad_files_are_listed_row_errors_and_the_rest_is_indexed(hostile, tmp_path, capsys):
    from bridge.cli import main
    from bridge.sweep.reference import ReferenceIndex

    ref, good, _ = hostile
    out = tmp_path / "idx"
    assert main(["index", str(ref), "--out", str(out), "--scorer", "toy-clip"]) == 3
    said = capsys.readouterr()
    assert "could not be read" in said.out and "Traceback" not in said.err
    errors = {e["path"]: e["error"] for e in map(json.loads, (out / "errors.jsonl").read_text().splitlines())}
    assert set(errors) == {"empty.png", "fake.jpg", "truncated.png", "bomb.png", "passwd.png", "zero.png",
                           "fifo.png", "dangling.png", "caf\ufffd.png"}
    assert "Mpx" in errors["bomb.png"] and "over the limit" in errors["bomb.png"]
    assert "FIFO" in errors["fifo.png"] and "device" in errors["zero.png"] and "UTF-8" in errors["caf\ufffd.png"]
    index = ReferenceIndex.open(out)
    assert sorted(index.paths) == ["good0.png", "good1.png"] and index.meta["rows"] == good
    # A rerun embeds nothing and lists the same errors again.
    assert main(["index", str(ref), "--out", str(out), "--scorer", "toy-clip"]) == 3
    assert "0 embedded this run" in capsys.readouterr().out
    assert {json.loads(x)["path"] for x in (out / "errors.jsonl").read_text().splitlines()} == set(errors)
    # A larger pixel limit is a new build of the refused image (here still unreadable: its data is a stub).
    assert main(["index", str(ref), "--out", str(out), "--scorer", "toy-clip", "--max-pixels", "200000000"]) == 3
    bomb = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines() if "bomb" in x][0]
    assert "over the limit" not in bomb["error"]


def test_the_pixel_limit_is_checked_before_decoding(tmp_path):
    from bridge.sweep.reference import UnreadableImage, open_image

    _png_header_only(tmp_path / "big.png", 8_000, 8_000)  # 64 Mpx: 192 MB if it were decoded
    with pytest.raises(UnreadableImage, match="64 Mpx, over the limit of 50 Mpx"):
        open_image(tmp_path / "big.png")
    _png_header_only(tmp_path / "huge.png", 30_000, 30_000)  # 900 Mpx: past PIL's own ceiling too
    with pytest.raises(UnreadableImage, match="decompression-bomb limit"):
        open_image(tmp_path / "huge.png", max_pixels=10**10)


def test_a_hand_edited_index_reads_nothing_outside_and_sizes_come_from_the_shards(tmp_path):
    from toyworld import world as w

    from bridge.cli import main
    from bridge.sweep.reference import ReferenceIndex

    ref = tmp_path / "ref"
    ref.mkdir()
    w.draw(w.Scene(shape="circle", colour="red", background="white"), 1).save(ref / "a.png")
    w.draw(w.Scene(shape="square", colour="blue", background="black"), 2).save(ref / "b.png")
    out = tmp_path / "idx"
    assert main(["index", str(ref), "--out", str(out), "--scorer", "toy-clip"]) == 0
    meta_path = out / "index.json"
    meta = json.loads(meta_path.read_text())
    # rows: 1e9 would ask for 128 GB if it were believed.
    meta_path.write_text(json.dumps(meta | {"rows": 1_000_000_000, "dim": 1_000_000}))
    index = ReferenceIndex.open(out)
    assert len(index) == 2 and index.meta["rows"] == 2
    assert tuple(index.embeddings.shape) == (2, meta["dim"]) and index.meta["dim"] == meta["dim"]
    # A path edited to leave the collection is refused; a shard name edited to leave the index too.
    index.paths[0] = "../../../etc/passwd"
    with pytest.raises(ValueError, match="leaves the collection"):
        index.image(0)
    index.paths[0] = "/etc/passwd"
    with pytest.raises(ValueError, match="leaves the collection"):
        index.image(0)
    assert index.image(1).size == w.draw(w.Scene(shape="square", colour="blue", background="black"), 2).size
    meta_path.write_text(json.dumps(meta | {"shards": [dict(meta["shards"][0], file="../../evil.parquet")]}))
    with pytest.raises(ValueError, match="damaged reference index"):
        ReferenceIndex.open(out)
    meta_path.write_text("{not json")
    with pytest.raises(ValueError, match="damaged reference index"):
        ReferenceIndex.open(out)
