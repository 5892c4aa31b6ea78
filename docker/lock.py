"""Pin the images' Python packages to what the development venv runs: `make docker-lock`.

    .venv/bin/python docker/lock.py            # writes docker/requirements-{agent,controller}.txt
    .venv/bin/python docker/lock.py --check    # exit 1 when a file is not what it would write

The images install exactly these versions with `pip install --no-deps`, so a container runs the
same Pillow (and so renders the same PNG bytes), the same RQ and the same Playwright as the test
suite. The closure is read from the installed distributions' metadata, starting at the
`[project] dependencies` of `semantest` (extras such as `uvicorn[standard]` followed, markers
evaluated for the images' Python, Debian bookworm's 3.11.2). The controller image
leaves out Playwright and what only Playwright needs: it never drives a browser. Neither
image carries pytest-playwright (the base of the pytest plugin `semantest.testing`).
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HERE = Path(__file__).resolve().parent
#: Roots the controller image does without (the controller never imports Playwright).
AGENT_ONLY = {"playwright"}
#: Roots neither image needs: the pytest plugin's base (containers run no tests).
TEST_ONLY = {"pytest-playwright"}
#: The images' interpreter: Debian bookworm's python3. Markers are evaluated for it, not for
#: the venv's (redis, for one, needs async-timeout below 3.11.3).
IMAGE_PYTHON = {"python_version": "3.11", "python_full_version": "3.11.2"}
#: Versions of what only the images' interpreter needs, so the venv does not have it.
IMAGE_ONLY = {"async-timeout": "5.0.1"}


def closure(roots: list[Requirement]) -> dict[str, str]:
    """Canonical name -> installed version of every distribution `roots` pull in."""
    found: dict[str, str] = {}
    todo = [(req, frozenset(req.extras)) for req in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if name not in IMAGE_ONLY:
                raise SystemExit(
                    f"{name} ({req}) is needed on the images' Python but not installed in"
                    " this venv: add its version to IMAGE_ONLY in docker/lock.py"
                ) from None
            found[name] = IMAGE_ONLY[name]
            continue
        found[name] = dist.version
        for text in dist.requires or []:
            sub = Requirement(text)
            wanted = [{"extra": extra, **IMAGE_PYTHON} for extra in extras] or [
                {"extra": "", **IMAGE_PYTHON}
            ]
            if sub.marker is None or any(sub.marker.evaluate(env) for env in wanted):
                todo.append((sub, frozenset(sub.extras)))
    return found


def project_roots() -> list[Requirement]:
    """The project's own runtime requirements, read from pyproject.toml (the installed
    metadata of an editable install can be older than the file)."""
    with (HERE.parent / "pyproject.toml").open("rb") as f:
        requires = tomllib.load(f)["project"]["dependencies"]
    roots = [Requirement(text) for text in requires]
    roots = [r for r in roots if canonicalize_name(r.name) not in TEST_ONLY]
    return [
        r for r in roots if r.marker is None or r.marker.evaluate({"extra": "", **IMAGE_PYTHON})
    ]


def render(pins: dict[str, str], image: str) -> str:
    """The requirements file of one image."""
    head = (
        f"# Python packages of the {image} image, pinned to the development venv.\n"
        "# Written by docker/lock.py (make docker-lock); do not edit by hand.\n"
    )
    return head + "".join(f"{name}=={pins[name]}\n" for name in sorted(pins))


def expected() -> dict[Path, str]:
    """File -> content for both images."""
    roots = project_roots()
    agent = closure(roots)
    controller = closure([r for r in roots if canonicalize_name(r.name) not in AGENT_ONLY])
    return {
        HERE / "requirements-agent.txt": render(agent, "agent"),
        HERE / "requirements-controller.txt": render(controller, "controller"),
    }


def main() -> int:
    """Write (or with --check compare) the two requirements files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    stale = []
    for path, text in expected().items():
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(HERE.parent)}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run make docker-lock", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
