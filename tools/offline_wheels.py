"""Wheels for running llm_gym on a machine that has torch but no network.

GPU nodes are often air-gapped, with an image that holds torch, numpy, pluggy, rich,
click, tokenizers and pytest but not pydantic, omegaconf or class-resolver. This fetches
those (at the versions installed here, so both machines run the same code) plus a wheel
of this checkout, into one folder to copy over:

    python tools/offline_wheels.py .whl --python-version 3.12
    # there:
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
    python3 tools/gpu_check.py

``--no-deps`` there is deliberate: torch and the rest come from the node's own image.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# What llm_gym needs beyond a typical PyTorch image; pydantic's own needs included.
MISSING_ON_TORCH_IMAGES = (
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",
    "omegaconf",
    "class-resolver",
)

PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def pinned(names: tuple[str, ...]) -> list[str]:
    """``name==version`` as installed here; a name not installed is an error."""
    out = []
    for name in names:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            sys.exit(f"{name} is not installed here; install llm_gym first (pip install -e .)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the wheels")
    parser.add_argument("--python-version", default=f"{sys.version_info[0]}.{sys.version_info[1]}",
                        help="the Python of the target machine, e.g. 3.12")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("llm_gym-*.whl"):  # one wheel of this checkout, the newest
        old.unlink()
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", "--implementation",
                    "cp", "--python-version", args.python_version, *platforms,
                    "-d", str(args.out), *pinned(MISSING_ON_TORCH_IMAGES)], check=True)
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(args.out), str(REPO)], check=True)
    wheels = sorted(p.name for p in args.out.glob("*.whl"))
    print(f"{len(wheels)} wheels in {args.out}:", *wheels, sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
