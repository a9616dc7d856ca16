# The project's Airflow image (`astro dev start` builds it) and, unchanged, the training image the
# KubernetesPodOperator runs (`python -m include.mlops train ...`) and the real-time scoring
# service's image (`python -m include.mlops serve ...`, see the label below).
#
# Astro Runtime 3.3 carries Airflow 3.3; the `-base` variant has no ONBUILD steps, so what goes
# into the image is spelled out here. Python 3.11 matches the lock (requirements.txt).
ARG RUNTIME_IMAGE=astrocrpublic.azurecr.io/runtime:3.3-2-python-3.11-base
FROM ${RUNTIME_IMAGE}

ENV AIRFLOW_HOME=/usr/local/airflow \
    PYTHONPATH=/usr/local/airflow \
    MLOPS_PROFILE=cluster \
    MLOPS_HOME=/tmp/mlops
WORKDIR /usr/local/airflow

# The complete lock, compiled to bytecode at install time: every task re-imports the heavy
# libraries, and compiling them on each import doubles task start-up.
COPY --chown=astro:0 requirements.txt ./requirements.txt
RUN pip install --no-cache-dir --compile -r requirements.txt \
 && python -c "import importlib.metadata as m, re; \
lock = re.search(r'^apache-airflow==(\S+)$', open('requirements.txt').read(), re.M).group(1); \
have = m.version('apache-airflow'); \
assert have == lock, f'image has Airflow {have}, lock says {lock}'"

# The project itself (see .dockerignore for what stays out: environments, runtime state).
COPY --chown=astro:0 . .

# The scoring service's container command (deploy/kubernetes/scoring-service.yaml runs it): it
# needs MLOPS_SERVING_TOKEN in the cluster profile, answers /predict, /health and /ready on 8000.
LABEL io.card-fraud-mlops.serving-command="python -m include.mlops serve --host 0.0.0.0 --port 8000"
EXPOSE 8000

# Non-root, as the training pod's security context requires.
USER astro
# Feast's DuckDB offline store reads the lake on S3 through DuckDB's httpfs extension: installed
# here, at build time, so that no task downloads it at run time.
RUN python -c "import duckdb; duckdb.connect().execute('INSTALL httpfs')"
