"""The engagement model as the directory holds it: a few columns per user, and the scores of
one opportunity over a fan-out, vectorised (docs/personalization.md).

:class:`Affinities` is built from the records of ``state.personalization`` (one JSON per user,
decoded by Polars in one pass): ``ids`` (sorted) with each user's ``base`` rate, and per
feature (``kind:…``, ``symbol:…``, ``exchange:…``, ``edge:…``) the sorted ids of the users who
have an affinity for it and their values. :meth:`Affinities.scores` looks the fan-out's ids up
in the few features of one opportunity (``searchsorted``, no loop over users) and returns
predicted engagement times edge, NaN for a user without a model. The directory keeps one
(:meth:`actors.directory.UserDirectory.load_affinities`); a Redis without a model (an older
release, personalization off) leaves it empty: every score NaN, every order as before.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from core.eligibility import OpportunityView
from core.personalization import opportunity_features, predicted, scored

RECORD_DTYPE = pl.Struct(
    {
        "b": pl.Float64,
        "n": pl.Int64,
        "a": pl.List(pl.Struct({"f": pl.String, "v": pl.Float64})),
    }
)
"""The stored record's shape (``state.personalization``)."""


def _is_json(text: str | None) -> bool:
    try:
        return isinstance(json.loads(text or ""), dict)
    except ValueError:
        return False


@dataclass(slots=True)
class Affinities:
    """Users with a model and their affinities, column-wise."""

    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    base: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    features: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """feature → (sorted user ids, affinities)."""
    version: int = 0
    """The store's version these came from (0: none)."""
    skipped: int = 0
    """Records that did not decode (left out: those users are neutral)."""

    def __len__(self) -> int:
        return int(self.ids.size)

    @classmethod
    def from_records(cls, records: Iterable[tuple[int, str]], version: int = 0) -> Affinities:
        """From (user id, JSON) pairs; a record that does not decode is left out (counted)."""
        pairs = list(records)
        if not pairs:
            return cls(version=version)
        raw = pl.DataFrame(
            {"user_id": [p[0] for p in pairs], "record": [p[1] for p in pairs]},
            schema={"user_id": pl.Int64, "record": pl.String},
        )
        try:
            decoded = raw.with_columns(pl.col("record").str.json_decode(RECORD_DTYPE).alias("m"))
        except pl.exceptions.PolarsError:  # a record that is not JSON: the others still count
            decoded = raw.filter(pl.Series([_is_json(r) for r in raw.get_column("record")])).with_columns(
                pl.col("record").str.json_decode(RECORD_DTYPE).alias("m")
            )
        decoded = decoded.unnest("m")
        good = decoded.filter(pl.col("b").is_not_null() & pl.col("b").is_finite() & (pl.col("b") > 0))
        good = good.unique("user_id", keep="last").sort("user_id")
        long = (
            good.select("user_id", "a")
            .explode("a")
            .unnest("a")
            .filter(pl.col("f").is_not_null() & pl.col("v").is_not_null() & pl.col("v").is_finite())
            .sort("f", "user_id")
        )
        features: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if long.height:
            uids = long.get_column("user_id").to_numpy().astype(np.int64)
            vals = long.get_column("v").to_numpy().astype(np.float64)
            runs = long.group_by("f", maintain_order=True).len()  # sorted by feature: one run each
            ends = np.cumsum(runs.get_column("len").to_numpy())
            for name, s, e in zip(
                runs.get_column("f").to_list(), np.r_[0, ends[:-1]].tolist(), ends.tolist(), strict=True
            ):
                features[str(name)] = (uids[s:e], vals[s:e])
        return cls(
            ids=good.get_column("user_id").to_numpy().astype(np.int64),
            base=good.get_column("b").to_numpy().astype(np.float64),
            features=features,
            version=version,
            skipped=raw.height - good.height,
        )

    def _lookup(self, feature: str, ids: np.ndarray) -> np.ndarray:
        """Each id's affinity for ``feature`` (0 where it has none)."""
        found = self.features.get(feature)
        out = np.zeros(ids.size, np.float64)
        if found is None or not ids.size:
            return out
        fids, values = found
        pos = np.minimum(np.searchsorted(fids, ids), fids.size - 1)
        hit = fids[pos] == ids
        out[hit] = values[pos[hit]]
        return out

    def scores(self, user_ids: Sequence[int] | np.ndarray, view: OpportunityView) -> np.ndarray:
        """Predicted engagement times edge of ``view`` for each id (NaN: no model)."""
        ids = np.asarray(user_ids, dtype=np.int64)
        out = np.full(ids.size, np.nan, np.float64)
        if not ids.size or not self.ids.size:
            return out
        pos = np.minimum(np.searchsorted(self.ids, ids), self.ids.size - 1)
        known = self.ids[pos] == ids
        if not known.any():
            return out
        kid = ids[known]
        logit = np.zeros(kid.size, np.float64)
        groups = opportunity_features(str(view.kind), view.symbol, view.exchanges, view.net_bps)
        for names in groups.values():
            if names:
                logit += sum((self._lookup(n, kid) for n in names), np.zeros(kid.size)) / len(names)
        out[known] = scored(predicted(self.base[pos[known]], logit), view.net_bps)
        return out


__all__ = ["RECORD_DTYPE", "Affinities"]
