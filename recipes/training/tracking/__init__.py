"""Experiment trackers: a recipe's ``training.report_to``, from validation to the registry.

1. Validation: every tracker named must be installed, else a problem with the fix
   (:func:`record.tracker_problem`, run by the one validator).
2. Training (:mod:`.session`): reg opens the MLflow run itself before the Trainer is built,
   named ``<model>-<spec hash>`` and tagged with the model and the spec hash (reattached when
   an interrupted run resumes), so transformers' own MLflowCallback logs params and step
   metrics into it; TensorBoard writes under ``<workdir>/tensorboard``.
3. Packaging: the artifact's manifest records where the run went (``tracking``, a
   :class:`record.TrackingRecord`); the MLflow run gets the evaluation metrics and the
   artifact digest, and ends.
4. Registration (:func:`client.tag_registered`): the version's number, reference and status
   are tagged on the same run id, so an MLflow user finds the reg version from the run, and
   `reg show` prints the run's link from the manifest.

A tracking server that cannot be reached never costs a trained version: training goes on
without it, registration happens anyway, and a warning says what was not recorded.
"""
