"""tfrandlabels: a TensorFlow/Keras toolkit for studying what neural networks learn."""
