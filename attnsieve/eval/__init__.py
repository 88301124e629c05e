"""Evaluation: synthetic long-context tasks (`tasks`), the probe model (`probe`), operator fidelity
(`fidelity`), benchmark workloads (`workloads`) and the `attnsieve eval` harness (`harness`, its
options and method configs in `sweep_args`, its `--fidelity` mode in `model_fidelity`)."""
