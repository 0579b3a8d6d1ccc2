"""Data: sources, label/input corruption, frequency filters and input pipelines."""
from tfrandlabels.data import frequency
from tfrandlabels.data.corruption import channel_moments
from tfrandlabels.data.corruption import corrupt_inputs
from tfrandlabels.data.corruption import corrupt_labels
from tfrandlabels.data.corruption import realized_fraction
from tfrandlabels.data.pipeline import make_input_fn
from tfrandlabels.data.sources import example_ranges
from tfrandlabels.data.sources import load
from tfrandlabels.data.sources import num_classes
