"""Adapters to AWS APIs."""
