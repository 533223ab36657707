"""``python -m llm_gym`` is the ``llm_gym`` command."""

from llm_gym.cli.main import main

if __name__ == "__main__":
    main()
