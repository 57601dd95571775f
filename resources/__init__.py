"""Shipped weights and samples."""
