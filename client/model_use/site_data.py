"""Read a hospital's labelled data file under a contract, as the hospital reads it to train."""

from __future__ import annotations

from pathlib import Path

from fedcare.shared.contract import DataContract
from fedcare.shared.data import Examples, InputKind


def read_site_data(path: Path, contract: DataContract) -> Examples:
    """Read ``path`` with the reader the contract's format names, checked against the contract.

    The one place this wing reads a labelled hospital file: the same readers, and
    the same checks, as training (:func:`client.site.load_site`), returning raw
    (unstandardised) examples.

    Raises
    ------
    shared.errors.DataError
        Listing every way the file breaks the contract (file, column, rule, count;
        never a value).
    """
    kind = contract.input_kind()
    if kind is InputKind.IMAGES:
        from fedcare.client.image_files import load_image_file

        images, classes = load_image_file(path, contract.image_spec())
        labels = contract.labels_from_indices(classes)
        return Examples(images, labels, contract.feature_names(), kind)
    if kind is InputKind.SEQUENCES:
        from fedcare.client.sequence_files import load_sequence_file

        sequences, classes = load_sequence_file(path, contract.sequence_spec())
        contract.check_sequence_values(sequences, str(path))
        labels = contract.labels_from_indices(classes)
        return Examples(sequences, labels, contract.feature_names(), kind)
    from fedcare.client.site_table import load_site_table

    return load_site_table(path, contract)
