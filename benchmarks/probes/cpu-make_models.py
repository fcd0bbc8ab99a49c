# Random-weight FCN-8s checkpoints for the speed figures in benchmarks/RESULTS.md ("CPU speed"): python cpu-make_models.py resnet18|vgg16
import sys
from fcn_deploy.training.models import build_model, input_convention as ic
from fcn_deploy.training.checkpoint import save_checkpoint
from fcn_deploy.modelinfo import ModelInfo
from fcn_deploy.palette import CAMVID_CLASSES, CAMVID_PALETTE
import torch
bb = sys.argv[1]
torch.manual_seed(0)
o,s,m,d = ic(bb)
model = build_model('fcn8s', bb, 11)
# random non-zero score layers so outputs vary
for n,p in model.named_parameters():
    if 'score' in n and p.dim()==4: torch.nn.init.normal_(p, std=0.01)
save_checkpoint(f'{bb}-fcn8s.pt', model, ModelInfo(arch='fcn8s', backbone=bb, num_classes=11, class_names=CAMVID_CLASSES, palette=CAMVID_PALETTE, channel_order=o, scale=s, mean=m, std=d, ignore_index=11))
