"""Triton kernels: each file holds one public launcher and its autotune table."""
