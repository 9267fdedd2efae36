"""Results: per-seed records, aggregate statistics (IQM, bootstrap CIs), tables and plots.

Layout of a run directory::

    run.json                  provenance: command, profile, device, versions, commit, time
                              (provenance)
    records/ALGO__TASK.jsonl  one line per seed per evaluation, atomically rewritten (records)
    logs/ALGO__TASK/seedS.csv the same evaluations per seed with the update's metrics (records);
                              seedS/ its TensorBoard event files with --tensorboard (tensorboard)
    cells/ALGO__TASK.json     what the cell ran, where and when (offrl_jax.training.cells)
    summary.md, summary.csv   normalized scores per algorithm and task (summary, relative)
    probability_of_improvement.md   every pair of algorithms (summary)
    comparison.md             each algorithm beside BC, the dataset's mean and its paper's score
                              (compare)
    plots/curves_TASK.png     learning curves, plots/scores.png the bar chart (plots)

A hyperparameter sweep (records with ``"sweep": {leaf: value}``) writes
``records/ALGO__TASK__sweep-LEAF.jsonl``; each sweep point is an algorithm of its own in the
tables and plots, labelled ``ALGO[LEAF=VALUE]`` (e.g. ``mopo[penalty_coef=2.5]``), the CSV gets a
column per swept leaf, and ``plots/sweep_ALGO_LEAF.png`` draws the final IQM against the value.
Per-seed scores for the tables and plots: :mod:`~offrl_jax.results.scores`.
"""
