"""The launcher: starts GPU instances safely with the agent on board."""
