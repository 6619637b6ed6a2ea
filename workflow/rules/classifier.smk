# The classifier's three stages. Each starts from the previous stage's model file.


rule train_cam:
    input:
        data=DATA,
    output:
        model="results/models/cam.pt",
        metrics="results/metrics/train/cam.json",
        live=directory("results/live/train_cam"),
    log:
        "logs/train_cam.log",
    benchmark:
        "benchmarks/train_cam.tsv"
    conda:
        "../envs/esol.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        esol=ESOL,
        config=PARAMS,
        sections=sections(*SECTIONS_CLASSIFIER, "train_cam"),
        checkpoints="results/checkpoints/train_cam",
    shell:
        "{params.esol} --log {log} --gpus {resources.gpu} train_cam"
        " --params {params.config} --data {input.data} --out-model {output.model}"
        " --metrics {output.metrics} --live-dir {output.live} --checkpoint-dir {params.checkpoints}"


rule train_expansion:
    input:
        data=DATA,
        init="results/models/cam.pt",
    output:
        model="results/models/expansion.pt",
        metrics="results/metrics/train/expansion.json",
        live=directory("results/live/train_expansion"),
    log:
        "logs/train_expansion.log",
    benchmark:
        "benchmarks/train_expansion.tsv"
    conda:
        "../envs/esol.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        esol=ESOL,
        config=PARAMS,
        sections=sections(*SECTIONS_CLASSIFIER, "train_expansion"),
        checkpoints="results/checkpoints/train_expansion",
    shell:
        "{params.esol} --log {log} --gpus {resources.gpu} train_expansion"
        " --params {params.config} --data {input.data} --init-model {input.init}"
        " --out-model {output.model} --metrics {output.metrics} --live-dir {output.live}"
        " --checkpoint-dir {params.checkpoints}"


rule train_shrinkage:
    input:
        data=DATA,
        init=shrinkage_init,
    output:
        model="results/models/{shrunk}.pt",
        metrics="results/metrics/train/{shrunk}.json",
        live=directory("results/live/train_shrinkage_{shrunk}"),
    log:
        "logs/train_shrinkage_{shrunk}.log",
    benchmark:
        "benchmarks/train_shrinkage_{shrunk}.tsv"
    conda:
        "../envs/esol.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        esol=ESOL,
        config=PARAMS,
        sections=sections(*SECTIONS_CLASSIFIER, "train_shrinkage"),
        checkpoints="results/checkpoints/train_shrinkage_{shrunk}",
    shell:
        "{params.esol} --log {log} --gpus {resources.gpu} train_shrinkage"
        " --params {params.config} --data {input.data} --init-model {input.init}"
        " --out-model {output.model} --metrics {output.metrics} --live-dir {output.live}"
        " --checkpoint-dir {params.checkpoints}"
