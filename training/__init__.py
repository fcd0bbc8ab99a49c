"""Training stage (installed as ``fcn_deploy.training``): FCN models, datasets, the train loop,
the checkpoint format. Imports torch."""
