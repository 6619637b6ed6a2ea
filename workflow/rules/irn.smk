# IRN's refinement beside the CRF (Ahn et al. 2019): the CRF step's IR labels train the
# inter-pixel relation net; a random walk over its boundaries carries the CAMs to pseudo masks
# (results/pseudo_labels/<variant>_irn), scored like the CRF's. train_seg.refinement picks the
# masks the segmentation net trains on.


rule train_irn:
    input:
        data=DATA,
        labels="results/pseudo_labels/{variant}",
    output:
        model="results/models/irn_{variant}.pt",
        metrics="results/metrics/train/irn_{variant}.json",
        live=directory("results/live/train_irn_{variant}"),
    log:
        "logs/train_irn_{variant}.log",
    benchmark:
        "benchmarks/train_irn_{variant}.tsv"
    conda:
        "../envs/esol.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        esol=ESOL,
        config=PARAMS,
        sections=sections("dataset", "synthetic", "runtime", "model", "train_irn"),
        split=lambda wildcards: cam_split(wildcards.variant),
        checkpoints="results/checkpoints/train_irn_{variant}",
    shell:
        "{params.esol} --log {log} --gpus {resources.gpu} train_irn"
        " --params {params.config} --data {input.data} --labels {input.labels} --split {params.split}"
        " --out-model {output.model} --metrics {output.metrics} --live-dir {output.live}"
        " --checkpoint-dir {params.checkpoints}"


rule make_sem_seg:
    input:
        data=DATA,
        cams="results/cams/{variant}",
        model="results/models/irn_{variant}.pt",
    output:
        masks=directory("results/pseudo_labels/{variant}_irn"),
    log:
        "logs/make_sem_seg_{variant}.log",
    benchmark:
        "benchmarks/make_sem_seg_{variant}.tsv"
    conda:
        "../envs/esol.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        esol=ESOL,
        config=PARAMS,
        sections=sections("dataset", "runtime", "model", "train_irn", "make_sem_seg"),
        split=lambda wildcards: irn_mask_split(wildcards.variant),
    shell:
        "{params.esol} --log {log} --gpus {resources.gpu} make_sem_seg"
        " --params {params.config} --data {input.data} --cams {input.cams} --model {input.model}"
        " --split {params.split} --out-dir {output.masks}"


rule eval_irn_masks:
    input:
        data=DATA,
        labels="results/pseudo_labels/{variant}_irn",
    output:
        metrics="results/metrics/pseudo_labels/{variant}_irn.json",
    log:
        "logs/eval_pseudo_labels_{variant}_irn.log",
    benchmark:
        "benchmarks/eval_pseudo_labels_{variant}_irn.tsv"
    conda:
        "../envs/esol.yaml"
    threads: 1
    params:
        esol=ESOL,
        config=PARAMS,
    shell:
        "{params.esol} --log {log} eval_pseudo_labels --params {params.config} --data {input.data} --labels {input.labels}"
        " --variant {wildcards.variant}_irn --metrics {output.metrics}"


rule plot_refinement:
    input:
        data=DATA,
        cams=expand("results/cams/{variant}", variant=IRN_VARIANTS),
        ir_labels=expand("results/pseudo_labels/{variant}", variant=IRN_VARIANTS),
        irn_masks=expand("results/pseudo_labels/{variant}_irn", variant=IRN_VARIANTS),
    output:
        figures=report(
            directory("results/figures/refinement"),
            patterns=["{image}.png"],
            caption="../report/refinement.rst",
            category="3. Sample images",
            subcategory="Refinement: CRF and IRN",
            labels={"image": "{image}"},
        ),
    log:
        "logs/plot_refinement.log",
    benchmark:
        "benchmarks/plot_refinement.tsv"
    conda:
        "../envs/esol.yaml"
    threads: 1
    params:
        esol=ESOL,
        config=PARAMS,
        samples=6,
    shell:
        "{params.esol} --log {log} plot_refinement --params {params.config} --data {input.data} --cams {input.cams}"
        " --ir-labels {input.ir_labels} --irn-masks {input.irn_masks} --count {params.samples}"
        " --out-dir {output.figures}"
