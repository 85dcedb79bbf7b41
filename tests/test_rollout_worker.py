"""The vLLM rollout worker itself, in-process (no Ray): seeded sampling of a batch whose prompts
do not fit in one engine step, as turn 2 of a training step produces (16 episodes, each carrying
its first reply and the execution feedback). vLLM 0.32 on CPU killed its engine here after a
split prefill (2026-12-02, step 7 of a learning run); a run must get its samples instead."""
import os
from unittest import mock

import pytest

from rl.rollout import RolloutWorker, SamplingSpec

pytestmark = pytest.mark.e2e


def test_seeded_sampling_survives_a_batch_larger_than_one_engine_step(tiny_model):
    # the worker sets vLLM's environment variables in its own process: here that is the test
    # session's, which later Ray workers would inherit
    with mock.patch.dict(os.environ):
        _sample_twice(tiny_model)


def _sample_twice(tiny_model):
    worker = RolloutWorker(tiny_model, "float32", max_model_len=1024, seed=0)
    # 16 prompts of 600 tokens: 9600 prompt tokens, more than a CPU step's 4096 by default
    prompts = [[(7 * i + j) % 4000 + 100 for j in range(600)] for i in range(16)]
    spec = SamplingSpec(temperature=1.0, max_new_tokens=8, seed=123)
    first = worker.generate(prompts, spec)
    assert len(first) == 16 and all(len(s) == 1 and s[0].token_ids for s in first)
    # the per-prompt seeds still make the batch reproducible
    again = worker.generate(prompts, spec)
    assert [s[0].token_ids for s in again] == [s[0].token_ids for s in first]
