"""The session room: one run's model, data, optimizer, epoch counter and checkpoints, and the actions on it."""

from mayo_lite.session.actions import ACTIONS, CHECKS
from mayo_lite.session.session import Session, prepare_devices

__all__ = ["ACTIONS", "CHECKS", "Session", "prepare_devices"]
