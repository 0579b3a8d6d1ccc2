"""Model zoo: `build_model(name, num_classes, input_shape, **kwargs)` over a registry of families.

Importing this package registers every family; see `available_models()`.
"""
from tfrandlabels.models import (mlp, ntk_mlp, resnet, simple_cnn, strided_cnn, vgg,
                                 wide_resnet)
from tfrandlabels.models.registry import (MODELS, LayerFactory, available_models, build_model,
                                          register, weight_layers)

del mlp, ntk_mlp, resnet, simple_cnn, strided_cnn, vgg, wide_resnet
