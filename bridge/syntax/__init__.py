"""Prompt text, with no model loaded: what a prompt says and what it costs.

- `prompt`   lossless parser and serializer of A1111 / ComfyUI / NovelAI syntax (leaves, weights, tags)
- `a1111`    how AUTOMATIC1111 reads a prompt, step by step (weights, BREAK, AND, scheduling)
- `comfyui`  ComfyUI's weighting dialect, and conversion to and from A1111's
- `infotext` A1111's PNG-info "parameters" text, parsed and written back
- `tokens`   the real CLIP tokenizer built offline, token counts per 75-token chunk
- `policy`   MigrationPolicy: what happens to SD1-only syntax on the way to SD2 (the `syntax` strategy)
"""
