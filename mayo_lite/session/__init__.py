"""The session room: one run's model, data, optimizer, epoch counter and checkpoints, and the actions on it."""

from mayo_lite.session.actions import ACTIONS
from mayo_lite.session.session import Session

__all__ = ["ACTIONS", "Session"]
