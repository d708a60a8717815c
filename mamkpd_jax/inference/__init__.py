"""Inference: the Estimator (images in, keypoints out), its results type, person/animal
detectors, tracking over video, frame readers and drawing.

    from mamkpd_jax.inference import Estimator
    estimator = Estimator.from_pretrained("weights/mamkpd_tiny_openfield")
    prediction = estimator.predict("frame.png", boxes)     # -> Prediction
"""

from mamkpd_jax.inference.estimator import (FAST_COMPILE_CPU, REPO_ROOT, Estimator,
                                            as_boxes, bucket_size, load_config_json,
                                            load_estimator, load_trained_model,
                                            with_data_root, with_model_changes)
from mamkpd_jax.inference.results import UNTRACKED, Prediction
from mamkpd_jax.inference.video import load_image
