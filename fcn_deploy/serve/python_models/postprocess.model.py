"""Triton Python-backend model: the FCN's output (logits/probs/labels) and IMAGE_HW -> LABELS
at each image's original size (argmax when the model outputs scores) and, when the config
declares it, COLORIZED in the model's palette, through fcn_deploy.serve.pipeline.Stages (the
runtime's Segmenter stages and fcn_deploy.palette). Written by ``fcn-serve triton --ensemble``;
reads ``fcn_model.json`` beside this file. Needs ``pip install fcn-deploy`` in the tritonserver
container. Unverified on a real Triton server here; the logic it calls is tested."""

import json
import os

import triton_python_backend_utils as pb_utils

from fcn_deploy.errors import FcnError
from fcn_deploy.serve.pipeline import COLORIZED, DESCRIPTION_FILE, IMAGE_HW, LABELS, Stages


class TritonPythonModel:
    def initialize(self, args):
        self.stages = Stages.from_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), DESCRIPTION_FILE))
        config = json.loads(args["model_config"])
        self.colorized = pb_utils.get_output_config_by_name(config, COLORIZED) is not None

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                scores = pb_utils.get_input_tensor_by_name(request, self.stages.output_name)
                sizes = pb_utils.get_input_tensor_by_name(request, IMAGE_HW)
                if scores is None or sizes is None:
                    raise FcnError(f"the request needs inputs {self.stages.output_name} and {IMAGE_HW}")
                out = self.stages.postprocess(scores.as_numpy(), sizes.as_numpy(), colorized=self.colorized)
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(name, out[name]) for name in (LABELS, COLORIZED) if name in out]))
            except FcnError as e:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG)))
        return responses
