"""Ray Tune sweeps over whole trainings: one Tune trial per grid point, one MLflow parent run.

The grid comes from a config file's ``sweep:`` section and the command line:

.. code-block:: yaml

    sweep:
      graph.tau: ["0", "1", "1or2", "2"]     # an axis: dotted key -> list of values
      points:                                # named bundles of overrides (paper table rows)
        baseline: {prompt.variant: viewcoop, loss.terms: baseline}
        ours: {prompt.variant: viewcoop, loss.terms: full}

Axes are crossed with each other and with the points (no points: one empty point).
Each trial is a Tune function trainable that only drives: it rebuilds its
``ExperimentConfig`` and calls ``orchestrator.train.run_training`` with Tune's
``TuneReportCallback``, so the Train workers' per-epoch reports reach Tune.

On disk, everything of sweep ``NAME`` lives in ``<ray.storage_path>/NAME/``: Tune's
experiment state and trial folders (``trial_<point>``), ``sweep.json`` (the expanded
grid and resolved base config, checked on resume), ``parent_run.json`` (the MLflow
parent run), ``trainings/NAME-<point>/`` (each point's Ray Train run and checkpoints)
and ``summary/`` (the table and plots, also logged to the parent run).

Resuming is explicit: a sweep whose folder exists is only continued with
``resume=True`` (``viewcoop sweep ... --resume``), and only with the same grid and base
config. Finished trials are kept; errored and unfinished ones run again, and since a
point's run name is stable, its training continues from its last Train checkpoint and
its MLflow child run.

``grid.py`` (Ray-free), ``plan.py`` (everything before Ray: validation, data check,
the folder; Ray-free), ``resources.py``, ``trainable.py`` (Tune), ``parent_run.py``
(MLflow), ``report.py`` (tables, CSV, plots), ``run.py`` (the whole sweep).
"""
