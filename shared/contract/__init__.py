"""The data contract: what every hospital's data must look like, agreed by the federation.

:class:`DataContract` is the agreement and what follows from it
(:mod:`shared.contract.data_contract`, where the file format is described);
:mod:`shared.contract.parsing` reads it from TOML; the ``[features]``,
``[images]`` and ``[sequences]`` tables, with the specs hospitals' readers hold
images and sequence files to, have a module each.
"""

from fedcare.shared.contract.data_contract import DataContract
from fedcare.shared.contract.features import Feature, FeatureType, MissingPolicy
from fedcare.shared.contract.fields import ContractError
from fedcare.shared.contract.images import (
    IMAGE_CHANNEL_NAMES,
    ImageLayout,
    ImageSpec,
    ImageSpecError,
)
from fedcare.shared.contract.sequences import (
    MASK_NAME,
    SequenceLayout,
    SequenceSpec,
    SequenceSpecError,
)

__all__ = [
    "IMAGE_CHANNEL_NAMES",
    "MASK_NAME",
    "ContractError",
    "DataContract",
    "Feature",
    "FeatureType",
    "ImageLayout",
    "ImageSpec",
    "ImageSpecError",
    "MissingPolicy",
    "SequenceLayout",
    "SequenceSpec",
    "SequenceSpecError",
]
