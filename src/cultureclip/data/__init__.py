"""Shared data formats: CulTwin twin pairs, taxonomies, datasets."""

from cultureclip.data.cultwin import (
    BadRecord,
    CulTwinFormatError,
    CulTwinLoad,
    TwinRecord,
    read_cultwin,
    write_cultwin,
)

__all__ = [
    "BadRecord",
    "CulTwinFormatError",
    "CulTwinLoad",
    "TwinRecord",
    "read_cultwin",
    "write_cultwin",
]
