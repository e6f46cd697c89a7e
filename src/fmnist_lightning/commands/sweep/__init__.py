"""``sweep``: a grid or a search over CLI keys with Optuna, each trial one or more ordinary ``fit`` runs.

The study tuned its custom CNN with scikit-learn's GridSearchCV (configs/sweeps/study_grid.yaml); here a sweep file
(``spec``) names CLI keys and their values, the sampler and the objective: one fit's validation accuracy, or the
k-fold mean (each fold ``commands.folds.fit_fold``, as in ``cv``). Every worker runs the same command
(``command``) against one Optuna storage (``storage``): an SQLite file in the sweep's folder by default, a journal
file on shared disk or an RDB URL with ``--storage``. A grid's points are enqueued once, by the worker that creates
the study; trials send heartbeats, so a trial whose worker died is failed after the grace period and enqueued again
(``RetryHeartbeatStaleTrialCallback``); rerunning the command resumes the study. Each worker ends by writing the
table, plot and best config (``report``).
"""

from fmnist_lightning.commands.sweep.command import sweep_command

__all__ = ["sweep_command"]
