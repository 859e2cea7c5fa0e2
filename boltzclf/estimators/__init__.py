"""Estimators: arrays in, an estimate with its uncertainty out (never imports models or samplers)."""
