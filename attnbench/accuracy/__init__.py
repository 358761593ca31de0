"""What a mechanism can learn: the fixed backbone, the offline tasks, training, and the run verdict.

    accuracy.backbone   patch embedding -> pre-norm blocks of one mechanism -> mean pool -> linear
    accuracy.tasks      seeded, offline classification tasks (pairmatch, digits, pathfinder presets)
    accuracy.training   the one training loop and evaluation every mechanism gets
    accuracy.verdict    pattern-derived sanity expectations and the run's validity

The ``accuracy`` and ``receptive_field`` metrics (``attnbench.metrics``) build on this package; the
report and the run summary read its verdict. Nothing here imports the report or the summary.
"""
