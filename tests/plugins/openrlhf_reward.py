"""An OpenRLHF-style reward file, as its users write them: reward_func(queries, prompts, labels)."""
import json

import torch


def reward_func(queries, prompts, labels):
    # 1 where the reply's code block holds the entry point's definition, else 0; a dict as
    # OpenRLHF returns it, with a metric in extra_logs.
    entry = json.loads(labels[0])["entry_point"]
    rewards = torch.tensor([float(f"def {entry}(" in q[len(p):]) for q, p in zip(queries, prompts)])
    return {"rewards": rewards, "scores": rewards, "extra_logs": {"defines_entry": rewards}}
