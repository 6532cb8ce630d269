"""The bundled trainer: DeepSeek-V3 (MLA, MoE, MTP), FP8, SFT, GRPO and the R1 stages.

Not built yet (issue #3 and later): this package holds no model today.
"""
