"""The study's four models exactly as its Keras notebooks define them (channels-last, Keras initialisers)."""

import keras
from keras import layers


def lenet5() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(6, (5, 5), strides=1, padding="same", activation="tanh"),
            layers.MaxPooling2D((2, 2), strides=2, padding="valid"),
            layers.Conv2D(16, (5, 5), strides=1, padding="valid", activation="tanh"),
            layers.MaxPooling2D((2, 2), strides=2, padding="valid"),
            layers.Flatten(),
            layers.Dense(120, activation="tanh"),
            layers.Dense(84, activation="tanh"),
            layers.Dense(10, activation="softmax"),
        ]
    )


def brownlee_cnn() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, (3, 3), activation="relu", kernel_initializer="he_uniform"),
            layers.AveragePooling2D((2, 2)),
            layers.Flatten(),
            layers.Dense(100, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ]
    )


def custom_cnn(dropout: float = 0.4) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, (3, 3), activation="relu", kernel_initializer="he_uniform"),
            layers.BatchNormalization(),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu", kernel_initializer="he_uniform"),
            layers.BatchNormalization(),
            layers.MaxPooling2D((2, 2)),
            layers.Flatten(),
            layers.Dropout(dropout),
            layers.Dense(128, activation="relu", kernel_initializer="he_uniform"),
            layers.BatchNormalization(),
            layers.Dense(10, activation="softmax"),
        ]
    )


def seed_efficientnet() -> keras.Model:
    inputs = keras.Input((28, 28, 1))
    x = layers.Conv2D(32, (3, 3), strides=2, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("swish")(x)
    for filters, stride in ((64, 1), (128, 2), (256, 2), (256, 1), (512, 2)):
        x = layers.DepthwiseConv2D((3, 3), strides=stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("swish")(x)
        x = layers.Conv2D(filters, (1, 1), padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("swish")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(128, activation="swish")(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs)
