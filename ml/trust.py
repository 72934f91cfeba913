"""Which model artifacts may be loaded: the skops format only, with a trusted-type list this project
owns, and only the exact bytes whose SHA-256 was recorded when the version was registered.

Loading a pickle or cloudpickle model runs whatever code its author put in it, and MLflow's own
skops loader takes the trusted types from the model's files, i.e. from the author. Anyone who can
register a version (the MLflow server has no login on loopback) could otherwise run code in the live
scorer, which loads every new ``@champion`` by itself.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from core.errors import NeurolakeError

# Every type in our pipelines that skops does not trust by default (ml/pipelines.py, ml/decoders.py);
# a new pipeline step with such a type is added here, reviewed, not taken from the model. The decoders
# hold only numbers and arrays; their code is ours.
TRUSTED_TYPES = (
    "sklearn.compose._column_transformer.make_column_selector",
    "ml.decoders.FilterBankCCA",
    "ml.decoders.TRCA",
    "ml.decoders.TDCA",
    "ml.decoders.MsCcaMsEtrca",
)
SHA256_TAG = "artifact_sha256"


class UntrustedModelError(NeurolakeError):
    """A model artifact that neurolake refuses to load."""


def model_file(model_dir: Path) -> Path:
    """The skops file of an MLflow sklearn model; refuses any other serialization format."""
    import yaml

    try:
        meta = yaml.safe_load((model_dir / "MLmodel").read_text())
    except FileNotFoundError:
        raise UntrustedModelError(f"{model_dir} is not an MLflow model (no MLmodel file)") from None
    flavour = (meta or {}).get("flavors", {}).get("sklearn")
    if not flavour:
        raise UntrustedModelError("the model has no scikit-learn flavour")
    fmt = flavour.get("serialization_format")
    if fmt != "skops":
        raise UntrustedModelError(
            f"the model is serialized as {fmt!r}; only skops is loaded (pickle and "
            "cloudpickle run arbitrary code on load): retrain it with `neurolake train`"
        )
    path = (model_dir / str(flavour.get("pickled_model", ""))).resolve()
    if model_dir.resolve() not in path.parents or not path.is_file():
        raise UntrustedModelError(f"the model file {flavour.get('pickled_model')!r} is not inside {model_dir}")
    return path


def artifact_sha256(model_dir: Path) -> str:
    return hashlib.sha256(model_file(model_dir).read_bytes()).hexdigest()


def load_trusted(model_dir: Path, expected_sha256: str | None) -> Any:
    """The estimator in ``model_dir``, if it is skops, has the recorded hash and holds only trusted types."""
    import skops.io

    path = model_file(model_dir)
    if not expected_sha256:
        raise UntrustedModelError(
            f"the version has no {SHA256_TAG} tag (it was not registered by "
            "`neurolake train`); retrain or re-register it"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected_sha256:
        raise UntrustedModelError(
            f"the model file's SHA-256 {digest[:12]}... differs from the "
            f"{expected_sha256[:12]}... recorded at registration: the artifact was changed"
        )
    untrusted = [t for t in skops.io.get_untrusted_types(file=path) if t not in TRUSTED_TYPES]
    if untrusted:
        raise UntrustedModelError(f"the model holds types neurolake does not trust: {', '.join(untrusted[:5])}")
    return skops.io.load(path, trusted=list(TRUSTED_TYPES))
