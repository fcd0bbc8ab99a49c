# Lead's launch of the CamVid recipe: fixed 2 threads (the process runs at nice -10 so other
# work on this shared machine yields to it), otherwise the named recipe unchanged.
import logging, sys
from fcn_deploy.training.recipes import recipe_config
from fcn_deploy.training.train import train
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
cfg = recipe_config("camvid-resnet18-fcn8s", data="/work/shared/data/camvid", out="runs/camvid_r18_fcn8s.pt",
                    time_budget_min=80.0, adaptive_threads=False, threads=2)
print(cfg)
train(cfg)
