"""Any COCO-format keypoint dataset; the bundled mouse open-field set as the example.

Keypoint names and the skeleton come from the json's category; give flip pairs (names or
indices) and OKS sigmas when you have them (without: no flip augmentation or flip test,
and sigma 0.05 for every keypoint, said once in the log). Half-body augmentation needs
upper/lower-body ids, which a custom layout does not have, so it is off.

    python main.py --config=configs/custom_coco.py --workdir=/tmp/custom_coco
    python main.py --config=configs/custom_coco.py --workdir=/tmp/custom_coco --mode=eval

The first trains and evaluates on the bundled example (data/samples/dlc-openfield, in
the repository; re-running it resumes from the workdir), the second evaluates the latest
checkpoint; metrics go to /tmp/custom_coco/eval/metrics_step<N>.json. Expected result:
see README. Your own data (flip pairs and sigmas must then be yours, or empty):

    python main.py --config=configs/custom_coco.py --workdir=/tmp/my_data \
        --config.data.root=/path/to/data --config.data.train_ann=train.json \
        --config.data.val_ann=val.json --config.data.train_images=images \
        --config.data.val_images=images --config.data.contiguous_split=0 \
        --config.model.num_keypoints=K --config.data.flip_pairs="()"

Fields: data.root, data.train_ann, data.val_ann (json paths relative to root),
data.train_images, data.val_images (image folders relative to root; empty when
file_name already holds the path), data.flip_pairs, data.sigmas, and
data.contiguous_split (> 0: hold out the last frames of train_ann instead of val_ann).
"""

from mamkpd_jax import config_lib


def get_config():
  config = config_lib.openfield("base")
  config.batch_size = 16
  return config
