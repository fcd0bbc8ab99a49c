"""Triton Python-backend model: encoded images (IMAGE, BYTES [N, 1]) -> the FCN's input tensor
and IMAGE_HW, with the model's own normalization (fcn_deploy.serve.pipeline.Stages, i.e. the
runtime's Segmenter stages). Written by ``fcn-serve triton --ensemble``; reads the model
description ``fcn_model.json`` beside this file. Needs ``pip install fcn-deploy`` in the
tritonserver container. Unverified on a real Triton server here (none runs on this project's
machines); the logic it calls is tested."""

import os

import triton_python_backend_utils as pb_utils

from fcn_deploy.errors import FcnError
from fcn_deploy.serve.pipeline import DESCRIPTION_FILE, IMAGE, IMAGE_HW, Stages


class TritonPythonModel:
    def initialize(self, args):
        self.stages = Stages.from_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), DESCRIPTION_FILE))

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                image = pb_utils.get_input_tensor_by_name(request, IMAGE)
                if image is None:
                    raise FcnError(f"the request has no {IMAGE} input")
                x, hw = self.stages.preprocess_bytes(image.as_numpy())
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor(self.stages.input_name, x), pb_utils.Tensor(IMAGE_HW, hw)]))
            except FcnError as e:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG)))
        return responses
