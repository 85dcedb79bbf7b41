"""A verl-style reward function, as its users write them."""


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    # verl's convention: a float, or a dict with "score" and extra metrics
    return {"score": float(extra_info["correct"]) - 0.5 * (extra_info["turn"] > 0), "turn_seen": extra_info["turn"]}
