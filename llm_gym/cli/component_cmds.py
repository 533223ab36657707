"""``llm_gym components ...``: what is registered, and what each config accepts."""

from __future__ import annotations

import click


@click.group()
def components() -> None:
    """Inspect the registered components (built-in and from plugins)."""


@components.command("list")
@click.argument("kind", required=False)
def list_components(kind: str | None) -> None:
    """List kinds, names, versions and one-line docs."""
    from rich.table import Table

    from llm_gym.cli.output import out
    from llm_gym.registry import ResolverRegistry

    registry = ResolverRegistry.from_installed_plugins()
    kinds = [registry.kind(kind)] if kind else list(registry.kinds.values())
    table = Table("kind", "name", "version", "fingerprint", "description", box=None,
                  pad_edge=False)
    for k in kinds:
        for spec in k.specs:
            table.add_row(k.name, spec.name, str(spec.version), spec.fingerprint, spec.doc)
    out.print(table)


@components.command()
@click.argument("kind")
@click.argument("name")
def show(kind: str, name: str) -> None:
    """Show every config field of one component: type, default, constraints, description."""
    from rich.table import Table

    from llm_gym.cli.output import out
    from llm_gym.registry import ComponentConfig, ResolverRegistry
    from llm_gym.registry.fields import describe_fields

    spec = ResolverRegistry.from_installed_plugins().spec(kind, name)
    out.print(f"{spec.key} version {spec.version}, fingerprint {spec.fingerprint}")
    if spec.doc:
        out.print(spec.doc, markup=False)
    deps = ", ".join(d.name + ("" if d.required else " (optional)") for d in spec.dependencies)
    out.print(f"built from: {deps or 'nothing'}", markup=False)
    if spec.config_cls.preflight is not ComponentConfig.preflight:
        checked = ", ".join(d.name + ("" if d.required else " (optional)")
                            for d in spec.preflight_dependencies)
        out.print(f"checked before a run (preflight) against: {checked or 'its own config'}",
                  markup=False)
    table = Table("field", "type", "default", "constraints", "description", box=None,
                  pad_edge=False)
    for row in describe_fields(spec.config_cls):
        table.add_row(*row)
    out.print(table)
