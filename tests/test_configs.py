"""configs/*.py load by path and validate; impossible model settings name their field."""

import importlib.util
import pathlib

import pytest

from mamkpd_jax.models import VARIANTS, ModelConfig, model_config

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"


def load_config(name):
  spec = importlib.util.spec_from_file_location(name, CONFIG_DIR / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.mark.parametrize("name,variant", [
    ("coco_small", "small"), ("coco_base", "base"), ("coco_large", "large")])
def test_coco_configs(name, variant):
  config = load_config(name)
  model = ModelConfig.from_config(config.model)
  assert model.variant == variant
  assert (model.dims, model.depths) == (VARIANTS[variant]["dims"], VARIANTS[variant]["depths"])
  assert model.use_stem == (variant != "small")
  assert model.num_keypoints == 17
  assert (config.data.input_height, config.data.input_width) == (256, 192)


@pytest.mark.parametrize("name,num_keypoints", [("sample_coco", 17), ("custom_coco", 4)])
def test_sample_configs_validate(name, num_keypoints):
  config = load_config(name)
  assert ModelConfig.from_config(config.model).num_keypoints == num_keypoints
  assert (CONFIG_DIR.parent / config.data.root / config.data.train_ann).is_file()


def test_model_config_round_trips_every_field():
  config = model_config("large")
  assert ModelConfig.from_config(config).decoder_dims == (256, 128)
  assert set(config.keys()) == set(ModelConfig.__dataclass_fields__)


# (field, bad value, words the error must contain)
BAD_FIELDS = [
    ("scan_impl", "triton", "available implementations"),
    ("dims", (96, 192), "three stages"),
    ("depths", (2, 0, 6), "block"),
    ("d_state", 0, ">= 1"),
    ("ssm_ratio", 1.01, "positive integer"),
    ("decoder_dims", (256, 256, 256), "two positive widths"),
    ("dtype", "float16", "bfloat16"),
    ("drop_path_rate", 1.0, "[0, 1)"),
    ("d_conv", 4, "odd"),
    ("num_keypoints", 0, ">= 1"),
]


@pytest.mark.parametrize("field,value,words", BAD_FIELDS)
def test_impossible_field_is_named(field, value, words):
  config = dict(model_config("base"))
  config[field] = value
  with pytest.raises(ValueError, match=rf"config\.model\.{field}=") as error:
    ModelConfig.from_config(config)
  assert words in str(error.value)


def test_unknown_field_is_named():
  config = dict(model_config("base"), ssm_rank=4)
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['ssm_rank'\]"):
    ModelConfig.from_config(config)


def test_unknown_variant():
  with pytest.raises(ValueError, match="unknown MamKPD variant 'huge'"):
    model_config("huge")
