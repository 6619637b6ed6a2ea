"""One module per pipeline step, each exposing ``run(params, *, <paths>)`` and ``OUTPUTS``, the
names of the ``run`` arguments the step writes (the other paths it reads).

The order below is the pipeline's: the Snakefile and the ``esol`` command line both use it.
"""

STEPS = (
    "download_data",
    "prepare_data",
    "train_cam",
    "train_expansion",
    "train_shrinkage",
    "make_cam",
    "eval_seeds",
    "refine_crf",
    "gather_shards",
    "eval_pseudo_labels",
    "train_irn",
    "make_sem_seg",
    "train_seg",
    "eval_seg",
    "summarize",
    "plot_samplers",
    "plot_refinement",
    "make_figures",
)
