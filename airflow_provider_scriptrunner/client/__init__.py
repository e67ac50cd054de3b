"""The script-runner HTTP API, with no Airflow task logic: endpoints, errors, settings, backends, models, paging."""
