# From classifier to pseudo masks: CAMs, seed scores, CRF refinement, pseudo-label scores.


rule make_cam:
    input:
        data=DATA,
        model="results/models/{variant}.pt",
    output:
        cams=directory(sharded("results/cams/{variant}", CAM_SHARDS)),
    log:
        f"logs/make_cam_{{variant}}{shard_suffix(CAM_SHARDS)}.log",
    benchmark:
        f"benchmarks/make_cam_{{variant}}{shard_suffix(CAM_SHARDS)}.tsv"
    conda:
        "../envs/esol.yaml"
    threads: CAM_THREADS
    resources:
        gpu=1,
    params:
        esol=ESOL,
        config=PARAMS,
        sections=sections("dataset", "runtime", "model", "make_cam"),
        split=lambda wildcards: cam_split(wildcards.variant),
        shard=shard_options(CAM_SHARDS),
    shell:
        "{params.esol} --log {log} --gpus {resources.gpu} make_cam"
        " --params {params.config} --data {input.data} --model {input.model} --split {params.split}"
        " --out-dir {output.cams} --threads {threads} {params.shard}"


if CAM_SHARDS > 1:

    rule gather_cams:
        input:
            parts=expand(sharded("results/cams/{{variant}}", CAM_SHARDS), shard=range(CAM_SHARDS)),
        output:
            cams=directory("results/cams/{variant}"),
        log:
            "logs/gather_cams_{variant}.log",
        conda:
            "../envs/esol.yaml"
        threads: 1
        params:
            esol=ESOL,
            config=PARAMS,
        shell:
            "{params.esol} --log {log} gather_shards --params {params.config} --parts {input.parts}"
            " --out-dir {output.cams}"


rule eval_seeds:
    input:
        data=DATA,
        cams="results/cams/{variant}",
    output:
        metrics="results/metrics/seeds/{variant}.json",
        curve="results/plots/seeds_curve/{variant}.csv",
    log:
        "logs/eval_seeds_{variant}.log",
    benchmark:
        "benchmarks/eval_seeds_{variant}.tsv"
    conda:
        "../envs/esol.yaml"
    threads: 1
    params:
        esol=ESOL,
        config=PARAMS,
        sections=sections("eval_seeds"),
    shell:
        "{params.esol} --log {log} eval_seeds --params {params.config} --data {input.data} --cams {input.cams} --variant {wildcards.variant}"
        " --metrics {output.metrics} --curve {output.curve}"


rule refine_crf:
    input:
        data=DATA,
        cams="results/cams/{variant}",
    output:
        labels=directory(sharded("results/pseudo_labels/{variant}", CRF_SHARDS)),
    log:
        f"logs/refine_crf_{{variant}}{shard_suffix(CRF_SHARDS)}.log",
    benchmark:
        f"benchmarks/refine_crf_{{variant}}{shard_suffix(CRF_SHARDS)}.tsv"
    conda:
        "../envs/esol.yaml"
    threads: ALL_CORES
    params:
        esol=ESOL,
        config=PARAMS,
        sections=sections("refine_crf"),
        split=lambda wildcards: cam_split(wildcards.variant),
        shard=shard_options(CRF_SHARDS),
    shell:
        "{params.esol} --log {log} refine_crf --params {params.config} --data {input.data} --cams {input.cams} --split {params.split}"
        " --variant {wildcards.variant} --out-dir {output.labels} --threads {threads} {params.shard}"


if CRF_SHARDS > 1:

    rule gather_pseudo_labels:
        input:
            parts=expand(sharded("results/pseudo_labels/{{variant}}", CRF_SHARDS), shard=range(CRF_SHARDS)),
        output:
            labels=directory("results/pseudo_labels/{variant}"),
        log:
            "logs/gather_pseudo_labels_{variant}.log",
        conda:
            "../envs/esol.yaml"
        threads: 1
        params:
            esol=ESOL,
            config=PARAMS,
        shell:
            "{params.esol} --log {log} gather_shards --params {params.config} --parts {input.parts}"
            " --out-dir {output.labels}"


rule eval_pseudo_labels:
    input:
        data=DATA,
        labels="results/pseudo_labels/{variant}",
    output:
        metrics="results/metrics/pseudo_labels/{variant}.json",
    log:
        "logs/eval_pseudo_labels_{variant}.log",
    benchmark:
        "benchmarks/eval_pseudo_labels_{variant}.tsv"
    conda:
        "../envs/esol.yaml"
    threads: 1
    params:
        esol=ESOL,
        config=PARAMS,
    shell:
        "{params.esol} --log {log} eval_pseudo_labels --params {params.config} --data {input.data} --labels {input.labels}"
        " --variant {wildcards.variant} --metrics {output.metrics}"
