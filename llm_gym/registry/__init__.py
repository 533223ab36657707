"""Components declare themselves once; the registry derives enums, unions and resolvers."""

from llm_gym.registry.component import (
    STRICT_MODEL_CONFIG,
    ComponentConfig,
    ComponentSpec,
    StrictModel,
    collect_components,
    component,
    problems_at,
)
from llm_gym.registry.hookspecs import Slot, hookimpl
from llm_gym.registry.kinds import ComponentChoice, UnknownComponentError
from llm_gym.registry.lookup import LookupEnum
from llm_gym.registry.nesting import Component
from llm_gym.registry.registry import ResolverRegistry

__all__ = [
    "STRICT_MODEL_CONFIG",
    "Component",
    "ComponentChoice",
    "ComponentConfig",
    "ComponentSpec",
    "LookupEnum",
    "ResolverRegistry",
    "Slot",
    "StrictModel",
    "UnknownComponentError",
    "collect_components",
    "component",
    "hookimpl",
    "problems_at",
]
