"""Small reusable functions the Flink operators call: parsing, scoring, serialization."""
