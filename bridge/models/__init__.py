"""Models, from a name to a picture, a score or a rewrite.

- `presets`   named architectures as data (SD1.5, SD2, CLIP, flan-t5; tiny twins); other
              packages register theirs (the toy world's: toyworld/presets.py)
- `loading`   one code path from a preset to loaded weights: hub, tiny (built offline) or local
- `tiny`      tiny random models for plumbing tests
- `encode`    A1111-style text conditioning for any diffusers pipeline
- `render`    prompts -> images at explicit seeds; `render_cache` keeps renders and their embeddings
- `score`     open_clip embeddings and CLIP-space agreement
- `rewriter`  the seq2seq rewriter (flan-t5 + LoRA) and its generation
- `engine`    an adapter merged and converted for a fast engine (`sd-bridge export`), and loaded;
              `translation_cache` remembers rewrites per model and settings
"""
