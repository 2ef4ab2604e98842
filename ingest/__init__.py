"""Data in: MovieLens-100K, the synthetic generator, the Kafka producer and catalog publisher."""
