"""Dataset cards rendered from the store: Markdown with Hugging Face front matter, tables and plots.

`stats.compute_stats` reduces a lazy Sample table to `CardStats` in one
streaming pass; `render.render_card` turns stats and `render.CardMeta` into
`README.md` plus PNG plots. See README.md in this folder.
"""
