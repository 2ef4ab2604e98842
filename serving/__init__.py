"""Serving: the HTTP API and web page over Redis and Kafka.

* :mod:`serving.api` -- ``create_app(cfg)``: the FastAPI app (``python -m serving`` runs it with uvicorn);
* :mod:`serving.store` -- async reads of the Redis layout the job writes (one round trip per lookup);
* :mod:`serving.kafka_io` -- producing ``POST /events`` to the events topic, the Kafka health probe;
* :mod:`serving.metrics` -- Prometheus metrics of the API;
* ``serving/static/`` -- the live web page served at ``/``;
* :mod:`serving.tail` -- ``python -m serving.tail``: the example downstream consumer of the recommendations topic;
* :mod:`serving.bench_api` -- ``python -m serving.bench_api``: the API latency benchmark;
* :mod:`serving.testing` -- fake job output and topic helpers for the tests and the benchmark.
"""
