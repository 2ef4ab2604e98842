"""Serving: the HTTP API and web page over Redis and Kafka."""
