"""A reference collection embedded once with the scorer, and exact nearest-neighbour search in it (issue #14).

"How close is a generated image to an image in the training set?" An index is a directory:

    INDEX/index.json          scorer, source, dimension, rows, and one entry per shard
    INDEX/shards/00000.parquet   columns path, caption, embedding (float32[dim]); SHARD_ROWS rows each
    INDEX/config.json         the resolved `sd-bridge index` config
    INDEX/approximate.faiss   above 1M rows (or with --search approximate): an approximate search index

1. The source is listed in a stable order: a folder of images (recursive, sorted), a dataset written by
   `sd-bridge gather` (its embeddings are reused when its scorer is the index's), a dataset saved with
   `datasets.save_to_disk`, or `hf:NAME[:SPLIT]` (datasets.load_dataset; needs the hub or its cache).
2. Each shard of SHARD_ROWS items is embedded `batch` images at a time and written atomically, so memory is
   one batch of images and one shard of embeddings however large the collection, and an interrupted build
   resumes: a shard whose fingerprint (paths, sizes, mtimes; or the dataset's fingerprint) and scorer match
   is kept, so a rebuild of an unchanged folder embeds nothing. A file that is not an image it can read is a
   row error (kept in its shard's metadata and listed in INDEX/errors.jsonl), never the end of the run:
   anything but a regular file is skipped without being opened (a FIFO would block, /dev/zero never ends),
   and an image over `max_pixels` is refused from its header, before a decompression bomb is decoded.
3. Search is exact: cosine similarity by matrix product over chunks of CHUNK_ROWS references, keeping a
   running top-k (torch.topk), so a query batch never holds an [queries, N] matrix. At 1M references of
   dimension 1024 the float32 matrix is 4 GiB, which is where exact search stops being the right tool.
4. Above APPROXIMATE_FROM rows, search is approximate: a faiss inverted-file index with 8-bit scalar
   quantization (`IVF{nlist},SQ8`, inner product on unit vectors), built from the shards one at a time after
   k-means on a strided sample. It holds 1 byte per dimension instead of 4 and scans `nprobe` of its `nlist`
   lists per query. Chosen by measuring faiss IVF-Flat, IVF-SQ8, IVF-fp16, hnswlib and usearch HNSW on 100k
   clustered 1,024-d vectors (`benchmarks.reference_index --parts choose`): IVF-SQ8 built in 18 s against
   108-114 s for HNSW, searched 5-8x faster than HNSW at recall@10 0.979 (HNSW 0.995), and is the smallest.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from bridge.files import atomic_write
from bridge.models import presets

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
SHARD_ROWS = 4096
CHUNK_ROWS = 65536
APPROXIMATE_FROM = 1_000_000  # rows from which `--search auto` builds the approximate index
APPROXIMATE = "approximate.faiss"
# Lists scanned per query, by default: 2% of them, at least NPROBE (benchmarks.reference_index measures what that
# finds). `sd-bridge index --nprobe N` trades speed for recall without a rebuild.
NPROBE = 32
TRAIN_PER_LIST = 64  # k-means points per list (faiss warns under 39)
META = "index.json"
ERRORS = "errors.jsonl"
# Images over this many pixels are row errors, refused from the header before they are decoded: a 121 Mpx PNG
# bomb decodes into ~2 GB. 50 Mpx holds every camera sensor up to full-frame 8K (45-50 Mpx). `--max-pixels`.
MAX_PIXELS = 50_000_000
# A batch is embedded early once its decoded images hold this many pixels (3 bytes each), so a batch of large
# photographs stays near 0.8 GB instead of `batch` x their size.
BATCH_PIXELS = 256_000_000
# A render whose nearest reference has at least this cosine similarity is counted as a duplicate. Calibrated
# on the toy world with toy-clip (`python -m benchmarks.sweep_breadth`) on renders of 60 scenes drawn in the
# reference set and of 240 that are not: Youden's J on half of them was best at 0.924 with the first (ViT)
# toy-clip, rounded down. With today's ResNet toy-clip Youden picks 0.903 and the highest threshold that keeps
# 95% of one half's reference-scene renders flagged 0.940; 0.92, between them, flags 96.7% of those renders
# and 4.6% of the others. Other scorers have other similarity scales: calibrate with your own in/out
# examples and pass --duplicate-threshold.
DUPLICATE_THRESHOLD = 0.92


def check_index_dir(path) -> None:
    """A config's --reference must name an index directory (checked when flags are parsed, before any work)."""
    if path is not None and not (Path(path) / META).is_file():
        raise ValueError(f"{path} is not a reference index; build one with `sd-bridge index`")


# ---------------------------------------------------------------------------------------------- sources

@dataclass
class Source:
    """A listed reference collection: `items` in a stable order, and how to load one item's image."""

    kind: str  # folder | gathered | dataset | hub
    root: str
    paths: list[str]  # file paths relative to root, or "#row" for dataset rows
    captions: list[str]
    dataset: object = None
    image_column: str | None = None
    reuse_embeddings: bool = False  # a gathered dataset made with our scorer: its own embeddings are used
    skipped: list = field(default_factory=list)  # (name, reason) of files left out when listing

    def fingerprint(self, lo: int, hi: int) -> Iterator[str]:
        """What must be unchanged for the embeddings of items lo..hi to be reused: each file's path, size and
        mtime, or the dataset's own fingerprint. Computed per shard, so the listing holds only the paths."""
        if self.dataset is not None:
            base = getattr(self.dataset, "_fingerprint", self.root)
            yield from (f"{base}\x1f{i}" for i in range(lo, hi))
            return
        for rel in self.paths[lo:hi]:
            try:
                st = os.stat(os.path.join(self.root, rel))
            except OSError:  # gone since the listing: its row error is found when the shard is embedded
                yield f"{rel}\x1fmissing"
                continue
            yield f"{rel}\x1f{st.st_size}\x1f{st.st_mtime_ns}"

    def images(self, idx: Sequence[int], max_pixels: int = MAX_PIXELS) -> list:
        """The RGB images of items `idx`, each either a PIL image or the `UnreadableImage` that says why not."""
        if self.dataset is None:
            return [_try(open_image, Path(self.root) / self.paths[i], max_pixels) for i in idx]
        try:
            rows = self.dataset.select(list(idx))[self.image_column]
        except Exception:  # one undecodable row: decode them one at a time to find it
            rows = [_try(lambda i: self.dataset[int(i)][self.image_column], i) for i in idx]
        return [img if isinstance(img, UnreadableImage) else _try(_checked_rgb, img, max_pixels) for img in rows]


class UnreadableImage(Exception):
    """An item of the collection that is not an image the index can embed; its message says why."""


def _try(fn, *args):
    try:
        return fn(*args)
    except UnreadableImage as err:
        return err
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ... for damaged files
        return UnreadableImage(f"not a readable image: {str(err).splitlines()[0] if str(err) else type(err).__name__}")


def _checked_rgb(img, max_pixels: int):
    w, h = img.size
    if w * h > max_pixels:
        raise UnreadableImage(f"{w}x{h} is {w * h / 1e6:.0f} Mpx, over the limit of {max_pixels / 1e6:g} Mpx "
                              "(--max-pixels)")
    if not w or not h:
        raise UnreadableImage(f"an image of {w}x{h} pixels")
    return img.convert("RGB")


def open_image(path: Path, max_pixels: int = MAX_PIXELS):
    """The RGB image at `path`, or UnreadableImage. Opened without blocking and checked to be a regular file
    before a byte is read (a FIFO or a device swapped in after listing), and its size is checked from the
    header before decoding."""
    from PIL import Image

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise UnreadableImage(f"cannot open: {err.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        kind = os.fstat(fd).st_mode
        if not stat.S_ISREG(kind):
            raise UnreadableImage(f"not a regular file ({_kind(kind)})")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # max_pixels decides, below
            try:
                im = Image.open(f)  # reads the header only
            except Image.DecompressionBombError as err:  # PIL's own ceiling, 2 x Image.MAX_IMAGE_PIXELS
                raise UnreadableImage(f"over PIL's decompression-bomb limit: {err}") from None
        with im:
            return _checked_rgb(im, max_pixels)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


def list_source(reference: str, scorer: str, image_column: str | None = None,
                caption_column: str | None = None) -> Source:
    if reference.startswith("hf:"):
        import datasets

        name, _, split = reference[3:].partition(":")
        try:
            ds = datasets.load_dataset(name, split=split or "train")
        except Exception as err:  # offline, unknown name, unknown split: the library's first line says which
            why = (str(err).strip() or type(err).__name__).splitlines()[0]
            raise ValueError(f"could not load dataset {name!r} (split {split or 'train'}): {why}") from None
        return _dataset_source("hub", reference, ds, image_column, caption_column)
    root = Path(reference)
    if root.is_dir() and ((root / "dataset_info.json").is_file() or (root / "state.json").is_file()):
        import datasets

        ds = datasets.load_from_disk(str(root))
        gathered = {"embedding", "scorer", "image", "prompt"} <= set(ds.column_names)
        src = _dataset_source("gathered" if gathered else "dataset", str(root), ds, image_column or (
            "image" if gathered else None), caption_column or ("prompt" if gathered else None))
        src.reuse_embeddings = gathered and ds.unique("scorer") == [scorer]
        return src
    if root.is_file():
        raise ValueError(f"{reference} is a file; give a folder of images, a dataset directory or hf:NAME")
    rel, skipped = _list_folder(root)
    if not rel:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {reference}"
                         + (f" that can be read ({len(skipped)} skipped, the first: {skipped[0][0]}: {skipped[0][1]})"
                            if skipped else ""))
    return Source("folder", str(root.resolve()), rel, [""] * len(rel), skipped=skipped)


def _list_folder(root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """The image files under `root` as sorted relative path strings (a Path object per file would cost ~1 KB
    each on a million-image folder), and the (name, reason) of those skipped without being opened: names
    that are not UTF-8 (the index stores text) and anything that is not a regular file, links included."""
    rel, skipped = [], []
    for d, _, names in os.walk(root):
        for f in names:
            if not f.lower().endswith(IMAGE_SUFFIXES):
                continue
            name = os.path.relpath(os.path.join(d, f), root)
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                skipped.append((name.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                                "the file name is not UTF-8; rename it"))
                continue
            try:
                mode = os.stat(os.path.join(d, f)).st_mode  # follows a link to what it names
            except OSError as err:
                skipped.append((name, f"cannot open: {err.strerror}"))
                continue
            if stat.S_ISREG(mode):
                rel.append(name)
            else:
                skipped.append((name, f"not a regular file ({_kind(mode)})"))
    return sorted(rel), sorted(skipped)


def _dataset_source(kind: str, root: str, ds, image_column: str | None, caption_column: str | None) -> Source:
    import datasets

    if image_column is None:
        image_column = next((n for n, f in ds.features.items() if isinstance(f, datasets.Image)), None)
    if image_column is None or image_column not in ds.column_names:
        raise ValueError(f"{root} has no image column{f' {image_column!r}' if image_column else ''}; columns: "
                         f"{', '.join(ds.column_names)} (name one with --image-column)")
    caption_column = caption_column or next((c for c in ("prompt", "text", "caption") if c in ds.column_names), None)
    captions = [str(c) for c in ds[caption_column]] if caption_column else [""] * len(ds)
    return Source(kind, root, [f"#{i}" for i in range(len(ds))], captions, dataset=ds, image_column=image_column)


# ---------------------------------------------------------------------------------------------- build

def _shard_print(source: Source, lo: int, hi: int, scorer: str, max_pixels: int = MAX_PIXELS) -> str:
    h = hashlib.sha256(f"{scorer}\x1f{max_pixels}\n".encode())  # a new limit reconsiders refused images
    for fp in source.fingerprint(lo, hi):
        h.update(fp.encode("utf-8", "surrogatepass") + b"\n")
    return h.hexdigest()


def _write_shard(path: Path, paths: list[str], captions: list[str], emb, fingerprint: str,
                 errors: list[tuple[str, str]] = ()) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    emb = np.ascontiguousarray(emb, dtype=np.float32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1])
    table = pa.table({"path": pa.array(paths, pa.string()), "caption": pa.array(captions, pa.string()),
                      "embedding": column},
                     metadata={"fingerprint": fingerprint, "errors": json.dumps(list(errors))})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    atomic_write(path, buf.getvalue())


def _current_shard(path: Path, fingerprint: str) -> list | None:
    """The row errors of a shard that is current for `fingerprint` ([] when it has none), else None."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
        if meta.get(b"fingerprint", b"").decode() != fingerprint:
            return None
        return [tuple(e) for e in json.loads(meta.get(b"errors", b"[]"))]
    except Exception:  # a damaged shard is rebuilt
        return None


def _embed(source: Source, lo: int, hi: int, scorer, batch: int, max_pixels: int = MAX_PIXELS):
    """(kept item numbers, their embeddings, [(path, reason)] of the rest) for items lo..hi, embedded `batch`
    images at a time (or fewer, once a batch holds BATCH_PIXELS) into one array made at the first batch. Keeping
    a list of small per-batch arrays instead pins the top of the heap under each batch's freed image buffers, and
    glibc cannot give them back: the build's memory then grows with the shard (measured)."""
    import numpy as np

    out, kept, errors, pending, pixels = None, [], [], [], 0

    def flush():
        nonlocal out, pending, pixels
        emb = scorer.embed_images([img for _, img in pending]).numpy()
        if out is None:
            out = np.empty((hi - lo, emb.shape[1]), dtype=np.float32)
        out[len(kept) : len(kept) + len(emb)] = emb
        kept.extend(i for i, _ in pending)
        pending, pixels = [], 0

    for b in range(lo, hi, batch):
        idx = range(b, min(b + batch, hi))
        for i, img in zip(idx, source.images(idx, max_pixels)):
            if isinstance(img, UnreadableImage):
                errors.append((source.paths[i], str(img)))
                continue
            pending.append((i, img))
            pixels += img.width * img.height
            if len(pending) >= batch or pixels >= BATCH_PIXELS:
                flush()
    if pending:
        flush()
    if out is None:  # nothing in the shard could be read: an empty block of the scorer's width
        out = np.empty((0, scorer.embed_texts([""]).shape[1]), dtype=np.float32)
    return kept, out[: len(kept)], errors


def build_index(source: Source, out: Path, scorer, batch: int = 64, on_images=lambda n: None,
                search: str = "auto", nprobe: int | None = None, log=lambda *_: None,
                max_pixels: int = MAX_PIXELS) -> dict:
    """Embed `source` into `out` shard by shard (kept shards are not re-embedded), then build or keep the
    approximate index when `search` asks for one; returns index.json's dict. Items that cannot be read are
    listed in OUT/errors.jsonl, and meta["errors"] counts them."""
    import numpy as np

    shards_dir = out / "shards"
    shards_dir.mkdir(parents=True, exist_ok=True)
    n, shards, embedded, dim, errors = len(source.paths), [], 0, None, list(source.skipped)
    for k, lo in enumerate(range(0, n, SHARD_ROWS)):
        hi = min(lo + SHARD_ROWS, n)
        path, fingerprint = shards_dir / f"{k:05d}.parquet", _shard_print(source, lo, hi, scorer.preset.name,
                                                                                max_pixels)
        shard_errors = _current_shard(path, fingerprint)
        if shard_errors is None:
            if source.reuse_embeddings:  # a gathered dataset carries its own scorer embeddings
                kept, shard_errors = list(range(lo, hi)), []
                emb = np.asarray(source.dataset.select(range(lo, hi))["embedding"], dtype=np.float32)
            else:
                kept, emb, shard_errors = _embed(source, lo, hi, scorer, batch, max_pixels)
                embedded += len(kept)
            _write_shard(path, [source.paths[i] for i in kept], [source.captions[i] for i in kept], emb,
                         fingerprint, shard_errors)
        errors += shard_errors
        on_images(hi - lo)
        shards.append({"file": path.name, "rows": _rows(path), "fingerprint": fingerprint})
    for stale in sorted(shards_dir.glob("*.parquet"))[len(shards):]:  # a collection that shrank
        stale.unlink()
    if shards:
        dim = _dim(shards_dir / shards[0]["file"])
    if errors:
        atomic_write(out / ERRORS, "".join(json.dumps({"path": p, "error": e}) + "\n" for p, e in errors))
    else:
        (out / ERRORS).unlink(missing_ok=True)
    rows = sum(s["rows"] for s in shards)
    meta = {"format": 1, "source": {"kind": source.kind, "root": source.root, "image_column": source.image_column},
            "scorer": presets.describe(scorer.preset), "rows": rows, "dim": dim, "shards": shards,
            "embedded_this_run": embedded, "errors": len(errors)}
    if search == "approximate" or (search == "auto" and rows >= APPROXIMATE_FROM):
        meta["approximate"] = build_approximate(out, meta, nprobe, log)
    else:
        (out / APPROXIMATE).unlink(missing_ok=True)
    atomic_write(out / META, json.dumps(meta, indent=2) + "\n")
    return meta


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(path).num_rows


def _dim(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_schema(path).field("embedding").type.list_size


def _shard_embeddings(root: Path, shard: dict, dim: int, columns=("path", "caption", "embedding")):
    """(paths, captions, float32 [rows, dim] embeddings) of one shard, the columns not asked for as None."""
    import pyarrow.parquet as pq

    table = pq.read_table(root / "shards" / shard["file"], columns=list(columns))
    emb = None
    if "embedding" in columns:
        emb = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, dim)
    return (table.column("path").to_pylist() if "path" in columns else None,
            table.column("caption").to_pylist() if "caption" in columns else None, emb)


def build_approximate(out: Path, meta: dict, nprobe: int | None = None, log=lambda *_: None) -> dict:
    """The faiss IVF-SQ8 index of an index's shards (module docstring, step 4), kept when the shards it was
    built from are unchanged. Memory: the k-means sample, one shard, and the growing 8-bit index."""
    import faiss
    import numpy as np

    n, dim = meta["rows"], meta["dim"]
    if not n:
        raise ValueError("the reference collection is empty; nothing to build an approximate index of")
    nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))  # faiss guide: 4-16 x sqrt(N) lists, >= 39 points each
    kind = f"IVF{nlist},SQ8"
    nprobe = min(nlist, nprobe or max(NPROBE, nlist // 50))
    stamp = hashlib.sha256(json.dumps([kind, [s["fingerprint"] for s in meta["shards"]]]).encode()).hexdigest()
    try:
        previous = json.loads((out / META).read_text(encoding="utf-8")).get("approximate")
    except (OSError, ValueError):
        previous = None
    if previous and previous.get("stamp") == stamp and (out / APPROXIMATE).is_file():
        return previous | {"nprobe": nprobe}
    # 1. k-means on every `step`-th row: a sample of the whole collection, read one shard at a time. faiss's
    #    clustering is seeded (ClusteringParameters.seed, 1234), so the same shards give the same index.
    step = max(1, n // (TRAIN_PER_LIST * nlist))
    sample = np.concatenate([_unit(_shard_embeddings(out, s, dim, ("embedding",))[2][::step])
                             for s in meta["shards"]])
    index = faiss.index_factory(dim, kind, faiss.METRIC_INNER_PRODUCT)
    log(f"approximate index: k-means of {len(sample):,} rows into {nlist:,} lists")
    index.train(sample)
    del sample
    # 2. Add the shards one by one.
    for shard in meta["shards"]:
        index.add(_unit(_shard_embeddings(out, shard, dim, ("embedding",))[2]))
    tmp = out / (APPROXIMATE + ".partial")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, out / APPROXIMATE)
    return {"file": APPROXIMATE, "kind": kind, "nlist": nlist, "nprobe": nprobe, "stamp": stamp,
            "faiss": faiss.__version__}


def _unit(emb):
    import numpy as np

    emb = np.ascontiguousarray(emb, dtype=np.float32)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


# ---------------------------------------------------------------------------------------------- search

@dataclass
class Neighbour:
    path: str
    caption: str
    similarity: float
    row: int

    def as_dict(self) -> dict:
        return {"path": self.path, "caption": self.caption, "similarity": round(self.similarity, 6), "row": self.row}


class ReferenceIndex:
    """An index opened for search: its embeddings as one float32 matrix, its paths and captions."""

    def __init__(self, root: Path, meta: dict, embeddings, paths: list[str], captions: list[str]):
        self.root, self.meta, self.embeddings, self.paths, self.captions = root, meta, embeddings, paths, captions
        self._source = None  # the dataset behind a dataset index, opened on the first image asked for
        self.approximate = None  # a faiss index, when the index has one (then `embeddings` is None)

    @classmethod
    def open(cls, root: Path | str) -> "ReferenceIndex":
        """An index for search: exact (every embedding in memory) or, when it has one, approximate (only its
        faiss index, paths and captions)."""
        import torch

        root = Path(root)
        if not (root / META).is_file():
            raise FileNotFoundError(f"{root} is not a reference index (no {META}); build one with `sd-bridge index`")
        try:
            meta = json.loads((root / META).read_text(encoding="utf-8"))
            shards, approx = meta["shards"], meta.get("approximate")
            for name in [s["file"] for s in shards] + ([approx["file"]] if approx else []):
                if Path(name).name != name or name in ("", ".", ".."):  # hand-edited: it must not leave the index
                    raise ValueError(f"file name {name!r}")
            # Sizes come from the shards themselves, not from fields that can be edited by hand.
            rows = sum(_rows(root / "shards" / s["file"]) for s in shards)
            dim = _dim(root / "shards" / shards[0]["file"]) if shards else 0
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as err:  # arrow's too
            raise ValueError(f"{root} is a damaged reference index ({type(err).__name__}: {err}); rerun "
                             "`sd-bridge index` to repair it") from None
        meta = meta | {"rows": rows, "dim": dim}
        # Exact search: every embedding, copied shard by shard into one tensor made up front (a list of shards
        # then np.concatenate held the collection twice: 8.3 GiB open at 1M x 1024, benchmarks.reference_index).
        emb = None if approx else torch.empty(rows, dim)
        paths, captions, at = [], [], 0
        for shard in shards:
            p, c, block = _shard_embeddings(root, shard, dim, ("path", "caption") if approx else
                                            ("path", "caption", "embedding"))
            paths += p
            captions += c
            if block is not None:
                emb[at : at + len(block)].numpy()[:] = block  # arrow's buffer is read-only: copy out of it
                at += len(block)
        if approx:
            import faiss

            if not (root / approx["file"]).is_file():
                raise FileNotFoundError(f"{root} lists an approximate index but {approx['file']} is missing; "
                                        "rerun `sd-bridge index` to rebuild it")
            index = cls(root, meta, None, paths, captions)
            try:
                index.approximate = faiss.read_index(str(root / approx["file"]))
                index.approximate.nprobe = int(approx["nprobe"])
            except (RuntimeError, KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{root}: its approximate index cannot be read ({str(err).splitlines()[0]}); "
                                 "rerun `sd-bridge index` to rebuild it") from None
            if index.approximate.ntotal != rows or index.approximate.d != dim:
                raise ValueError(f"{root}: its approximate index holds {index.approximate.ntotal} rows of "
                                 f"{index.approximate.d}, the shards {rows} of {dim}; rerun `sd-bridge index`")
            return index
        if len(emb) > APPROXIMATE_FROM:
            import warnings

            warnings.warn(f"{root}: exact search over {len(emb):,} references holds them all in memory; rebuild "
                          "with `sd-bridge index --search approximate` for an approximate index", stacklevel=2)
        emb /= emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return cls(root, meta, emb, paths, captions)

    @property
    def scorer(self) -> str:
        return self.meta["scorer"]["name"]

    def __len__(self) -> int:
        return len(self.paths)

    def check_scorer(self, scorer_name: str) -> None:
        if scorer_name != self.scorer:
            raise ValueError(f"reference index {self.root} was embedded with scorer {self.scorer!r}, not "
                             f"{scorer_name!r}; rebuild it with `sd-bridge index --scorer {scorer_name}`")

    def search(self, queries, k: int = 5) -> tuple:
        """(similarities [Q, k], rows [Q, k]) of the `k` most similar references to each query, best first.
        Approximate search may find fewer than `k` for a query: the missing rows are -1 (faiss's convention)."""
        if self.approximate is not None:
            return search_approximate(queries, self.approximate, k)
        return search(queries, self.embeddings, k)

    def neighbours(self, queries, k: int = 5) -> list[list[Neighbour]]:
        sims, rows = self.search(queries, k)
        return [[Neighbour(self.paths[r], self.captions[r], float(s), int(r)) for s, r in zip(srow, rrow) if r >= 0]
                for srow, rrow in zip(sims.tolist(), rows.tolist())]

    def image(self, row: int):
        """The reference image of `row` (for grids that show a render beside its nearest reference). A path is
        read only inside the collection's root, whatever a hand-edited shard says."""
        src, rel = self.meta["source"], self.paths[row]
        if src["kind"] == "folder":
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise ValueError(f"{self.root}: reference path {rel!r} leaves the collection {src['root']}; "
                                 "rerun `sd-bridge index` to repair the index")
            return open_image(Path(src["root"]) / rel)
        if self._source is None:
            self._source = list_source(src["root"], self.scorer, src["image_column"])
        if not rel.startswith("#") or not rel[1:].isdigit() or int(rel[1:]) >= len(self._source.paths):
            raise ValueError(f"{self.root}: reference row {rel!r} is not a row of {src['root']}")
        image = self._source.images([int(rel[1:])])[0]
        if isinstance(image, UnreadableImage):
            raise image
        return image


def search(queries, references, k: int = 5, chunk: int = CHUNK_ROWS) -> tuple:
    """Exact top-k cosine search of unit-norm `queries` [Q, D] in unit-norm `references` [N, D], over chunks
    of `chunk` references so memory is Q x (chunk + k), not Q x N."""
    import torch

    q = torch.nn.functional.normalize(torch.as_tensor(queries).float(), dim=-1)
    if len(references) == 0:
        raise ValueError("the reference index is empty")
    k = min(k, len(references))
    best_s = torch.full((len(q), 0), float("-inf"))
    best_i = torch.zeros((len(q), 0), dtype=torch.long)
    for lo in range(0, len(references), chunk):
        sims = q @ references[lo : lo + chunk].T
        s, i = torch.topk(sims, min(k, sims.shape[1]), dim=1)
        best_s, order = torch.topk(torch.cat([best_s, s], dim=1), min(k, best_s.shape[1] + s.shape[1]), dim=1)
        best_i = torch.gather(torch.cat([best_i, i + lo], dim=1), 1, order)
    return best_s, best_i


def search_approximate(queries, index, k: int = 5) -> tuple:
    """Top-k inner-product search of the unit-normed `queries` [Q, D] in a faiss index of unit vectors."""
    import torch

    if index.ntotal == 0:
        raise ValueError("the reference index is empty")
    q = _unit(torch.as_tensor(queries).detach().float().cpu().numpy())  # normed as the index's rows were
    sims, rows = index.search(q, min(k, index.ntotal))
    return torch.from_numpy(sims), torch.from_numpy(rows)


def duplicate_report(neighbours: list[list[Neighbour]], threshold: float) -> dict:
    """The fraction of renders whose nearest reference is at least `threshold` similar."""
    top = [n[0].similarity for n in neighbours if n]
    flagged = sum(s >= threshold for s in top)
    return {"renders": len(top), "duplicates": flagged, "duplicate_fraction": flagged / len(top) if top else None,
            "threshold": threshold, "nearest_similarity_mean": sum(top) / len(top) if top else None}
