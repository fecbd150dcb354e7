"""Secure aggregation settings: Flower's SecAgg+, and the federation sizes it needs."""

from __future__ import annotations

from dataclasses import dataclass

from fedcare.shared.config.flat import require, setting

SECAGG_MIN_HOSPITALS = 3
"""A federation needs 3: with two parties, each could subtract its own update from the sum."""

SECAGG_MIN_ROUND = 2
"""Flower's SecAgg+ needs 2 replies.

A round left with 2 lets each deduce the other's (DP) update.
"""


@dataclass(frozen=True)
class SecureAggregationSettings:
    """Flower's SecAgg+ protocol: the aggregator sees only the sum of updates.

    Attributes
    ----------
    enabled : bool
        SecAgg+ on. Turning it off needs an explicit flag and is reported loudly.
    num_shares : float
        Size of each hospital's SecAgg+ neighbourhood, itself included: the
        hospitals it masks its update with and splits its keys among. A whole
        number >= 3 is a count (every hospital when the round has fewer); a
        fraction in (0, 1] is that share of the round's hospitals. The default,
        21, keeps federations of up to 21 hospitals all-to-all; in a larger one
        the aggregator learns a hospital's update only by colluding with
        ``reconstruction_threshold`` of its neighbourhood (14 of the 21), and the
        work per hospital stays constant instead of growing with the federation
        (:meth:`share_fraction`).
    reconstruction_threshold : float
        Fraction of those shares needed to unmask; ``1 - threshold`` of a
        hospital's neighbours may drop out and the round still completes. It
        must be more than half: hospitals refuse a threshold of half the shares
        or less (two disjoint groups could then each rebuild a secret), and
        Flower rounds it, so the default 0.67 is the smallest round number that
        stays above half for every federation size.
    clipping_range : float
        Largest absolute value any update entry may take. Hospitals send model
        *deltas* and refuse to send one outside this range rather than let the
        protocol clip it silently.
    max_weight : float
        Largest sample count the protocol expects from one hospital; set it near
        the biggest site's training rows (precision and overflow depend on it).
    """

    enabled: bool = setting("secure-aggregation", True)
    num_shares: float = setting("secagg-num-shares", 21.0)
    reconstruction_threshold: float = setting("secagg-reconstruction-threshold", 0.67)
    clipping_range: float = setting("secagg-clipping-range", 4.0)
    max_weight: float = setting("secagg-max-weight", 1000.0)

    def __post_init__(self) -> None:
        require(
            0 < self.num_shares <= 1
            or (self.num_shares >= 3 and float(self.num_shares).is_integer()),
            "secagg-num-shares",
            "must be a whole number of hospitals >= 3 or a fraction in (0, 1] "
            f"(got {self.num_shares:g})",
        )
        require(
            0.5 < self.reconstruction_threshold <= 1,
            "secagg-reconstruction-threshold",
            "must be a fraction in (0.5, 1]: hospitals refuse a threshold of half the shares "
            f"or less (got {self.reconstruction_threshold})",
        )
        require(
            self.clipping_range > 0,
            "secagg-clipping-range",
            f"must be > 0 (got {self.clipping_range})",
        )
        require(
            self.max_weight > 0,
            "secagg-max-weight",
            f"must be > 0 (got {self.max_weight})",
        )

    def share_fraction(self, hospitals: int) -> float:
        """Return the neighbourhood as Flower's share of the round's hospitals.

        Flower reads a float as a fraction of the hospitals sampled in the
        round, so a count becomes ``count / hospitals``: the count itself when
        all ``hospitals`` take part, proportionally fewer when some are missing.
        """
        if self.num_shares <= 1:
            return self.num_shares
        return min(1.0, self.num_shares / hospitals)
