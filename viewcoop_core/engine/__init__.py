"""The Ray-free engine: what a run does, as plain PyTorch the Ray workers, the CLI, the
figures and the benchmarks all call.

``components.py`` (build a run's parts from its config), ``extract.py`` (features),
``train.py`` (one training step / epoch, Eq. 9), ``evaluate.py`` (mAP / CMC),
``checkpoint.py`` (save / load / restore), ``clustering_step.py`` (one epoch's
pseudo-labels and statistics), ``tracking.py`` (MLflow runs), ``results.py`` (tables).
"""
