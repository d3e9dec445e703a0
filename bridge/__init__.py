"""sd-bridge core library. The tree follows the flow of a prompt, each layer importing only those above it here:

- `bridge.files`, `bridge.syntax`   text files in any encoding, atomic writes; prompt text with no model
- `bridge.config`    typed configs and the one parser that makes them flags
- `bridge.models`    presets, loading, rendering, scoring, the rewriter and its fast engine
- `bridge.io`        prompt libraries in (sources, clean) and image grids out
- `bridge.translator` `bridge.Translator`, the public API: source prompts in, target prompts out
- `bridge.io.migrate`, `bridge.sweep`   a whole library translated; breadth over seeds and nearest references
- `bridge.commands`  every `sd-bridge` command; `bridge.cli` dispatches to them

The stages (data/, training/, eval/) and the toy world (toyworld/) build on the library; only the commands
and the app (app.py) import them. tests/project/test_layers.py checks every import.

`bridge.Translator` is imported lazily so `import bridge` stays cheap and loads no model.
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name in ("Translator", "Translation"):
        from bridge import translator

        return getattr(translator, name)
    raise AttributeError(f"module 'bridge' has no attribute {name!r}")
