rule download_data:
    output:
        sources="data/sources.json",
    log:
        "logs/download_data.log",
    # The one rule that may open a connection: `snakemake --cores 1 download_data` on a login node.
    localrule: True
    conda:
        "../envs/esol.yaml"
    threads: 1
    params:
        esol=ESOL,
        config=PARAMS,
        sections=sections("dataset"),
        downloads="data/downloads",
    shell:
        "{params.esol} --log {log} download_data --params {params.config} --out {output.sources}"
        " --downloads {params.downloads}"


rule prepare_data:
    input:
        folder_inputs,
        sources="data/sources.json",
    output:
        data=directory(DATA),
        metrics="results/metrics/data.json",
    log:
        "logs/prepare_data.log",
    benchmark:
        "benchmarks/prepare_data.tsv"
    conda:
        "../envs/esol.yaml"
    threads: ALL_CORES
    params:
        esol=ESOL,
        config=PARAMS,
        sections=sections("dataset", "synthetic", "folder"),
    shell:
        "{params.esol} --log {log} prepare_data --params {params.config} --sources {input.sources}"
        " --out-dir {output.data} --metrics {output.metrics} --threads {threads}"
