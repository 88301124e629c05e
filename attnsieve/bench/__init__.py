"""GPU benchmarks (kernels, prefill, decode, end to end): each command module has add_arguments
/ main; `common`, `baselines` and `kernels_precision` serve them."""
