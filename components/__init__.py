"""llm_gym's built-in component set, a plugin like any third-party one (entry point ``llm_gym``)."""
