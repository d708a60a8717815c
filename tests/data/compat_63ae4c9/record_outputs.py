"""Records the outputs of the code at commit 63ae4c9 for tests/test_compatibility.py.

Run with that commit's package installed (README.md beside this file):

    python record_outputs.py REPO_AT_63ae4c9 WORKDIR outputs.npz

For the old workdir and the committed weights/mamkpd_tiny_openfield: the Estimator's
heatmaps of two random crops (numpy seed 0) and its keypoints and keypoint scores of one
held-out frame in its labelled box.
"""

import sys

import numpy as np

from mamkpd_jax import inference

FRAME = "data/samples/dlc-openfield/labeled-data/m4s1/img0100.png"
BOX = [[61.5407, 384.2046, 128.5116, 44.2728]]        # its labelled box (xywh)


def record(estimator, frame):
  """{heatmaps (2, h, w, K), keypoints (1, K, 2), keypoint_scores (1, K)}."""
  height, width = estimator.input_size
  crops = np.random.default_rng(0).integers(0, 256, (2, height, width, 3), np.uint8)
  prediction = estimator.predict(frame, BOX)
  return {"heatmaps": estimator.crop_heatmaps(crops),
          "keypoints": np.asarray(prediction.keypoints),
          "keypoint_scores": np.asarray(prediction.keypoint_scores)}


def main(repo, workdir, output):
  estimators = {"workdir": inference.Estimator.from_workdir(workdir),
                "weights": inference.Estimator.from_pretrained(
                    f"{repo}/weights/mamkpd_tiny_openfield")}
  outputs = {f"{name}_{key}": value for name, estimator in estimators.items()
             for key, value in record(estimator, f"{repo}/{FRAME}").items()}
  np.savez_compressed(output, **outputs)


if __name__ == "__main__":
  main(*sys.argv[1:])
