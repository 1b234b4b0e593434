"""FSLoRA video person-search application: decoding, storage, vector index, indexer, search and UI.

Kept free of imports on purpose: `import app` must stay cheap (no torch, faiss or gradio) so that the
CLI and the tests only pay for the modules they use.
"""
