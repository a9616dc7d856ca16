"""Card-fraud model lifecycle: the logic behind the Airflow DAGs, importable without Airflow.

Modules by concern: ``schema`` (the data contract), ``settings`` (environment), ``storage``
(local/S3 I/O), ``simulator`` (synthetic days), and one module per pipeline stage.
"""
