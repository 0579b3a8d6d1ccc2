"""Package metadata for tfrandlabels."""
import setuptools

setuptools.setup(
    name="tfrandlabels",
    version="0.1.0",
    description=("A TensorFlow/Keras toolkit for studying what neural networks learn: "
                 "random-label pretraining, frequency shortcuts and input-space geometry."),
    packages=setuptools.find_packages(include=["tfrandlabels", "tfrandlabels.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        "tensorflow-datasets>=4.9",
        "tf-keras-vis>=0.8.7",
        "tensorboard",  # tf.summary needs it; tensorflow no longer installs it.
        "absl-py>=1.0",
        "matplotlib>=3.5",
        "numpy>=1.23",
        "scipy>=1.7,<2",  # tf-keras-vis imports scipy.ndimage.interpolation (gone in 2.0).
        "importlib_resources",  # Needed by tensorflow-datasets, which does not declare it.
        "Pillow",
        "requests",  # TFDS downloads with it; its errors name a failed download.
        "typing_extensions",  # NotRequired on Python 3.10 (pipeline/results.py).
        # The `embedded` data set is built from the sample photographs shipped in this
        # release; pinning it keeps the data set byte-identical everywhere.
        "scikit-image==0.26.0",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-timeout", "pytest-xdist", "Pillow"],
        "cuda": ["tensorflow[and-cuda]>=2.16"],
    },
)
