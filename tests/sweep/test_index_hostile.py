"""`sd-bridge index` on a collection a red team filled (issue #41): every file that is not an image it can read
is a listed row error and the rest is indexed; nothing blocks, nothing decodes a bomb, and an index edited by
hand can neither read outside its collection nor ask for memory its shards do not hold."""

from __future__ import annotations

import json

import pytest

from benchmarks.reliability import hostile_collection, png_header_only


def test_bad_files_are_listed_row_errors_and_the_rest_is_indexed(tmp_path, capsys):
    from bridge.cli import main
    from bridge.sweep.reference import ReferenceIndex

    ref, out = tmp_path / "ref", tmp_path / "idx"
    good, bad = hostile_collection(ref)
    assert main(["index", str(ref), "--out", str(out), "--scorer", "toy-clip"]) == 3
    said = capsys.readouterr()
    assert "could not be read" in said.out and "Traceback" not in said.err
    errors = {e["path"]: e["error"] for e in map(json.loads, (out / "errors.jsonl").read_text().splitlines())}
    assert set(errors) == set(bad) and all(bad[name] in errors[name] for name in bad), errors
    index = ReferenceIndex.open(out)
    assert sorted(index.paths) == good and index.meta["rows"] == len(good)
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

    png_header_only(tmp_path / "big.png", 8_000, 8_000)  # 64 Mpx: 192 MB if it were decoded
    with pytest.raises(UnreadableImage, match="64 Mpx, over the limit of 50 Mpx"):
        open_image(tmp_path / "big.png")
    png_header_only(tmp_path / "huge.png", 30_000, 30_000)  # 900 Mpx: past PIL's own ceiling too
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
