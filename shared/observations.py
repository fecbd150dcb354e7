"""Sequences with unobserved values: observation masks, forward filling and time since observed.

In ICU data most values are unobserved in most hours: a lab is drawn twice a
day, a vital sign charted every hour or four. Rather than ask for imputation by
hand, a sequence contract with ``missing = "forward-fill"`` gives the model what
GRU-D gives it (Che et al., "Recurrent neural networks for multivariate time
series with missing values", Scientific Reports 2018), per feature and step:

* the **value**: the last value observed at or before that step within the stay
  (forward filling), or, before the feature's first observation, NaN until the
  hospital puts the contract's ``fill`` there (:func:`shared.imputation.fill_missing`);
* the **mask**: 1 where the feature was observed at that step, else 0;
* the **time since** it was last observed: 0 at an observation, else the time
  steps since the last one (since the stay's first step, plus one, when none yet),
  over ``max_length`` and capped at 1, so the channel lies in [0, 1] whatever
  the data.

Filling runs over the whole stay *before* the last ``max_length`` steps are kept,
so a value observed before the window still carries into it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from fedcare.shared.contract.missing import observed_name, since_name


def observation_channels(
    frame: pd.DataFrame,
    *,
    id_column: str,
    time_column: str,
    features: Sequence[str],
    max_length: int,
) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Add each feature's mask and time-since columns and forward-fill its values within stays.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per patient per time step; feature cells may be NaN (unobserved).
    id_column, time_column : str
        The patient and its (numeric) time step.
    features : Sequence[str]
        The feature columns.
    max_length : int
        Steps a sequence keeps: the time since is divided by it and capped at 1.

    Returns
    -------
    frame : pandas.DataFrame
        Sorted by patient and time: ``features`` forward-filled within each
        patient (NaN before the first observation), then each feature's
        ``NAME_observed`` and ``NAME_since_observed`` columns.
    channels : tuple[str, ...]
        Features, masks, then times since, as a padded sequence holds them.
    """
    ordered = frame.sort_values([id_column, time_column], kind="stable").reset_index(drop=True)
    patient = ordered[id_column]
    time = ordered[time_column].astype(np.float64)
    start = time.groupby(patient).transform("first")
    out = ordered.copy()
    for name in features:
        observed = ordered[name].notna()
        last_seen = time.where(observed).groupby(patient).ffill()
        # Before the first observation, count from just before the stay's first step.
        since = (time - last_seen).fillna(time - start + 1.0)
        out[observed_name(name)] = observed.astype(np.float32)
        out[since_name(name)] = np.minimum(since / max_length, 1.0).astype(np.float32)
        out[name] = ordered[name].groupby(patient).ffill()
    channels = (
        *features,
        *(observed_name(name) for name in features),
        *(since_name(name) for name in features),
    )
    return out, channels
