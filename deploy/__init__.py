"""Bring-up of Kafka, Redis and Flink (scripts) and deployment helpers."""
