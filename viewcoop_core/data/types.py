"""Plain records shared by every dataset: one image, its identity and camera."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ReidSample:
    """One image of a re-id dataset.

    ``pid`` is the vehicle identity (relabelled to 0..P-1 for training splits, the
    original id for query/gallery), ``camid`` the 0-based camera index and
    ``mask_path`` the single-channel view mask (0 background, 1 front, 2 back,
    3 top, 4 side) when one is known.
    """

    path: str
    pid: int
    camid: int
    mask_path: str | None = None


@dataclass
class ReidDataset:
    """The splits of a dataset and the evaluation protocol that applies to them.

    ``protocol == "veri"``: fixed ``query`` and ``gallery`` lists (VeRi-776, synthetic).
    ``protocol == "vehicleid"``: ``test`` holds one whole test list; query and gallery
    are drawn from it per random split (one gallery image per identity), see
    ``viewcoop_core.metrics.vehicleid_split_indices``.
    """

    name: str
    root: str
    train: list[ReidSample] = field(default_factory=list)
    query: list[ReidSample] = field(default_factory=list)
    gallery: list[ReidSample] = field(default_factory=list)
    test: list[ReidSample] = field(default_factory=list)
    protocol: str = "veri"

    @property
    def num_train_pids(self) -> int:
        return len({s.pid for s in self.train})

    @property
    def num_train_cams(self) -> int:
        return len({s.camid for s in self.train})
