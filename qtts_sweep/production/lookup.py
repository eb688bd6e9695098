"""Which production bundles exist, and the error for a bundle or registry URI that does not.

`export` and `synth --production` name a bundle by folder, production.yaml or `models:/qtts-<name>@alias`; a
wrong one is a `BundleNotFound` (a `ValidationError`: the CLI prints it and exits 2) that lists the bundles under
`paths.production_dir` and the fix. Not here: reading a bundle's fields (bundle.Bundle.load) or the registry
itself (qtts_sweep.tracking).
"""

from __future__ import annotations

from pathlib import Path

from qtts_sweep.production.bundle import BUNDLE_FILE, BundleError
from qtts_sweep.util.problems import Problem

REGISTRY_SCHEMES = ("models:/", "runs:/")


class BundleNotFound(BundleError):
    def __init__(self, problems: list[Problem], source: str = "bundle lookup"):
        super().__init__(problems, source)


def existing_bundles(production_dir: str | Path) -> list[str]:
    """Names of the bundle folders (those holding a production.yaml) under `production_dir`."""
    return sorted(p.parent.name for p in Path(production_dir).glob(f"*/{BUNDLE_FILE}"))


def _what_exists(production_dir: str | Path) -> tuple[str, str]:
    names = existing_bundles(production_dir)
    if not names:
        return f"no bundle in {production_dir}", "promote a study first: `qtts-sweep promote <study>`"
    shown = ", ".join(names)
    return (
        f"bundles in {production_dir}: {shown}",
        f"pass {Path(production_dir) / names[0]} or models:/qtts-{names[0]}@production",
    )


def require_bundle(where: str, production_dir: str | Path, registry_on: bool = True) -> None:
    """`BundleNotFound` when `where` is a path without a production.yaml, or a registry URI while tracking is
    off (registry URIs are otherwise checked when the registry is asked: see `registry_not_found`)."""
    if where.startswith(REGISTRY_SCHEMES):
        if not registry_on:
            there, fix = _what_exists(production_dir)
            raise BundleNotFound(
                [Problem("bundle", where, f"needs the MLflow registry, but tracking.backend=none ({there})", fix)]
            )
        return
    p = Path(where)
    folder = p.parent if p.suffix in (".yaml", ".yml") else p
    if (folder / BUNDLE_FILE).is_file():
        return
    there, fix = _what_exists(production_dir)
    raise BundleNotFound([Problem("bundle", where, f"has no {BUNDLE_FILE} ({there})", fix)])


def registry_not_found(uri: str, tracking_uri: str, reason: str, production_dir: str | Path) -> BundleNotFound:
    """The error for a registry URI the MLflow store could not resolve (credentials in the tracking URI and in the
    registry's own message masked)."""
    from qtts_sweep.util.urls import redact, redact_url

    there, fix = _what_exists(production_dir)
    where = redact_url(tracking_uri)
    return BundleNotFound(
        [Problem("bundle", uri, f"is not in the MLflow registry at {where} ({redact(reason)}; {there})", fix)]
    )
