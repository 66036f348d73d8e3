"""View parsing: the model that makes the view masks ViewCoOp's prompt needs.

``spec.py`` (architecture and training settings as plain data), ``model.py`` (a light
U-Net over the five mask labels), ``augment.py``, ``losses.py`` and ``train.py``
(training on image/mask pairs; ``train_parallel.py`` splits each batch over CPU
processes), ``checkpoint.py`` (weights-only checkpoints), ``inference.py`` /
``predict.py`` (masks for folders of images, resumable), ``evaluate.py`` (IoU and view-ratio error),
``cache.py`` (predicted masks for a run's dataset, cached by checkpoint and image set).

Importing this package loads no torch; the modules that need it import it themselves.
"""
