"""Benchmarks and evaluation (installed as ``fcn_deploy.benchmarks``): fcn-bench, fcn-eval, the demo."""
