# What `snakemake --report report.html` shows: the report's figures and tables (this rule) and
# the metrics files marked with report() in summary.smk and segmentation.smk. Captions live in
# workflow/report/.

LIVE_DIRS = [
    *(f"results/live/{run}" for run in variants.TRAINING_RUNS),
    *expand("results/live/train_seg_{variant}", variant=SEG_VARIANTS),
]


rule make_figures:
    input:
        data=DATA,
        cams=expand("results/cams/{variant}", variant=VARIANTS),
        pseudo_labels=expand("results/pseudo_labels/{variant}", variant=PSEUDO_LABEL_VARIANTS),
        seg_model="results/models/seg.pt",
        seeds=expand("results/metrics/seeds/{variant}.json", variant=VARIANTS),
        pseudo_label_metrics=expand("results/metrics/pseudo_labels/{variant}.json", variant=PSEUDO_LABEL_VARIANTS)
        + IRN_PSEUDO_LABEL_METRICS,
        segmentation="results/metrics/segmentation.json",
        ablation="results/metrics/ablation.csv",
        live=LIVE_DIRS,
    output:
        tables=report(
            "results/figures/metrics.html",
            caption="../report/tables.rst",
            category="1. Metrics",
            subcategory="Tables",
        ),
        per_class=report(
            "results/figures/per_class_iou.png",
            caption="../report/per_class.rst",
            category="1. Metrics",
            subcategory="Figures",
        ),
        threshold_curve=report(
            "results/figures/seed_threshold.png",
            caption="../report/threshold.rst",
            category="1. Metrics",
            subcategory="Figures",
        ),
        training_curves=report(
            "results/figures/training_curves.png",
            caption="../report/training.rst",
            category="2. Training",
        ),
        samples=report(
            directory("results/figures/samples"),
            patterns=["{image}.png"],
            caption="../report/samples.rst",
            category="3. Sample images",
            labels={"image": "{image}"},
        ),
    log:
        "logs/make_figures.log",
    benchmark:
        "benchmarks/make_figures.tsv"
    conda:
        "../envs/esol.yaml"
    threads: 1
    params:
        esol=ESOL,
        config=PARAMS,
        sections=sections("model", "train_seg"),
        samples=6,
    shell:
        "{params.esol} --log {log} make_figures --params {params.config} --data {input.data} --cams {input.cams}"
        " --pseudo-labels {input.pseudo_labels} --seg-model {input.seg_model} --seeds {input.seeds}"
        " --pseudo-label-metrics {input.pseudo_label_metrics} --segmentation {input.segmentation}"
        " --ablation {input.ablation} --live {input.live} --count {params.samples}"
        " --samples {output.samples} --per-class {output.per_class} --threshold-curve {output.threshold_curve}"
        " --training-curves {output.training_curves} --tables {output.tables}"
