rule summarize:
    input:
        seeds=expand("results/metrics/seeds/{variant}.json", variant=VARIANTS),
        pseudo_labels=expand("results/metrics/pseudo_labels/{variant}.json", variant=PSEUDO_LABEL_VARIANTS)
        + IRN_PSEUDO_LABEL_METRICS,
        segmentation=expand("results/metrics/segmentation/{variant}.json", variant=SEG_VARIANTS),
    output:
        ablation=metrics_file("results/metrics/ablation.csv"),
        seeds=metrics_file("results/metrics/seeds.json"),
        pseudo_labels=metrics_file("results/metrics/pseudo_labels.json"),
        segmentation=metrics_file("results/metrics/segmentation.json"),
    log:
        "logs/summarize.log",
    benchmark:
        "benchmarks/summarize.tsv"
    conda:
        "../envs/esol.yaml"
    threads: 1
    params:
        esol=ESOL,
        config=PARAMS,
    shell:
        "{params.esol} --log {log} summarize --params {params.config} --seeds {input.seeds} --pseudo-labels {input.pseudo_labels}"
        " --segmentation {input.segmentation} --ablation {output.ablation} --final-seeds {output.seeds}"
        " --final-pseudo-labels {output.pseudo_labels} --final-segmentation {output.segmentation}"


rule plot_samplers:
    input:
        data=DATA,
        model=f"results/models/{FINAL_VARIANT}.pt",
    output:
        figures=report(
            directory("results/figures/samplers"),
            patterns=["{image}.png"],
            caption="../report/samplers.rst",
            category="4. Samplers",
            labels={"image": "{image}"},
        ),
    log:
        "logs/plot_samplers.log",
    benchmark:
        "benchmarks/plot_samplers.tsv"
    conda:
        "../envs/esol.yaml"
    threads: 1
    params:
        esol=ESOL,
        config=PARAMS,
        sections=sections("model"),
    shell:
        "{params.esol} --log {log} plot_samplers --params {params.config} --data {input.data} --model {input.model}"
        " --out-dir {output.figures}"
