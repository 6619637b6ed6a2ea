rule prepare_data:
    output:
        data=directory(DATA),
        metrics="results/metrics/data.json",
    params:
        esol=ESOL,
        config=PARAMS,
        sections=sections("dataset", "synthetic"),
        downloads="data/downloads",
    conda:
        "../envs/esol.yaml"
    log:
        "logs/prepare_data.log",
    benchmark:
        "benchmarks/prepare_data.tsv"
    threads: 1
    shell:
        "{params.esol} --log {log} prepare_data --params {params.config} --out-dir {output.data} --metrics {output.metrics}"
        " --downloads {params.downloads}"
