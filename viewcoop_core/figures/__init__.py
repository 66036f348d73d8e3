"""The paper's qualitative figures (Fig. 4, 5, 6) as numbers and PNG files.

``distances.py`` (Fig. 4), ``discrepancy.py`` (Fig. 5), ``correlation.py`` (Fig. 6):
the measurements and their plots; ``runs.py``: all three for training checkpoints
(``make_figures``, what ``viewcoop figures`` and the end of a run call).
"""

from viewcoop_core.figures.correlation import (
    denormalise_images,
    patch_global_correlation,
    patch_view_labels,
    plot_patch_correlation,
)
from viewcoop_core.figures.discrepancy import (
    image_text_discrepancy,
    image_text_mmd,
    median_heuristic_bandwidth,
    plot_image_text_discrepancy,
)
from viewcoop_core.figures.distances import (
    distance_separation,
    pair_distance_samples,
    plot_distance_distributions,
    sample_pair_indices,
)

__all__ = [
    "denormalise_images",
    "distance_separation",
    "image_text_discrepancy",
    "image_text_mmd",
    "median_heuristic_bandwidth",
    "pair_distance_samples",
    "patch_global_correlation",
    "patch_view_labels",
    "plot_distance_distributions",
    "plot_image_text_discrepancy",
    "plot_patch_correlation",
    "sample_pair_indices",
]
