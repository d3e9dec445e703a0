"""`sd-bridge inspect`: what a prompt contains, what it costs in tokens, and what the `syntax` strategy makes of it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

from bridge import presets
from bridge.policy import MigrationPolicy, apply_policy
from bridge.prompt import (
    AndWeight, Edit, Emphasis, Alternation, Variants, embeddings, networks, parse, weighted_spans,
)
from bridge.tokens import token_budget


@dataclass
class InspectConfig(MigrationPolicy):
    """Show a prompt's tree, weights, tags, embeddings, tokens per chunk, warnings and its `syntax` migration."""

    prompt: str | None = field(default=None, metadata={"help": "the prompt", "positional": "?"})
    negative: str | None = field(default=None, metadata={"help": "a negative prompt to inspect too"})
    target: str = field(default=presets.DEFAULT_TARGET, metadata={"help": "target pipeline preset (token budget, size)"})
    json: bool = field(default=False, metadata={"help": "print one JSON object"})

    def __post_init__(self):
        super().__post_init__()
        if self.prompt is None:
            raise ValueError("give a prompt: sd-bridge inspect \"(masterpiece:1.2), a cat\"")
        presets.pipeline(self.target)


def policy_of(cfg: MigrationPolicy) -> MigrationPolicy:
    """The MigrationPolicy part of a command config that extends it (flags map 1:1 onto its fields)."""
    return MigrationPolicy(**{f.name: getattr(cfg, f.name) for f in fields(MigrationPolicy)})


def analyse(text: str, policy: MigrationPolicy, target: presets.PipelinePreset, negative: bool = False) -> dict:
    parsed = parse(text, policy.embedding_names(), negative=negative)
    counts, budget_warnings = token_budget(parsed.nodes, truncates=target.truncates)
    migrated = apply_policy(parsed, policy)
    return {
        "roundtrip": parsed.serialize(),
        "tree": format_tree(parsed.nodes),
        "weights": weighted_spans(parsed.nodes),
        "networks": networks(parsed.nodes),
        "embeddings": embeddings(parsed.nodes),
        "chunks": counts,
        "warnings": [w.to_dict() for w in migrated.warnings + budget_warnings],
        "syntax": migrated.prompt,
    }


def format_tree(nodes, depth: int = 0, weight: float = 1.0) -> list[str]:
    lines = []
    pad = "  " * depth
    for node in nodes:
        t = type(node)
        if t is Emphasis:
            w = weight * node.factor
            close = node.close or "(unclosed)"
            lines.append(f"{pad}Emphasis {node.open}…{close}  x{node.factor:.4g} -> {w:.4g}")
            lines += format_tree(node.children, depth + 1, w)
        elif t is Edit:
            lines.append(f"{pad}Edit when={node.when_raw.strip()}")
            names = ["from", "to"] if len(node.parts) == 2 else ["to"]
            for name, part in zip(names, node.parts):
                lines.append(f"{pad}  {name}:")
                lines += format_tree(part, depth + 2, weight)
        elif t in (Alternation, Variants):
            lines.append(f"{pad}{t.__name__} ({len(node.options)} options)")
            for option in node.options:
                lines.append(f"{pad}  |")
                lines += format_tree(option, depth + 2, weight)
        elif t is AndWeight:
            lines.append(f"{pad}AndWeight {node.weight:g}")
        else:
            lines.append(f"{pad}{t.__name__} {node.raw!r}")
    return lines


def run_inspect(cfg: InspectConfig, log=print) -> dict:
    policy, target = policy_of(cfg), presets.pipeline(cfg.target)
    report = analyse(cfg.prompt, policy, target)
    if cfg.negative is not None:
        report["negative"] = analyse(cfg.negative, policy, target, negative=True)
    if cfg.json:
        log(json.dumps(report, ensure_ascii=False, indent=2))
        return report
    for title, part in [("prompt", report)] + ([("negative prompt", report["negative"])] if "negative" in report else []):
        log(f"== {title}")
        log("\n".join(part["tree"]) or "(empty)")
        if part["weights"]:
            log("weights: " + ", ".join(f"{w['text'].strip()!r} x{w['weight']:.4g}" for w in part["weights"]))
        if part["networks"]:
            log("networks: " + ", ".join(f"<{n['type']}:{n['name']}> w={n['weight']}" for n in part["networks"]))
        if part["embeddings"]:
            log("embeddings: " + ", ".join(part["embeddings"]))
        log(f"tokens per chunk ({cfg.target}): {part['chunks']}")
        for w in part["warnings"]:
            log(f"warning [{w['code']}] {w['message']}")
        log(f"syntax: {part['syntax']}")
    return report
