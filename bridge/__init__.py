"""sd-bridge core library: configs, prompt syntax, presets and loading, rendering, scoring, translation.

`bridge.Translator` is imported lazily so `import bridge` stays cheap and loads no model.
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name in ("Translator", "Translation"):
        from bridge import translator

        return getattr(translator, name)
    raise AttributeError(f"module 'bridge' has no attribute {name!r}")
