"""Dataset cards rendered from the store: Markdown with Hugging Face front matter, tables and plots."""
