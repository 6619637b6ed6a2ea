# From classifier to pseudo masks: CAMs, seed scores, CRF refinement, pseudo-label scores.


rule make_cam:
    input:
        data=DATA,
        model="results/models/{variant}.pt",
    output:
        cams=directory("results/cams/{variant}"),
    params:
        esol=ESOL,
        config=PARAMS,
        sections=sections("dataset", "runtime", "model", "make_cam"),
        split=lambda wildcards: cam_split(wildcards.variant),
    conda:
        "../envs/esol.yaml"
    log:
        "logs/make_cam_{variant}.log",
    benchmark:
        "benchmarks/make_cam_{variant}.tsv"
    threads: 2
    resources:
        gpu=1,
    shell:
        "{params.esol} --log {log} --gpus {resources.gpu} make_cam"
        " --params {params.config} --data {input.data} --model {input.model} --split {params.split}"
        " --out-dir {output.cams}"


rule eval_seeds:
    input:
        data=DATA,
        cams="results/cams/{variant}",
    output:
        metrics="results/metrics/seeds/{variant}.json",
        curve="results/plots/seeds_curve/{variant}.csv",
    params:
        esol=ESOL,
        config=PARAMS,
        sections=sections("eval_seeds"),
    conda:
        "../envs/esol.yaml"
    log:
        "logs/eval_seeds_{variant}.log",
    benchmark:
        "benchmarks/eval_seeds_{variant}.tsv"
    threads: 1
    shell:
        "{params.esol} --log {log} eval_seeds --params {params.config} --data {input.data} --cams {input.cams} --variant {wildcards.variant}"
        " --metrics {output.metrics} --curve {output.curve}"


rule refine_crf:
    input:
        data=DATA,
        cams="results/cams/{variant}",
    output:
        labels=directory("results/pseudo_labels/{variant}"),
    params:
        esol=ESOL,
        config=PARAMS,
        sections=sections("refine_crf"),
        split=lambda wildcards: cam_split(wildcards.variant),
    conda:
        "../envs/esol.yaml"
    log:
        "logs/refine_crf_{variant}.log",
    benchmark:
        "benchmarks/refine_crf_{variant}.tsv"
    threads: 2
    shell:
        "{params.esol} --log {log} refine_crf --params {params.config} --data {input.data} --cams {input.cams} --split {params.split}"
        " --variant {wildcards.variant} --out-dir {output.labels} --threads {threads}"


rule eval_pseudo_labels:
    input:
        data=DATA,
        labels="results/pseudo_labels/{variant}",
    output:
        metrics="results/metrics/pseudo_labels/{variant}.json",
    params:
        esol=ESOL,
        config=PARAMS,
    conda:
        "../envs/esol.yaml"
    log:
        "logs/eval_pseudo_labels_{variant}.log",
    benchmark:
        "benchmarks/eval_pseudo_labels_{variant}.tsv"
    threads: 1
    shell:
        "{params.esol} --log {log} eval_pseudo_labels --params {params.config} --data {input.data} --labels {input.labels}"
        " --variant {wildcards.variant} --metrics {output.metrics}"
