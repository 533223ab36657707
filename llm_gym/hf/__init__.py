"""The Hugging Face format: safetensors files, model directories, export and import.

Architecture-specific mapping lives with each architecture's plugin and is found through
the registry (see ``llm_gym.hf.adapter``); this package never imports the built-in set.
"""
