"""Keras CNN-zoo training pipeline: data, models, training, tracking, evaluation, selection."""
