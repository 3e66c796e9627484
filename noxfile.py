"""Developer task runner: ``nox`` runs tests, lint and typecheck; see ``nox -l``."""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).parent

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_external_run = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite; extra arguments go to pytest (``nox -s tests -- -k nginx``)."""
    session.install(".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check (no changes are written)."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package sources."""
    session.install(".[dev]")
    session.run("mypy", "--strict", "src")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with warnings as errors, and check the docs' links.

    ``mkdocs build --strict`` (mkdocs.yml) fails on a broken link or anchor, a page
    left out of the nav, or a docstring mkdocstrings cannot render; the site goes to
    ``site/``. ``docs/_check_links.py`` also checks README.md's relative links, which
    the site does not include. The samples themselves run in the test suite
    (tests/test_docs.py).
    """
    session.install("-e", ".[docs]")
    session.run("python", "docs/_check_links.py")
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        "site",
        *session.posargs,
        env={"NO_MKDOCS_2_WARNING": "1"},  # the theme's notice about MkDocs 2
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks (issues #5, #19, #20, #21); extra arguments go to benchmarks/run.py.

    ``nox -s bench -- --quick`` is a smoke run (well under a minute); ``nox -s
    bench -- --scenario 1,2,7,8 --only bgtransfer`` measures the daemon against
    the in-process background session (every daemon it starts is stopped). The run
    installs nginx, curl, wget, aria2 and GNU time with apt-get when they are missing
    and it may (root or passwordless sudo); a contender whose tool is still missing
    is reported as "not available". matplotlib (the plot) and pyinstrument
    (``--profile``) are bench-only dependencies, installed here.
    """
    session.install("-e", ".", "matplotlib", "pyinstrument")
    session.run("python", str(ROOT / "benchmarks" / "run.py"), *session.posargs)
