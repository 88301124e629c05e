"""Evaluation: synthetic long-context tasks (`tasks`), the probe model (`probe`), operator fidelity
(`fidelity`), benchmark workloads (`workloads`) and the `attnsieve eval` harness (`harness`, its
`--fidelity` mode in `model_fidelity`)."""
