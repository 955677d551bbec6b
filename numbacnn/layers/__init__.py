"""The built-in layer table: registry name -> "module:Class". Nothing is imported from here."""

BUILTIN: dict[str, str] = {
    name: f"numbacnn.layers.{name}:{cls}"
    for name, cls in {
        "adaptive_avg_pool2d": "AdaptiveAvgPool2d",
        "adaptive_max_pool2d": "AdaptiveMaxPool2d",
        "add": "Add",
        "avg_pool1d": "AvgPool1d",
        "avg_pool2d": "AvgPool2d",
        "avg_pool3d": "AvgPool3d",
        "batch_norm1d": "BatchNorm1d",
        "batch_norm2d": "BatchNorm2d",
        "batch_norm3d": "BatchNorm3d",
        "concat": "Concat",
        "conv1d": "Conv1d",
        "conv2d": "Conv2d",
        "dropout": "Dropout",
        "elu": "ELU",
        "flatten": "Flatten",
        "gelu": "GELU",
        "global_avg_pool2d": "GlobalAvgPool2d",
        "global_max_pool2d": "GlobalMaxPool2d",
        "hardtanh": "Hardtanh",
        "leaky_relu": "LeakyReLU",
        "linear": "Linear",
        "log_softmax": "LogSoftmax",
        "lp_pool2d": "LPPool2d",
        "max_pool1d": "MaxPool1d",
        "max_pool2d": "MaxPool2d",
        "max_pool3d": "MaxPool3d",
        "relu": "ReLU",
        "relu6": "ReLU6",
        "sigmoid": "Sigmoid",
        "softmax": "Softmax",
        "tanh": "Tanh",
        "upsample": "Upsample",
    }.items()
}
