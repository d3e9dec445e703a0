"""sd-bridge core library. The tree follows the flow of a prompt:

- `bridge.syntax`    prompt text: parse, weights, tokens, the migration policy (no model)
- `bridge.models`    presets, loading, rendering, scoring, the rewriter and its fast export; the toy world
- `bridge.io`        prompt libraries in, translations out (sources, clean, migrate)
- `bridge.sweep`     breadth over seeds and nearest references
- `bridge.translator` `bridge.Translator`, the public API: source prompts in, target prompts out
- `bridge.config`    typed configs and the one parser that makes them flags; `bridge.cli` the command
- `bridge.commands`  commands that only print (translate, inspect, doctor, demo, toyworld)

`bridge.Translator` is imported lazily so `import bridge` stays cheap and loads no model.
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name in ("Translator", "Translation"):
        from bridge import translator

        return getattr(translator, name)
    raise AttributeError(f"module 'bridge' has no attribute {name!r}")
