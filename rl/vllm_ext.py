"""Code that runs *inside* vLLM's worker process (loaded by name via `worker_extension_cls`).

vLLM's CPU backend repacks weights after loading, so `model.load_weights` cannot be called
again; `model_runner.reload_weights` re-runs the checkpoint-format loading path instead.
"""
from __future__ import annotations

import logging

from rl.weight_sync import checksum_tensors, read_weights


class _RotaryCacheIsNotAWeight(logging.Filter):
    """vLLM's in-place reload logs "RotaryEmbedding: Failed to load weights" on every reload: that
    layer's only tensor is its cos/sin cache, a buffer computed from the model config that no
    checkpoint holds, so the reload loads nothing into it and puts it back as it was. Nothing
    failed (the end-to-end test checks the engine's logprobs against the learner's after each
    push), so exactly that message is dropped; the same warning for any other layer still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "RotaryEmbedding: Failed to load weights"


# This module is imported in vLLM's worker process when the engine loads the extension by name.
logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").addFilter(_RotaryCacheIsNotAWeight())

# The CPU backend repacks linear layers (and fuses q/k/v, gate/up) after loading; embeddings and
# norms are held exactly as published, so their bytes can be compared with the learner's.
VERBATIM_SUFFIXES = ("embed_tokens.weight", "norm.weight")


def verbatim_parameter_names(names) -> list[str]:
    return sorted(n for n in names if n.endswith(VERBATIM_SUFFIXES))


class WeightSyncExtension:
    def reload_weights_from(self, locations: list[str], timeout_s: float) -> str:
        """Load received weights (files, or a tcp:// address fetched here, within `timeout_s`: see
        rl/weight_sync.py) in place; returns the checksum of what was loaded."""
        weights = read_weights(locations, timeout_s)
        self.model_runner.reload_weights(weights_iterator=iter(weights.items()), is_checkpoint_format=True)
        self._refresh_tied_lm_head()
        return checksum_tensors(weights)

    def _refresh_tied_lm_head(self) -> None:
        """A tied lm_head has no weights of its own in the file, so the reload skips it; but the
        CPU backend packed a private copy of the embedding for the head's GEMM at start-up, which
        would keep producing logits from the *initial* weights. Re-run the head's post-load step
        so the copy is rebuilt from the new embedding. (Found by the end-to-end test: rollout
        logprobs matched "new weights + old head" to 3e-7.)"""
        model = self.model_runner.model
        head = getattr(model, "lm_head", None)
        embed = getattr(getattr(model, "model", None), "embed_tokens", None)
        if head is None or embed is None or head.weight.data_ptr() != embed.weight.data_ptr():
            return
        head.quant_method.process_weights_after_loading(head)

    def held_weights_checksum(self, names: list[str]) -> str:
        """Checksum of the named parameters as the engine holds them now (names vLLM keeps unfused)."""
        params = dict(self.model_runner.model.named_parameters())
        return checksum_tensors({name: params[name] for name in names})

