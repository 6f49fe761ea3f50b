"""Forecast-ensemble system: grids, data, rollout, the Zarr store and verification."""

__version__ = "0.1.0"
