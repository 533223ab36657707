"""Package discovery that pyproject.toml cannot express: two folders import under other names."""

from setuptools import find_packages, setup


def packages_under(folder: str, import_name: str) -> list[str]:
    return [import_name] + [f"{import_name}.{sub}" for sub in find_packages(folder)]


setup(
    packages=find_packages(include=["llm_gym", "llm_gym.*"])
    + packages_under("components", "llm_gym_components")
    + packages_under("recipes", "llm_gym_recipes"),
)
