"""SAM backbones, prompt-free multi-class heads, LoRA / adapters, and the fine-tuning strategies."""
