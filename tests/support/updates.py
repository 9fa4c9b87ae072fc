"""A site fed by update bundles: its inventory taken after it loaded some images from the build
box, and `save --since` that inventory on the build box (the steps of every update test)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.cli import run_sealift
from tests.support.dockerd import DockerDaemon


@dataclass(frozen=True)
class UpdateSite:
    site: DockerDaemon
    build_box: DockerDaemon
    workdir: Path

    @property
    def first_bundle(self) -> Path:
        """The full bundle :meth:`holding` loaded into the site."""
        return self.workdir / "first.tar"

    def holding(self, *refs: str) -> Path:
        """Load ``refs`` (saved on the build box) into the site; return the site's inventory."""
        run_sealift("save", *refs, "-o", self.first_bundle, env=self.build_box.env()).assert_ok()
        run_sealift("load", self.first_bundle, env=self.site.env()).assert_ok()
        inventory = self.workdir / "site.json"
        run_sealift("inventory", "-o", inventory, env=self.site.env()).assert_ok()
        return inventory

    def update(self, ref: str, inventory: Path, *more: str) -> tuple[Path, dict[str, Any]]:
        """``save REF --since INVENTORY --json`` on the build box: the bundle and its summary."""
        bundle = self.workdir / "update.tar"
        saved = run_sealift(
            "save",
            ref,
            "--since",
            inventory,
            "-o",
            bundle,
            "--json",
            *more,
            env=self.build_box.env(),
        )
        return bundle, saved.assert_ok().json()
