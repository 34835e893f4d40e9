"""The experiments layer: experiment configs, the wiring of one experiment (data set by name,
priors, model, training loop, test metrics, results and card), and the `compare` / `ablate` recipes
on one multi-seed runner.

| module | what |
|---|---|
| `config` | `ExperimentConfig` (YAML sections data / model / training), `--set` overrides |
| `experiment` | `prepare_experiment`, `build_model`, `train_model`, `run_experiment`, `launch_experiment` |
| `runner` | `run_seeds`: one experiment trained per seed |
| `compare` | plain backbone vs backbone + priors over seeds and split protocols |
| `ablation` | many prior configurations over seeds |
| `tables`, `plots` | mean +- std and the Markdown tables; the ablation's figures |
"""
