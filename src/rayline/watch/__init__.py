"""The closed loop: drift or new data -> retrain -> gate -> canary -> promote or roll back."""

from rayline.watch.loop import Hooks, Watcher, watch

__all__ = ["Hooks", "Watcher", "watch"]
