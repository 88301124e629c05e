"""GPU benchmarks (kernels, prefill, end to end); each module has add_arguments / main."""
