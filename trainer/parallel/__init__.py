"""Parallel training, applied to a built model from outside (the model knows nothing of ranks).

`simulate`: the pipeline schedule simulator (1F1B, ZB1P, DualPipe, DualPipeV) that reproduces
the DeepSeek-V3 table of bubbles and memory.
"""
