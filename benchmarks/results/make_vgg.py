from fcn_deploy.training.models import build_model, input_convention as ic
from fcn_deploy.training.checkpoint import save_checkpoint
from fcn_deploy.modelinfo import ModelInfo
from fcn_deploy.palette import CAMVID_CLASSES, CAMVID_PALETTE
o, s, m, d = ic('vgg16')
save_checkpoint('vgg16-fcn8s.pt', build_model('fcn8s', 'vgg16', 11),
                ModelInfo(arch='fcn8s', backbone='vgg16', num_classes=11, class_names=CAMVID_CLASSES,
                          palette=CAMVID_PALETTE, channel_order=o, scale=s, mean=m, std=d, ignore_index=11))
