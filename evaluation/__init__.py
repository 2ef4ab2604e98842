"""Offline evaluation of the recommenders on MovieLens-100K (``python -m evaluation --help``)."""
