"""`bridge.Translator`: source-model prompts in, target-model prompts out, structure intact.

Without an adapter it is the `syntax` strategy (migration policy + normalisation). With an adapter (a peft
LoRA trained by `sd-bridge train`) the policy runs first, then the rewriter rewrites the text leaves of the
result; leaves are deduplicated across the batch, sorted by length and generated in batches. A rewritten
prompt whose structure (weights, tags, BREAK/AND, editing, alternation) does not read back the same falls
back to the syntax output, with a warning, and is counted. Negative prompts get the policy, and are
rewritten too when the adapter was trained with --rewrite-negative (a failed negative rewrite falls back
to the policy's negative on its own). Every learned rewrite then passes the faithfulness guard
(`bridge.models.faithfulness`, `--faithfulness strict|lenient|off`): one that drops or adds content words its
adapter did not learn to change falls back to the syntax output with a `rewrite-unfaithful` warning naming
them, and a prompt with no word of the adapter's training prompts is not sent to the model at all: it comes
back as the syntax strategy wrote it. Prompts are read in the policy's source dialect and written in its
output dialect (`--syntax`, `--to-syntax`: A1111, NovelAI or ComfyUI in, A1111 or ComfyUI out); in between,
everything is A1111 (`bridge.syntax.policy.read_prompt`, `write_prompt`).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from bridge.models import presets
from bridge.models.faithfulness import EDITS, NEGATIVE_EDITS, EditRecord, Verdict, check, leaf_words
from bridge.models.rewriter import check_safetensors, read_json
from bridge.syntax.policy import MigrationPolicy, apply_policy, read_prompt, write_prompt
from bridge.syntax.tokens import token_budget

log = logging.getLogger("sd_bridge")
SYNTAX = "syntax"
# What runs without an adapter, in the one form that translate, migrate, eval and the app all show (issue #43:
# a user must be able to tell that nothing was reworded).
SYNTAX_NOTE = "syntax migration: weights, tags and structure, no rewording"
_said_syntax = threading.Event()  # the note is said once per process, however many translators it builds


@dataclass
class Translation:
    prompt: str
    negative_prompt: str | None
    translated_prompt: str
    translated_negative_prompt: str | None
    strategy: str
    warnings: list[dict] = field(default_factory=list)
    tokens_before: list[int] = field(default_factory=list)  # CLIP tokens per chunk
    tokens_after: list[int] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)  # all candidates when several were asked for
    fallback: bool = False  # the rewrite broke the structure: the syntax output was used
    unfaithful: bool = False  # the rewrite failed the faithfulness guard: the syntax output was used
    rejected: str | None = None  # the rewrite the guard refused, for a person to read (eval's report shows them)

    def to_dict(self) -> dict:
        return asdict(self)


def check_base_model(adapter: Path, base: presets.RewriterPreset) -> None:
    """The base model peft recorded in adapter_config.json must be the rewriter sd_bridge_adapter.json names:
    a LoRA of the same shape on another base loads without error and rewrites nonsense. peft records the
    directory the base was loaded from: a hub id, its cache snapshot (`models--org--name/snapshots/REV`),
    or a local directory (toy and tiny presets), compared by its name since clones live elsewhere."""
    from bridge.models.loading import model_dir

    config = adapter / "adapter_config.json"
    recorded = read_json(config, "a peft adapter config").get("base_model_name_or_path") if config.is_file() else None
    if not recorded:
        return
    if base.hub_id and (recorded == base.hub_id or f"models--{base.hub_id.replace('/', '--')}" in recorded):
        return
    if not base.hub_id and Path(recorded).name == model_dir(base).name:
        return
    raise ValueError(f"adapter {adapter} was trained on base model {recorded!r}, not on rewriter {base.name!r} "
                     f"({base.hub_id or model_dir(base)}) that its sd_bridge_adapter.json names")


def check_peft_config(adapter: Path) -> None:
    """sd-bridge trains LoRA adapters, and peft builds whatever adapter_config.json names: another method (prefix
    tuning, IA3) on our base ends in a TypeError deep inside peft, so it is refused here by name."""
    config = adapter / "adapter_config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{adapter} has no adapter_config.json (peft writes it beside the weights)")
    kind = read_json(config, "a peft adapter config").get("peft_type")
    if kind != "LORA":
        raise ValueError(f"{config}: peft_type {kind!r} is not a LoRA adapter; sd-bridge loads only LoRA adapters "
                         "made by `sd-bridge train`")


_LORA_KEY = re.compile(r"base_model\.model\.[\w.]+\.lora_(A|B|embedding_A|embedding_B)\.weight")


def check_lora_file(path: Path) -> None:
    """Every tensor in an adapter file is a LoRA weight and finite, read before any model is loaded: NaN
    weights would rewrite every prompt into nonsense (or into the syntax fallback) without a word, and a
    tensor of another kind has no place in what `sd-bridge train` writes."""
    import torch
    from safetensors.torch import load_file

    tensors = load_file(path)
    other = next((n for n in tensors if not _LORA_KEY.fullmatch(n)), None)
    if other is not None:
        raise ValueError(f"{path} holds {other[:80]!r}, which is not a LoRA weight; sd-bridge loads only the "
                         "LoRA adapters `sd-bridge train` writes")
    bad = next((n for n, t in tensors.items() if not t.is_floating_point() or not torch.isfinite(t).all()), None)
    if bad is not None:
        raise ValueError(f"{path}: {bad} holds values that are not finite numbers (NaN or inf); the adapter "
                         "cannot be used: retrain it or take an earlier checkpoint")


def check_lora_weights(adapter: Path, model) -> None:
    """The file holds exactly the LoRA tensors the model peft built has: peft loads a file with extra tensors,
    or with missing ones, with at most a warning."""
    from safetensors import safe_open

    with safe_open(adapter / "adapter_model.safetensors", "pt") as f:
        saved = set(f.keys())
    expected = {n.replace(".default.", ".") for n, _ in model.named_parameters() if ".lora_" in n}
    extra, missing = sorted(saved - expected), sorted(expected - saved)
    if extra or missing:
        raise ValueError(f"adapter {adapter} does not fit its rewriter: "
                         + (f"{len(extra)} tensors it has no place for (the first: {extra[0]})" if extra else
                            f"{len(missing)} LoRA tensors missing (the first: {missing[0]})"))


def check_adapter(adapter: Path, device: str = "cpu", dtype: str = "auto"):
    """(adapter meta, base rewriter preset, translation-cache key) for a `sd-bridge train` output, without
    loading any weights: what can be refused from the files alone is refused here."""
    from bridge.models.loading import resolve_device, resolve_dtype
    from bridge.models.rewriter import AdapterMeta
    from bridge.models.translation_cache import model_key

    meta = AdapterMeta.load(adapter)
    if not (adapter / "adapter_model.safetensors").is_file():
        raise FileNotFoundError(f"{adapter} has no adapter_model.safetensors (only safetensors adapters load)")
    check_safetensors(adapter / "adapter_model.safetensors")
    check_lora_file(adapter / "adapter_model.safetensors")
    check_peft_config(adapter)
    base = presets.rewriter(meta.rewriter)
    presets.pipeline(meta.target)  # the target it rewrites for must be a preset or a model directory
    check_base_model(adapter, base)
    # The dtype load_rewriter gives the weights, as torch names it ("torch.float32").
    return meta, base, model_key(adapter, base, resolve_dtype(dtype, resolve_device(device), kind="rewriter"))


def load_adapter(adapter: Path, device: str = "cpu", dtype: str = "auto"):
    """(peft model in eval mode, tokenizer, adapter meta, translation-cache key) for a `sd-bridge train` output."""
    meta, base, key = check_adapter(adapter, device, dtype)
    return (*load_weights(adapter, meta, base, device, dtype), meta, key)


def load_weights(adapter: Path, meta, base: presets.RewriterPreset, device: str = "cpu", dtype: str = "auto"):
    """(peft model in eval mode, tokenizer) for an adapter `check_adapter` has passed (what `Translator` defers)."""
    from peft import PeftModel

    from bridge.models.loading import load_rewriter

    model, tokenizer = load_rewriter(base, device=device, dtype=dtype)
    try:
        with warnings.catch_warnings():  # peft calls a transformers API deprecated in 5.x; nothing a user can do
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as err:
        raise ValueError(f"adapter {adapter} does not fit the rewriter {meta.rewriter!r}: "
                         f"{str(err).splitlines()[0]}") from None
    check_lora_weights(adapter, model)
    return model.eval(), tokenizer


class Translator:
    """Translate prompts from the source to the target model (see module docstring)."""

    def __init__(self, target: presets.PipelinePreset, policy: MigrationPolicy | None = None, model=None,
                 tokenizer=None, meta=None, name: str = SYNTAX, batch_size: int = 32, cache=None,
                 model_key: str | None = None, loader: Callable[[], tuple] | None = None, edits=None,
                 negative_edits=None):
        """`meta` (an AdapterMeta) makes it rewrite, with `model` and `tokenizer`, or with what `loader()`
        returns as (model, tokenizer) when it first needs them; without `meta` it is the syntax strategy.
        `edits` and `negative_edits` are the adapter's EditRecords, what the faithfulness guard licenses
        (None: no record, so under strict and lenient no content word may change)."""
        self.target = target
        self.policy = policy or MigrationPolicy()
        self.meta = meta
        self._model, self._tokenizer, self._loader = model, tokenizer, loader
        self._load_lock = threading.Lock()
        self.name = name
        self.batch_size = batch_size
        # A TranslationCache and the key of this model in it (bridge.models.translation_cache): greedy rewrites made
        # once, by this or an earlier run, are read back instead of generated.
        self.cache, self.model_key = (cache, model_key) if meta is not None else (None, None)
        self._network_map = self.policy.load_network_map()
        self.edits, self.negative_edits = edits, negative_edits

    @property
    def rewrites(self) -> bool:
        return self.meta is not None

    @property
    def strategy(self) -> str:
        return f"adapter:{self.name}" if self.rewrites else SYNTAX

    @property
    def describe(self) -> str:
        """Which strategy runs, for a person: SYNTAX_NOTE, or the adapter that rewords."""
        if not self.rewrites:
            return SYNTAX_NOTE
        return f"learned rewriting by adapter {self.name} for {self.target.name}, after the syntax migration"

    @property
    def loaded(self) -> bool:
        """Whether the rewriter's weights are in memory (a translator made by from_pretrained loads them at the
        first text its translation cache lacks)."""
        return self._model is not None

    def load(self) -> "Translator":
        """Load the rewriter's weights now, not at the first text the cache lacks; returns the translator. Once:
        the app translates from several threads, and two first requests must not load two copies."""
        with self._load_lock:
            if self._model is None and self._loader is not None:
                self._model, self._tokenizer = self._loader()
                self._loader = None
        return self

    @property
    def model(self):
        return self.load()._model

    @property
    def tokenizer(self):
        return self.load()._tokenizer

    @classmethod
    def from_pretrained(cls, adapter: str | Path | None = None, target: str | None = None,
                        policy: MigrationPolicy | None = None, device: str = "cpu", dtype: str = "auto",
                        batch_size: int = 32, cache: str | Path | None = None) -> "Translator":
        """A translator for `adapter` (a directory written by `sd-bridge train`, or by `sd-bridge export`, or a
        shipped adapter's name such as `toy`), or the syntax strategy when `adapter` is None or "none". `target`
        defaults to the adapter's target (else the reference target). `cache`: a translation cache file, "auto" (the sd-bridge cache directory) or None.
        `dtype` applies to peft adapters; an export runs in the precision it was exported in. The weights load
        at the first text the cache lacks, or at `load()`."""
        adapter = presets.adapter_path(adapter)  # a shipped adapter's name (`toy`) is its directory
        if adapter is None:
            return cls(presets.pipeline(target or presets.DEFAULT_TARGET), policy, batch_size=batch_size)
        from bridge.models import engine, translation_cache
        from bridge.models.rewriter import AdapterMeta

        adapter = Path(adapter)
        if not adapter.is_dir():
            raise FileNotFoundError(f"adapter directory not found: {adapter}")
        meta = AdapterMeta.load(adapter)  # checked before any weights load
        if target is not None and presets.pipeline(target).name != meta.target:
            raise ValueError(f"adapter {adapter} was trained for target {meta.target!r}, not {target!r}")
        # The weights load when a text first needs generating: a run its translation cache fully answers (a
        # migrate run again) never pays for them. Whatever the files alone can refuse is refused now.
        if engine.is_export(adapter):
            key, load = engine.cache_key(adapter, device), functools.partial(engine.load_engine, adapter, device)
        else:
            meta, base, key = check_adapter(adapter, device, dtype)
            load = functools.partial(load_weights, adapter, meta, base, device, dtype)
        edits = EditRecord.load(adapter)
        negative_edits = EditRecord.load(adapter, NEGATIVE_EDITS) if meta.rewrite_negative else None
        if edits is None and (policy or MigrationPolicy()).faithfulness != "off":
            log.warning(f"adapter {adapter.name} has no edit record ({EDITS}: adapters trained since the "
                        "faithfulness guard write one): every rewrite that changes a content word falls back "
                        "to the syntax output (--faithfulness off takes them unchecked)")
        path = translation_cache.resolve(cache)
        store = translation_cache.TranslationCache(path) if path is not None else None
        return cls(presets.pipeline(meta.target), policy, meta=meta, name=adapter.name, batch_size=batch_size,
                   cache=store, model_key=key, loader=load, edits=edits, negative_edits=negative_edits)

    def check_inputs(self, prompts, negative_prompts, num_candidates: int) -> None:
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("`prompts` must be a list of strings")
        if negative_prompts is not None:
            if len(negative_prompts) != len(prompts):
                raise ValueError(f"{len(prompts)} prompts but {len(negative_prompts)} negative prompts")
            if not all(n is None or isinstance(n, str) for n in negative_prompts):
                raise TypeError("negative prompts must be strings or None")
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
        if num_candidates > 1 and not self.rewrites:
            raise ValueError("several candidates need an adapter; the syntax strategy has exactly one output")

    def translate(self, prompts: Sequence[str], negative_prompts: Sequence[str | None] | None = None,
                  num_candidates: int = 1, sample: bool = False, seed: int = 0) -> list[Translation]:
        # 1. Check inputs.
        self.check_inputs(prompts, negative_prompts, num_candidates)
        negatives = list(negative_prompts) if negative_prompts is not None else [None] * len(prompts)
        if not self.rewrites and not _said_syntax.is_set():
            _said_syntax.set()
            log.warning(f"no adapter: {SYNTAX_NOTE}")
        # 2. The policy (the syntax strategy) on prompts and negatives.
        names = self.policy.embedding_names()
        parsed = [read_prompt(p, self.policy) for p in prompts]
        syn = [apply_policy(p, self.policy, self._network_map) for p in parsed]
        syn_neg = [apply_policy(read_prompt(n, self.policy, negative=True), self.policy, self._network_map)
                   if n is not None else None for n in negatives]
        # 3. Learned rewriting of the text leaves, checked against the structure.
        candidates = [[s.prompt] for s in syn]
        fallbacks = [[False] for _ in syn]
        unfinished = [False for _ in syn]
        neg_out = [n.prompt if n is not None else None for n in syn_neg]
        neg_failed = [False for _ in syn]
        unfaithful: list[Verdict | None] = [None for _ in syn]
        rejected: list[str | None] = [None for _ in syn]
        neg_unfaithful: list[Verdict | None] = [None for _ in syn]
        if self.rewrites:
            todo = [k for k, s in enumerate(syn) if self._worth_rewriting(s.prompt, self.edits, names)]
            done = self._rewrite([syn[k].prompt for k in todo], num_candidates, sample, seed, names)
            for k, c, f, u in zip(todo, *done):
                candidates[k], fallbacks[k], unfinished[k] = c, f, u
            # 3b. The faithfulness guard: what the adapter did not learn to change is not changed.
            for k in todo:
                verdicts = [self._guard(syn[k].prompt, c, self.edits, names) for c in candidates[k]]
                if not verdicts[0].ok:
                    unfaithful[k], rejected[k] = verdicts[0], candidates[k][0]
                candidates[k] = [c if v.ok else syn[k].prompt for c, v in zip(candidates[k], verdicts)]
            if self.meta.rewrite_negative:
                todo = [k for k, n in enumerate(neg_out) if n and self._worth_rewriting(n, self.negative_edits, names)]
                rewritten, failed = self._rewrite_negatives([neg_out[k] for k in todo], seed, names)
                for k, text, bad in zip(todo, rewritten, failed):
                    verdict = self._guard(neg_out[k], text, self.negative_edits, names)
                    neg_out[k], neg_failed[k] = (text if verdict.ok else neg_out[k]), bad
                    neg_unfaithful[k] = None if verdict.ok else verdict
        # 4. Token budgets and warnings per prompt.
        out = []
        for k, prompt in enumerate(prompts):
            before, _ = token_budget(parsed[k].source, truncates=self.target.truncates)
            after, budget = token_budget(candidates[k][0], truncates=self.target.truncates)
            warnings = [dict(w.to_dict(), field="prompt") for w in syn[k].warnings + budget]
            if syn_neg[k] is not None:
                _, neg_budget = token_budget(syn_neg[k].prompt, self.target.truncates, negative=True)
                warnings += [dict(w.to_dict(), field="negative_prompt") for w in syn_neg[k].warnings + neg_budget]
            if unfinished[k]:
                warnings.append({"code": "rewrite-unfinished", "message": "the rewrite did not end within its "
                                 "token limit; the syntax strategy's output is used", "span": None, "field": "prompt"})
            elif fallbacks[k][0]:
                warnings.append({"code": "rewrite-fallback", "message": "the rewrite changed the prompt's "
                                 "structure; the syntax strategy's output is used", "span": None, "field": "prompt"})
            elif unfaithful[k] is not None:
                warnings.append({"code": "rewrite-unfaithful", "message": unfaithful[k].message(), "span": None,
                                 "field": "prompt"})
            if neg_unfaithful[k] is not None:
                warnings.append({"code": "rewrite-unfaithful", "message": "the negative prompt's "
                                 + neg_unfaithful[k].message().removeprefix("the "), "span": None,
                                 "field": "negative_prompt"})
            if neg_failed[k]:
                warnings.append({"code": "rewrite-fallback", "message": "the negative prompt's rewrite did not "
                                 "keep its structure or end; the syntax strategy's output is used", "span": None,
                                 "field": "negative_prompt"})
            # 5. The output dialect (A1111 unless asked), with what it cannot say.
            written = [write_prompt(c, self.policy) for c in candidates[k]]
            warnings += [dict(w.to_dict(), field="prompt") for w in written[0].warnings]
            negative_out = neg_out[k]
            if negative_out is not None:
                converted = write_prompt(negative_out, self.policy, negative=True)
                negative_out = converted.prompt
                warnings += [dict(w.to_dict(), field="negative_prompt") for w in converted.warnings]
            out.append(Translation(
                prompt=prompt, negative_prompt=negatives[k], translated_prompt=written[0].prompt,
                translated_negative_prompt=negative_out,
                strategy=self.strategy, warnings=warnings, tokens_before=before, tokens_after=after,
                candidates=[w.prompt for w in written] if num_candidates > 1 else [], fallback=fallbacks[k][0],
                unfaithful=unfaithful[k] is not None, rejected=rejected[k]))
        return out

    def _worth_rewriting(self, text: str, record, names) -> bool:
        """Whether `text` goes to the model: under the guard, only when it has a content word the adapter's
        training prompts had (#40: a prompt with nothing the adapter knows comes back unchanged, and costs
        no generation)."""
        if self.policy.faithfulness == "off" or record is None:
            return True
        return record.knows_any(leaf_words(text, names))

    def _guard(self, source: str, rewrite: str, record, names) -> Verdict:
        return check(source, rewrite, record, self.policy.faithfulness, names)

    def _rewrite(self, texts: list[str], n: int, sample: bool, seed: int, names) -> tuple[list, list, list]:
        rewrites = self._generate(texts, self.meta.prefix, n, sample, seed, names)
        return [r[0] for r in rewrites], [r[1] for r in rewrites], [r[2] for r in rewrites]

    def _rewrite_negatives(self, negatives: list[str], seed: int, names) -> tuple[list, list[bool]]:
        """The policy's negatives rewritten (greedy, one each); empty negatives stay as they are."""
        todo = [i for i, n in enumerate(negatives) if n]
        rewrites = self._generate([negatives[i] for i in todo], self.meta.negative_prefix, 1, False, seed, names)
        out, failed = list(negatives), [False] * len(negatives)
        for i, (texts, fallbacks, _) in zip(todo, rewrites):
            out[i], failed[i] = texts[0], fallbacks[0]
        return out, failed

    def _generate(self, texts: list[str], prefix: str, n: int, sample: bool, seed: int,
                  names) -> list[tuple[list[str], list[bool], bool]]:
        """Per text: (candidate texts, their fallback flags, unfinished). Greedy single rewrites go through the
        translation cache when there is one: only texts it has never seen are generated."""
        from bridge.models.rewriter import rewrite_prompts

        def run(batch: list[str]) -> list[tuple[list[str], list[bool], bool]]:
            rewrites = rewrite_prompts(self.model, self.tokenizer, batch, names, prefix=prefix, num_candidates=n,
                                       sample=sample, seed=seed, max_new_tokens=self.meta.max_new_tokens,
                                       batch_size=self.batch_size, fmt=self.meta.format)
            return [([c.text for c in cands], [c.fallback for c in cands], cands[0].unfinished) for cands in rewrites]

        if not texts:
            return []
        if self.cache is None or n > 1 or sample:
            return run(texts)
        settings = [prefix, self.meta.format, self.meta.max_new_tokens, sorted(names)]
        keys = [self.cache.key(self.model_key, settings, t) for t in texts]
        found = self.cache.get_many(keys)
        # A cached rewrite passes the structure check a fresh one passes (bridge.models.rewriter.rewrite_prompts):
        # a cache edited by hand, or damaged, never carries a tag or a weight into the output; it is regenerated.
        from bridge.models.rewriter import skeleton

        for t, k in zip(texts, keys):
            if k in found and skeleton(found[k][0], names) != skeleton(t, names):
                del found[k]
        todo = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in found))
        if todo:
            fresh = {self.cache.key(self.model_key, settings, t): (r[0][0], r[1][0], r[2])
                     for t, r in zip(todo, run(todo))}
            self.cache.put_many(fresh)
            found.update(fresh)
        return [([found[k][0]], [bool(found[k][1])], bool(found[k][2])) for k in keys]
