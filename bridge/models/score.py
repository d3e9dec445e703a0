"""CLIP-space scoring with an open_clip scorer preset.

Image agreement = cosine similarity of L2-normalised scorer image embeddings (DESIGN §4). The scorer's
text tower gives the cheap text-image term (no render needed).
"""

from __future__ import annotations

from typing import Sequence

from bridge.models.presets import ScorerPreset


class Scorer:
    """Embeds images and texts with one open_clip model; loads on first use."""

    def __init__(self, preset: ScorerPreset, device: str = "cpu", dtype: str = "auto", batch_size: int = 16):
        self.preset = preset
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self._loaded = None

    def _load(self):
        if self._loaded is None:
            from bridge.models.loading import load_scorer_model, resolve_device

            self.device = resolve_device(self.device)
            self._loaded = load_scorer_model(self.preset, device=self.device, dtype=self.dtype)
        return self._loaded

    def embed_images(self, images: Sequence) -> "torch.Tensor":  # noqa: F821
        """Unit-norm image embeddings, one row per PIL image, float32 on CPU."""
        import torch

        model, preprocess, _ = self._load()
        rows = []
        dtype = next(model.parameters()).dtype
        for start in range(0, len(images), self.batch_size):
            pixels = torch.stack([preprocess(img.convert("RGB")) for img in images[start : start + self.batch_size]])
            with torch.inference_mode():
                emb = model.encode_image(pixels.to(self.device, dtype=dtype), normalize=True)
            rows.append(emb.float().cpu())
        return torch.cat(rows) if rows else torch.empty(0)

    def embed_texts(self, texts: Sequence[str]) -> "torch.Tensor":  # noqa: F821
        """Unit-norm text embeddings (the scorer truncates at its own context length)."""
        import torch

        model, _, tokenizer = self._load()
        rows = []
        for start in range(0, len(texts), self.batch_size):
            tokens = tokenizer(list(texts[start : start + self.batch_size])).to(self.device)
            with torch.inference_mode():
                rows.append(model.encode_text(tokens, normalize=True).float().cpu())
        return torch.cat(rows) if rows else torch.empty(0)


def cosine(a: "torch.Tensor", b: "torch.Tensor") -> list[float]:  # noqa: F821
    """Row-wise cosine similarity of two batches of embeddings."""
    import torch

    if a.shape != b.shape:
        raise ValueError(f"embedding batches differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).tolist()
