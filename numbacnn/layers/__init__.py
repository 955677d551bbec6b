"""The built-in layer table: registry name -> "module:Class". Nothing is imported from here."""

BUILTIN: dict[str, str] = {
    name: f"numbacnn.layers.{name}:{cls}"
    for name, cls in {
        "add": "Add",
        "avg_pool2d": "AvgPool2d",
        "batch_norm1d": "BatchNorm1d",
        "batch_norm2d": "BatchNorm2d",
        "batch_norm3d": "BatchNorm3d",
        "concat": "Concat",
        "conv2d": "Conv2d",
        "dropout": "Dropout",
        "elu": "ELU",
        "flatten": "Flatten",
        "gelu": "GELU",
        "global_avg_pool2d": "GlobalAvgPool2d",
        "hardtanh": "Hardtanh",
        "leaky_relu": "LeakyReLU",
        "linear": "Linear",
        "log_softmax": "LogSoftmax",
        "max_pool2d": "MaxPool2d",
        "relu": "ReLU",
        "relu6": "ReLU6",
        "sigmoid": "Sigmoid",
        "softmax": "Softmax",
        "tanh": "Tanh",
        "upsample": "Upsample",
    }.items()
}
