"""Replays: activity traces, the simulator and its baselines, and the demo."""
