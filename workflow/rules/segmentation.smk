# The segmentation network, trained on the final variant's pseudo labels.


rule train_seg:
    input:
        data=DATA,
        labels=f"results/pseudo_labels/{FINAL_VARIANT}",
    output:
        model="results/models/seg.pt",
        metrics="results/metrics/train/seg.json",
        live=directory("results/live/train_seg"),
    params:
        esol=ESOL,
        config=PARAMS,
        sections=sections("dataset", "synthetic", "runtime", "model", "train_seg"),
        checkpoints="results/checkpoints/train_seg",
    conda:
        "../envs/esol.yaml"
    log:
        "logs/train_seg.log",
    benchmark:
        "benchmarks/train_seg.tsv"
    threads: 2
    resources:
        gpu=1,
    shell:
        "{params.esol} --log {log} --gpus {resources.gpu} train_seg"
        " --params {params.config} --data {input.data} --labels {input.labels} --out-model {output.model}"
        " --metrics {output.metrics} --live-dir {output.live} --checkpoint-dir {params.checkpoints}"


rule eval_seg:
    input:
        data=DATA,
        model="results/models/seg.pt",
    output:
        metrics=metrics_file("results/metrics/segmentation.json"),
        predictions=directory("results/predictions/val"),
    params:
        esol=ESOL,
        config=PARAMS,
        sections=sections("runtime", "model", "train_seg", "eval_seg"),
    conda:
        "../envs/esol.yaml"
    log:
        "logs/eval_seg.log",
    benchmark:
        "benchmarks/eval_seg.tsv"
    threads: 2
    resources:
        gpu=1,
    shell:
        "{params.esol} --log {log} --gpus {resources.gpu} eval_seg"
        " --params {params.config} --data {input.data} --model {input.model} --metrics {output.metrics}"
        " --predictions {output.predictions}"
