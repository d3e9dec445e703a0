"""`EvalConfig`: the options of `sd-bridge eval`, documented once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bridge.config import json_summary_field
from bridge.models import presets
from bridge.sweep.reference import DUPLICATE_THRESHOLD, check_index_dir
from bridge.syntax.policy import MigrationPolicy


@dataclass
class EvalConfig(MigrationPolicy):
    """Compare translation strategies on held-out prompts: agreement of target renders with source renders."""

    prompts: str | None = field(default=None, metadata={"help": "held-out prompts: a prompt file, or a gathered "
                                                                 "dataset directory (its source renders are reused)"})
    out: Path | None = field(default=None, metadata={"help": "report directory"})
    source: str = field(default="auto", metadata={"help": "source pipeline preset (auto: sd15 when its weights "
                                                               "are local, else the toy world's toy-sd15)"})
    target: str = field(default="auto", metadata={"help": "target pipeline preset (auto: sd2-base or toy-sd2)"})
    scorer: str = field(default="auto", metadata={"help": "scorer preset (auto: vit-h-14 or toy-clip)"})
    oracle: bool = field(default=False, metadata={"help": "add the toy world's correct translation as a strategy "
                                                          "named oracle (toy source and target only): a JSONL prompts "
                                                          "file's `oracle` field where it has one, as `toyworld "
                                                          "prompts` writes it, else the drift table's"})
    adapter: list[Path] = field(default_factory=list, metadata={
        "help": "adapter directories to evaluate (any number; toy: the shipped one)"})
    translations: Path | None = field(default=None, metadata={
        "help": "file (.csv/.tsv/.jsonl) of translations made by another tool: a `prompt` column (the source) and "
                "a `translated_prompt` column"})
    translations_column: str = field(default="translated_prompt", metadata={"help": "column of --translations"})
    allow_train_overlap: bool = field(default=False, metadata={
        "help": "score adapters on prompts they were trained on (counted in the report) instead of refusing"})
    no_syntax: bool = field(default=False, metadata={"help": "leave out the syntax baseline"})
    seeds: int = field(default=2, metadata={"help": "seeds per prompt (for a dataset: at most its own)"})
    seed: int = field(default=0, metadata={"help": "base seed (prompt files) and bootstrap seed"})
    limit: int | None = field(default=None, metadata={"help": "use only the first N prompts"})
    prompt_column: str = field(default="prompt", metadata={"help": "prompt column of a prompt file"})
    negative_column: str | None = field(default=None, metadata={"help": "negative prompt column of a prompt file"})
    tie: float = field(default=0.005, metadata={"help": "|delta| at most this is a tie"})
    regression_threshold: float = field(default=0.02, metadata={"help": "a prompt worse than identity by more than "
                                                                         "this is listed as a regression"})
    reference: Path | None = field(default=None, metadata={
        "help": "a reference index from `sd-bridge index`: each render's nearest references, duplicates per strategy"})
    top_k: int = field(default=3, metadata={"help": "nearest references kept per render (with --reference)"})
    duplicate_threshold: float = field(default=DUPLICATE_THRESHOLD, metadata={
        "help": "nearest-reference similarity at which a render counts as a duplicate (calibrated on the toy world)"})
    grid_prompts: int = field(default=8, metadata={"help": "prompts shown as image grids in the report"})
    render_batch: int = field(default=4, metadata={"help": "images per pipeline call"})
    cache_dir: Path | None = field(default=None, metadata={"help": "render cache (default: OUT/render-cache)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar (prompts scored per strategy)",
                                                             "off_help": "no progress bar (for logs)"})
    json: bool = json_summary_field()

    def __post_init__(self):
        super().__post_init__()
        self.write_a1111("eval")
        if not self.prompts:
            raise ValueError("--prompts is required (a prompt file or a gathered dataset directory)")
        if self.out is None:
            raise ValueError("--out is required (the report directory)")
        self.out = Path(self.out)
        if not Path(self.prompts).expanduser().exists():  # before the report directory is made
            from bridge.io.sources import SourceError, detect_format

            if detect_format(str(self.prompts)) != "hf":  # owner/name is a hub dataset, not a file
                raise SourceError(f"prompt source not found: {self.prompts}")
        self.adapter = [p for p in map(presets.adapter_path, self.adapter) if p is not None]  # `toy`: its dir
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if self.top_k < 1:
            raise ValueError(f"top-k must be >= 1, got {self.top_k}")
        check_index_dir(self.reference)
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        for name, value in (("source", self.source), ("target", self.target)):
            if value != "auto":
                presets.pipeline(value)
        if self.scorer != "auto":
            presets.scorer(self.scorer)

    def resolve_presets(self) -> bool:
        """Replace "auto" by the real preset when its weights are local, else by the toy one. Returns True
        when any fell back to the toy world (the caller says so before rendering)."""
        from bridge.models.loading import resolve_auto

        fell_back = resolve_auto(self)
        if self.oracle and not (presets.pipeline(self.source).toy and presets.pipeline(self.target).toy):
            raise ValueError(f"--oracle knows the correct translation only in the toy world; source {self.source!r} "
                             f"and target {self.target!r} must be toy presets (toy-sd15, toy-sd2)")
        return fell_back
