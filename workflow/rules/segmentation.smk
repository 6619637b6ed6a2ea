# The segmentation network, one per variant of train_seg.variants, trained on that variant's
# pseudo labels (train_seg.refinement: the CRF's IR labels or IRN's masks); the final variant's net is also results/models/seg.pt (summarize copies its
# scores to results/metrics/segmentation.json).


rule train_seg:
    input:
        data=DATA,
        labels=seg_labels,
    output:
        model="results/models/seg_{variant}.pt",
        metrics="results/metrics/train/seg_{variant}.json",
        live=directory("results/live/train_seg_{variant}"),
    log:
        "logs/train_seg_{variant}.log",
    benchmark:
        "benchmarks/train_seg_{variant}.tsv"
    conda:
        "../envs/esol.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        esol=ESOL,
        config=PARAMS,
        sections=sections("dataset", "synthetic", "runtime", "model", "train_seg"),
        checkpoints="results/checkpoints/train_seg_{variant}",
    shell:
        "{params.esol} --log {log} --gpus {resources.gpu} train_seg"
        " --params {params.config} --data {input.data} --labels {input.labels} --out-model {output.model}"
        " --metrics {output.metrics} --live-dir {output.live} --checkpoint-dir {params.checkpoints}"


rule final_seg_model:
    input:
        f"results/models/seg_{FINAL_VARIANT}.pt",
    output:
        "results/models/seg.pt",
    log:
        "logs/final_seg_model.log",
    conda:
        "../envs/esol.yaml"
    threads: 1
    shell:
        "mkdir -p $(dirname {log}) && cp {input} {output} 2> {log}"


rule eval_seg:
    input:
        data=DATA,
        model="results/models/seg_{variant}.pt",
    output:
        metrics=metrics_file("results/metrics/segmentation/{variant}.json"),
        predictions=directory("results/predictions/val_{variant}"),
    log:
        "logs/eval_seg_{variant}.log",
    benchmark:
        "benchmarks/eval_seg_{variant}.tsv"
    conda:
        "../envs/esol.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        esol=ESOL,
        config=PARAMS,
        sections=sections("runtime", "model", "train_seg", "eval_seg"),
    shell:
        "{params.esol} --log {log} --gpus {resources.gpu} eval_seg"
        " --params {params.config} --data {input.data} --model {input.model} --variant {wildcards.variant}"
        " --metrics {output.metrics} --predictions {output.predictions} --threads {threads}"
