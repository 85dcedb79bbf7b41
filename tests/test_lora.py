"""LoRA (rl/lora.py) on the tiny model: the adapted model starts as the base, the merged weights
give the adapted model's logits under the base model's names, switching the adapters off gives
the base back, and only the adapters train — also inside the DeepSpeed learner, where the
reference is the policy without its adapters (no second copy) and what it publishes and saves
is a plain merged model."""
import random

import pytest
import torch

from rl.lora import LoRALinear, adapters_disabled, apply_lora, merged_state_dict
from tests.test_learner import _config, _credited, _learner
from tests.records import train_step


def _model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_adapters_merge_into_the_base_names_and_switch_off_to_the_base(tiny_model):
    base, adapted = _model(tiny_model), _model(tiny_model)
    wrapped = apply_lora(adapted, rank=4, alpha=8.0)
    layers = len(base.model.layers)
    assert len(wrapped) == 7 * layers   # q, k, v, o, gate, up, down of every decoder layer
    assert not any("embed" in w or "lm_head" in w for w in wrapped)
    assert all(p.requires_grad == (n.endswith(("lora_a", "lora_b"))) for n, p in adapted.named_parameters())
    ids = torch.tensor([[5, 17, 99, 3, 250, 7]])
    assert torch.equal(_logits(adapted, ids), _logits(base, ids))   # B = 0: exactly the base
    for m in adapted.modules():
        if isinstance(m, LoRALinear):
            torch.nn.init.normal_(m.lora_b, std=0.05)
    moved = _logits(adapted, ids)
    assert (moved - _logits(base, ids)).abs().max() > 1e-3
    with adapters_disabled(adapted):
        assert torch.allclose(_logits(adapted, ids), _logits(base, ids), atol=1e-6)
    merged = merged_state_dict(adapted)
    assert set(merged) == set(base.state_dict())
    plain = _model(tiny_model)
    plain.load_state_dict(merged)
    assert torch.allclose(_logits(plain, ids), moved, atol=1e-5)
    assert merged["lm_head.weight"].data_ptr() == merged["model.embed_tokens.weight"].data_ptr()   # still tied


def test_learner_with_lora_trains_only_adapters_and_publishes_a_plain_model(tiny_model, tmp_path):
    cfg = _config("learner.lora_rank=4", "algo.kl_coef=0.05")
    learner = _learner(cfg, tiny_model, 29771)
    plain = _learner(_config("algo.kl_coef=0.05"), tiny_model, 29772)
    assert learner.reference is None and plain.reference is not None   # the reference is the base inside the policy
    trainable = sum(p.numel() for p in learner.engine.module.parameters() if p.requires_grad)
    assert trainable < 0.2 * sum(p.numel() for p in plain.engine.module.parameters())
    assert learner.parameter_names() == plain.parameter_names() and learner.checksum() == plain.checksum()
    base_weights = {k: v.clone() for k, v in learner.policy.state_dict().items() if ".base." in k}
    batch = _credited(random.Random(5), 8)
    sums = train_step(learner, batch)
    assert sums["kl_count"] > 0 and torch.isfinite(torch.tensor(sums["loss"]))
    assert all(torch.equal(v, learner.policy.state_dict()[k]) for k, v in base_weights.items())   # W frozen
    assert learner.checksum() != plain.checksum()                                                # the merged model moved
    # the reference is still the base model after the update
    assert torch.allclose(learner._reference_logprobs(batch, trained_only=False), plain._reference_logprobs(batch, trained_only=False), atol=1e-5)
    saved = learner.save(str(tmp_path / "final"), tiny_model)
    ids = torch.tensor([batch[0].layout.token_ids])
    assert torch.allclose(_logits(_model(saved), ids), _logits(learner.policy.eval(), ids), atol=1e-5)


def test_lora_with_zero_stage_3_is_refused_by_the_config():
    from rl.config import ConfigError

    with pytest.raises(ConfigError, match="learner.lora_rank: LoRA with learner.zero_stage=3 is not supported"):
        _config("learner.lora_rank=8", "learner.zero_stage=3")


@pytest.mark.e2e
def test_lora_run_pushes_merged_weights_the_workers_hold_and_sample_with(tiny_model, tmp_path):
    """Two steps through Ray, vLLM, the sandbox and the learner with LoRA: the workers get the
    merged weights, sample step 2 with them, and the saved model is the last push."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    from launch.train import train
    from rl.config import load_config
    from rl.weight_sync import checksum_tensors
    from tests.conftest import REPO

    cfg = load_config(REPO / "configs" / "tiny.yaml", [
        f"model.path={tiny_model}", f"run.output_dir={tmp_path}", "rollout.num_workers=1", "learner.lora_rank=4",
        f"reward.name={REPO / 'tests' / 'plugins' / 'reply_length.py'}:reply_length",   # a signal a random model gets
        "run.save_final=true", "wandb.mode=disabled"])
    run_dir = Path(train(cfg)["run_dir"])
    steps = [r for r in map(json.loads, (run_dir / "metrics.jsonl").open()) if "weight_version" in r]
    initial = json.loads((run_dir / "metadata.json").read_text())["initial_weights_checksum"]
    assert len({initial, *(r["weights/checksum"] for r in steps)}) == 3, "each step must change the merged weights"
    # Each worker loaded the pushed bytes (the push checks their checksum) and holds the
    # parameters vLLM keeps verbatim (embeddings, norms: frozen under LoRA) as the learner does;
    # that its engine runs the merged update shows in step 2's logprobs, which the learner
    # reproduces (sampling with the initial weights would be off by the whole update).
    assert all(len(r["weights/held_by_workers"]) == 1 for r in steps)
    assert steps[1]["learner/rollout_logprob_abs_diff"] < 1e-3
    assert checksum_tensors(load_file(str(run_dir / "final" / "model.safetensors"))) == steps[-1]["weights/checksum"]
