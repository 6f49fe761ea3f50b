"""Data sources: the ``Source`` interface and every reader (ERA5 layouts, lexicon, regridding, the planet).

``open_source`` opens a file or store in the system's layout or any ERA5 layout and serves it as a
``Source``. The planet (``forecast.data.planet``, which needs torch) is imported only where it is used.
"""

from forecast.data.era5 import open_dataset
from forecast.data.open import forecast_channels, open_source, system_dataset
from forecast.data.regrid import regrid_dataset
from forecast.data.source import DataError, Source, normalisation_stats

__all__ = ["DataError", "Source", "forecast_channels", "normalisation_stats", "open_dataset", "open_source",
           "regrid_dataset", "system_dataset"]
