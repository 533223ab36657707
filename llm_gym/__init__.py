"""llm_gym: pre-train GPT-2-class language models from declarative, versioned recipes."""
__version__ = "0.1.0"
