"""Feature Boosting and Suppression (Gao et al., ICLR 2019) on any Keras model: `add_gates` gates its convolutions,
`GateDensities` reports how many channels the gates keep while it trains."""

from mayo_lite.fbs.callback import GateDensities
from mayo_lite.fbs.gates import GateReport, add_gates

__all__ = ["GateDensities", "GateReport", "add_gates"]
